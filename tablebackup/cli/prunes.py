"""`prune`."""

from __future__ import annotations

import click

from tablebackup.cli.common import CommandFailed, IsoInstant, current_user, json_option, not_blank, open_storage
from tablebackup.cli.output import emit

_count = click.IntRange(min=0)


def _prune_text(data: dict) -> str:
    kept = set(data["keep"])
    lines = [
        f"{'KEEP  ' if backup_id in kept else 'DELETE'} {backup_id}  {', '.join(reasons)}"
        for backup_id, reasons in data["reasons"].items()
    ]
    verb = "would delete" if data["dry_run"] else "deleted"
    done = len(data["delete"]) if data["dry_run"] else len(data["deleted"])
    lines.append(f"as of {data['now']}: kept {len(data['keep'])}, {verb} {done}")
    lines += [f"FAILED {f['table']}: {f['error']}" for f in data["failed"]]
    return "\n".join(lines)


@click.command()
@click.option(
    "--table",
    "-t",
    "table",
    multiple=True,
    callback=not_blank("a table name"),
    help="Table to prune; repeat for more (default: every table).",
)
@click.option("--keep-daily", type=_count, help="Newest backup of each of the last N days with backups.")
@click.option("--keep-weekly", type=_count, help="Newest backup of each of the last N ISO weeks with backups.")
@click.option("--keep-monthly", type=_count, help="Newest backup of each of the last N months with backups.")
@click.option(
    "--keep-safety-days",
    type=_count,
    help="Keep each safety backup (taken before a restore or import) N days; they fill no daily/weekly/monthly slot.",
)
@click.option("--now", type=IsoInstant(), help="Plan as of this instant; backups taken after it are kept.")
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; delete nothing.")
@json_option
def prune(table, keep_daily, keep_weekly, keep_monthly, keep_safety_days, now, dry_run, as_json) -> None:
    """Delete backups the retention policy no longer keeps (defaults: RETENTION_DAILY/WEEKLY/MONTHLY,
    SAFETY_BACKUP_KEEP_DAYS)."""
    from tablebackup.backup import retention
    from tablebackup.core.names import validate_table_name

    for name in table:
        validate_table_name(name)  # before the settings are even read
    storage = open_storage()
    given = {
        "keep_daily": keep_daily,
        "keep_weekly": keep_weekly,
        "keep_monthly": keep_monthly,
        "keep_safety_days": keep_safety_days,
    }
    counts = retention.policy_from_settings(storage.settings) | {k: v for k, v in given.items() if v is not None}
    result = retention.prune(storage, list(table) or None, **counts, now=now, dry_run=dry_run, actor=current_user())
    emit(result, as_json, _prune_text)
    if result["failed"]:
        raise CommandFailed("; ".join(f"{f['table']}: {f['error']}" for f in result["failed"]))
