"""`backup` and `list-backups`."""

from __future__ import annotations

import click

from cli.common import CommandFailed, human_size, json_option, open_storage
from cli.output import emit, progress


def _backup_text(data: dict) -> str:
    lines = [
        f"backed up {b['table']}: {b['backup']} ({b['kind']})  {b['entities']:,} entities, {human_size(b['bytes'])}, "
        f"sha256 {b['sha256'][:12]}…"
        for b in data["backups"]
    ]
    lines += [f"FAILED {f['table']}: {f['error']}" for f in data["failed"]]
    return "\n".join(lines) or "nothing to back up"


@click.command()
@click.option("--table", "-t", "table", multiple=True, help="Table to back up; repeat for more.")
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
    from backup.archiver import backup_tables, tables_to_back_up

    if table and every_table:
        raise click.UsageError("give --table or --all, not both")
    storage = open_storage()
    with progress() as report:
        tables = tables_to_back_up(storage, list(table), every_table=every_table)
        run = backup_tables(storage, tables, incremental=incremental, parallel=parallel, on_progress=report)
    emit(run.as_json(), as_json, _backup_text)
    if not run.ok:
        raise CommandFailed(run.summary())


def _list_text(data: dict) -> str:
    if not data["backups"]:
        return f"no complete backups of {data['table']}"
    rows = [f"{'BACKUP':<40} {'TAKEN AT (UTC)':<28} {'KIND':<12} {'ENTITIES':>10} {'SIZE':>10}  PARENT"]
    rows += [
        f"{b['backup']:<40} REFUSED: {b['refused']}"
        if "refused" in b
        else f"{b['backup']:<40} {b['taken_at']:<28} {b['kind']:<12} {b['entities']:>10,} "
        f"{human_size(b['bytes']):>10}  {b['parent'] or ''}"
        for b in data["backups"]
    ]
    return "\n".join(rows)


@click.command("list-backups")
@click.option("--table", "-t", help="Table (default: TABLE_NAME).")
@json_option
def list_backups(table: str | None, as_json: bool) -> None:
    """List a table's complete backups, newest first."""
    from tablebackup import catalog

    storage = open_storage()
    table = table or storage.settings.table_name
    emit({"table": table, "backups": catalog.backup_summaries(storage.backups, table)}, as_json, _list_text)
