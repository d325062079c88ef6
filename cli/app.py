"""The ops CLI. Each command parses its options, calls one domain function and prints the result."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import click

from cli.output import emit, fail, progress
from tablebackup.errors import BackupError


@click.group(no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", "-v", is_flag=True, help="Log what happens (table, backup, counts) on stderr.")
def app(verbose: bool) -> None:
    """Back up, list, restore and verify Azure Table Storage backups.

    Settings come from the environment (see the README): AZURE_STORAGE_CONNECTION_STRING,
    BACKUP_BLOB_CONNECTION_STRING, TABLE_NAME, BACKUP_CONTAINER, ...
    """
    # Failures are reported once, as the command's last line; logs are opt-in.
    logging.basicConfig(
        level=logging.INFO if verbose else logging.CRITICAL,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("azure").setLevel(logging.WARNING)


json_option = click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON document on stdout.")


class CommandFailed(Exception):
    """The command ran but its outcome is a failure (exit 1); its output was already printed."""


def _storage():
    from tablebackup.clients import Storage

    return Storage.from_settings()


def _human_size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


def _backup_text(data: dict) -> str:
    lines = [
        f"backed up {b['table']}: {b['backup']}  {b['entities']:,} entities, {_human_size(b['bytes'])}, "
        f"sha256 {b['sha256'][:12]}…"
        for b in data["backups"]
    ]
    lines += [f"FAILED {f['table']}: {f['error']}" for f in data["failed"]]
    return "\n".join(lines) or "nothing to back up"


@app.command()
@click.option("--table", "-t", "table", multiple=True, help="Table to back up; repeat for more.")
@click.option("--all", "every_table", is_flag=True, help="Back up every table in the account.")
@json_option
def backup(table: tuple[str, ...], every_table: bool, as_json: bool) -> None:
    """Back up tables now: the named ones, --all, or the configured BACKUP_TABLES."""
    from backup.archiver import backup_tables, tables_to_back_up

    if table and every_table:
        raise click.UsageError("give --table or --all, not both")
    storage = _storage()
    with progress() as report:
        tables = tables_to_back_up(storage, list(table), every_table=every_table)
        run = backup_tables(storage, tables, on_progress=report)
    emit(run.as_json(), as_json, _backup_text)
    if not run.ok:
        raise CommandFailed(run.summary())


def _list_text(data: dict) -> str:
    if not data["backups"]:
        return f"no complete backups of {data['table']}"
    rows = [f"{'BACKUP':<40} {'TAKEN AT (UTC)':<28} {'ENTITIES':>10} {'SIZE':>10}"]
    rows += [
        f"{b['backup']:<40} {b['taken_at']:<28} {b['entities']:>10,} {_human_size(b['bytes']):>10}"
        for b in data["backups"]
    ]
    return "\n".join(rows)


@app.command("list-backups")
@click.option("--table", "-t", help="Table (default: TABLE_NAME).")
@json_option
def list_backups(table: str | None, as_json: bool) -> None:
    """List a table's complete backups, newest first."""
    from tablebackup import catalog

    storage = _storage()
    table = table or storage.settings.table_name
    manifests = catalog.list_backups(storage.backups, table)
    emit({"table": table, "backups": [m.summary() for m in manifests]}, as_json, _list_text)


class IsoInstant(click.ParamType):
    name = "ISO-8601"

    def convert(self, value, param, ctx):
        if isinstance(value, datetime):
            return value
        try:
            instant = datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not an ISO-8601 instant such as 2026-11-25T02:00:00Z", param, ctx)
        return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


def _restore_text(data: dict) -> str:
    verb = "would restore" if data["dry_run"] else "restored"
    text = (
        f"{verb} {data['restored']:,} entities from {data['backup']} into {data['target']} (mode {data['mode']}); "
        f"{'would delete' if data['dry_run'] else 'deleted'} {data['deleted']:,}, skipped {data['skipped']:,} "
        f"in {data['seconds']:.1f} s"
    )
    if data["safety_backup"]:
        text += f"\nsafety backup of {data['target']} taken first: {data['safety_backup']}"
    return text


@app.command()
@click.option("--table", "-t", required=True, help="The table whose backup to restore.")
@click.option("--backup", "-b", help="A backup id, or 'latest'.")
@click.option("--as-of", "as_of", type=IsoInstant(), help="Use the newest backup taken at or before this instant.")
@click.option("--target", help="Restore into this table instead (created if missing).")
@click.option("--filter", "query_filter", help="OData filter: restore only the entities it selects.")
@click.option(
    "--mode",
    type=click.Choice(["replace", "merge", "missing", "mirror"]),
    default="replace",
    show_default=True,
    help="replace: InsertOrReplace; merge: InsertOrMerge; missing: only entities the target lacks; "
    "mirror: also delete what the backup lacks (after a safety backup).",
)
@click.option("--dry-run", is_flag=True, help="Report what would be written and deleted; write nothing.")
@click.option("--force", is_flag=True, help="Restore even if the data blob does not match its manifest's checksum.")
@json_option
def restore(table, backup, as_of, target, query_filter, mode, dry_run, force, as_json) -> None:
    """Restore a table, a partition or one entity from a backup."""
    from restore.restorer import RestoreRequest, restore

    if (backup is None) == (as_of is None):
        raise click.UsageError("give --backup ID, --backup latest, or --as-of ISO-8601")
    request = RestoreRequest(
        table=table,
        backup=backup,
        as_of=as_of,
        target=target,
        filter=query_filter,
        mode=mode,
        dry_run=dry_run,
        force=force,
    )
    with progress() as report:
        result = restore(_storage(), request, on_progress=lambda count: report(f"restore {target or table}", count))
    emit(result.as_json(), as_json, _restore_text)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code: 0 success, 1 failure, 2 bad usage."""
    try:
        app.main(args=argv, prog_name="python -m cli", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as error:
        sys.stderr.write(error.ctx.get_help() + "\n")
        return 2
    except click.UsageError as error:
        fail(error.format_message().replace("\n", " "))
        return 2
    except (click.exceptions.Abort, KeyboardInterrupt):
        fail("interrupted")
        return 130
    except CommandFailed as error:
        fail(str(error))
        return 1
    except BackupError as error:
        fail(str(error))
        return 1
    except click.exceptions.Exit as done:
        return done.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
