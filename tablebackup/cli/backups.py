"""`backup` and `list-backups`."""

from __future__ import annotations

from datetime import datetime

import click

from tablebackup.cli.common import CommandFailed, current_user, human_size, json_option, not_blank, open_storage
from tablebackup.cli.output import emit, progress


def _backup_text(data: dict) -> str:
    lines = [
        f"backed up {b['table']}: {b['backup']} ({b['kind']})  {b['entities']:,} entities, {human_size(b['bytes'])}, "
        f"sha256 {b['sha256'][:12]}…"
        for b in data["backups"]
    ]
    lines += [f"FAILED {f['table']}: {f['error']}" for f in data["failed"]]
    return "\n".join(lines) or "nothing to back up"


@click.command()
@click.option(
    "--table",
    "-t",
    "table",
    multiple=True,
    callback=not_blank("a table name"),
    help="Table to back up; repeat for more.",
)
@click.option("--all", "every_table", is_flag=True, help="Back up every table in the account.")
@click.option(
    "--incremental",
    is_flag=True,
    help="Store only what changed (and the keys deleted) since the table's newest backup; full if it has none.",
)
@click.option(
    "--parallel",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Work items (tables, or ranges of a large table) run at once, as the timer's workers would.",
)
@json_option
def backup(table: tuple[str, ...], every_table: bool, incremental: bool, parallel: int, as_json: bool) -> None:
    """Back up tables now: the named ones, --all, or the configured BACKUP_TABLES."""
    from tablebackup.backup.archiver import backup_tables, tables_to_back_up
    from tablebackup.repository.backupformat import BackupReason

    if table and every_table:
        raise click.UsageError("give --table or --all, not both")
    storage = open_storage()
    reason = BackupReason.on_demand(via="cli", actor=current_user())
    with progress() as report:
        tables = tables_to_back_up(storage, list(table), every_table=every_table)
        run = backup_tables(
            storage, tables, incremental=incremental, parallel=parallel, on_progress=report, reason=reason
        )
    emit(run.as_json(), as_json, _backup_text)
    if not run.ok:
        raise CommandFailed(run.summary())


def _verified(summary: dict) -> str:
    verification = summary.get("verification")
    if not verification:
        return "-"
    return "passed" if verification["ok"] else "FAILED"


def _list_row(b: dict) -> list[str]:
    if "refused" in b:
        return [f"  {b['backup']:<40} REFUSED: {b['refused']}"]
    reason = (b.get("reason") or {}).get("kind", "-")
    mark = "*" if b.get("latest") else " "
    row = (
        f"{mark} {b['backup']:<40} {b['taken_at']:<28} {b['kind']:<12} {reason:<11} {_verified(b):<8} "
        f"{'?' if b['entities'] is None else format(b['entities'], ','):>10} {human_size(b['bytes']):>10}"
        f"  {b['parent'] or ''}"
    )
    if b.get("safety"):  # which restore or import it was taken before, and how to use it
        return [row, f"    {b['reason']['text']}; restored only by its id"]
    return [row]


def _list_text(data: dict) -> str:
    if not data["backups"]:
        return f"no complete backups of {data['table']}"
    head = (
        f"{'BACKUP':<40} {'TAKEN AT (UTC)':<28} {'KIND':<12} {'WHY':<11} {'VERIFIED':<8} {'ENTITIES':>10} {'SIZE':>10}"
    )
    rows = [f"  {head}  PARENT"]
    for b in data["backups"]:
        rows += _list_row(b)
    latest = data.get("latest") or {}
    if latest.get("backup"):
        rows.append(f"* latest: {latest['why']}")
    elif latest:
        rows.append(f"latest: none: {latest['why']}")
    return "\n".join(rows)


def _taken_at(summary: dict) -> datetime:
    """When a listed backup was taken: its summary's time, or a refused one's id stamp."""
    if "taken_at" in summary:
        return datetime.fromisoformat(summary["taken_at"])
    from tablebackup.core.names import BACKUP_ID_RE

    return datetime.strptime(BACKUP_ID_RE.match(summary["backup"])["stamp"], "%Y%m%dT%H%M%S.%f%z")


@click.command("list-backups")
@click.option("--table", "-t", callback=not_blank("a table name"), help="Table (default: TABLE_NAME).")
@json_option
def list_backups(table: str | None, as_json: bool) -> None:
    """List a table's complete backups, newest first, daily JSON exports (<table>-<time>.json, kind
    legacy) included: why each was taken (scheduled, on demand, or the safety backup of a restore or import), its last
    verification, and which one `latest` means (*)."""
    from tablebackup.backup.listing import describe_backups
    from tablebackup.core.errors import NotFound
    from tablebackup.repository.legacybackups import legacy_backups
    from tablebackup.storage.tables import table_exists

    storage = open_storage()
    table = table or storage.settings.table_name  # only when --table is left out: a blank one was refused
    listing = describe_backups(storage, table)
    listing["backups"] += [old.summary() for old in legacy_backups(storage.backups, table)]
    if not listing["backups"] and not table_exists(storage, table):
        # Most likely a misspelt name: "no complete backups" would read as a table at risk.
        raise NotFound(f"table {table!r} neither exists nor has complete backups: check its name")
    listing["backups"].sort(key=_taken_at, reverse=True)
    emit(listing, as_json, _list_text)
