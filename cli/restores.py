"""`restore`."""

from __future__ import annotations

import click

from cli.common import IsoInstant, json_option, open_storage
from cli.output import emit, progress


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


@click.command()
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
        result = restore(open_storage(), request, on_progress=lambda count: report(f"restore {target or table}", count))
    emit(result.as_json(), as_json, _restore_text)
