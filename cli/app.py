"""The ops CLI. Each command parses its options, calls one domain function and prints the result."""

from __future__ import annotations

import logging
import sys

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
