"""`restore` and `undelete`."""

from __future__ import annotations

import click

from tablebackup.cli.common import (
    IsoInstant,
    allow_app_table_option,
    current_user,
    json_option,
    not_blank,
    open_storage,
    parse_types_option,
    table_option,
    target_option,
    typed_lines,
    typing_options,
)
from tablebackup.cli.output import emit, progress


def _check_target_account(ctx, param, value):
    # Refused as bad usage before anything is opened: an unset or blank setting, a malformed endpoint.
    from tablebackup.core.accounts import parse_target_account
    from tablebackup.core.errors import InvalidInput

    if value is not None:
        try:
            parse_target_account(value)
        except InvalidInput as error:
            raise click.BadParameter(str(error), ctx, param) from None
    return value


def target_account_option(what: str):
    return click.option(
        "--target-account",
        callback=_check_target_account,
        help=f"{what} into another storage account: the name of a setting (environment variable) holding its "
        "connection string (the value is never printed), or its table endpoint "
        "https://<account>.table.core.windows.net, reached with DefaultAzureCredential. The audit entries "
        "and the app's records stay in the data account's.",
    )


def _restore_text(data: dict) -> str:
    changes = data.get("changes")
    if changes is not None:  # a dry run that compared: what would change, not what would be written
        text = (
            f"dry run: restoring {data['backup']} into {data['target']} (mode {data['mode']}) would create "
            f"{changes['created']:,}, update {changes['updated']:,} and delete {changes['deleted']:,} entities; "
            f"{changes['unchanged']:,} unchanged (compared in {data['seconds']:.1f} s)"
        )
    else:
        verb = "would restore" if data["dry_run"] else "restored"
        text = (
            f"{verb} {data['restored']:,} entities from {data['backup']} into {data['target']} "
            f"(mode {data['mode']}); {'would delete' if data['dry_run'] else 'deleted'} {data['deleted']:,}, "
            f"skipped {data['skipped']:,} in {data['seconds']:.1f} s"
        )
    if data.get("chosen"):
        text += f"\nbackup chosen: {data['chosen']}"
    if data.get("target_account"):
        text += f"\ninto the target account {data['target_account']}"
    if data["safety_backup"]:
        text += f"\nsafety backup of {data['target']} taken first: {data['safety_backup']}"
    if data.get("undo"):
        text += f"\nto undo this restore: {data['undo']}"
    text += "".join(f"\n{line}" for line in typed_lines(data))
    if "replayed" in data:
        text += (
            f"\n{'would replay' if data['dry_run'] else 'replayed'} {data['replayed']:,} audited changes "
            f"from {data['replay_from']} up to {data['as_of']}; faithful until {data['faithful_until']}"
        )
        text += "".join(
            f"\ngap at {gap['timestamp']}{' ' + gap['entityKey'] if gap['entityKey'] else ''}: {gap['reason']}"
            + (" (a later change overwrote it)" if gap["superseded"] else "")
            for gap in data["gaps"]
        )
        if data["gaps_total"] > len(data["gaps"]):
            text += f"\n... {data['gaps_total'] - len(data['gaps']):,} more gaps (--json lists the first ones)"
    return text


@click.command()
@table_option("The table whose backup to restore.")
@click.option(
    "--backup",
    "-b",
    callback=not_blank("a backup id or latest"),
    help="A backup id, 'latest' (the table's newest known state, never a safety backup), or the name of one of "
    "daily JSON exports (<table>-<time>.json).",
)
@click.option(
    "--as-of",
    "as_of",
    type=IsoInstant(),
    help="Use the newest backup taken at or before this instant (daily JSON exports, <table>-<time>.json, included).",
)
@target_option("Restore into this table instead (created if missing).")
@target_account_option("Restore")
@click.option(
    "--filter",
    "query_filter",
    callback=not_blank("an OData filter"),
    help="OData filter: restore only the entities it selects.",
)
@click.option(
    "--mode",
    type=click.Choice(["replace", "merge", "missing", "mirror"]),
    default="replace",
    show_default=True,
    help="replace: InsertOrReplace; merge: InsertOrMerge; missing: only entities the target lacks; "
    "mirror: also delete what the backup lacks. Into an existing table, replace, merge and mirror first "
    "take a safety backup of it, and print the command that undoes the restore.",
)
@click.option("--dry-run", is_flag=True, help="Report what would be written and deleted; write nothing.")
@click.option("--force", is_flag=True, help="Restore even if the data blob does not match its manifest's checksum.")
@click.option(
    "--replay-audit",
    is_flag=True,
    help="Point in time: restore the newest backup finished by --as-of, then replay the audit trail's "
    "changes from the backup's start up to --as-of (mode replace or mirror).",
)
@click.option(
    "--parallel",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Range streams at once: the backup is cut into PartitionKey ranges (at most RESTORE_PART_ENTITIES "
    "entities each, at least one per stream) and N of them are written side by side.",
)
@allow_app_table_option
@typing_options
@json_option
def restore(
    table,
    backup,
    as_of,
    target,
    target_account,
    query_filter,
    mode,
    dry_run,
    force,
    replay_audit,
    parallel,
    allow_app_table,
    types_text,
    infer_types,
    as_json,
) -> None:
    """Restore a table, a partition or one entity from a backup, or to an instant (--replay-audit)."""
    from tablebackup.restore.pointintime import REPLAY_MODES, restore_to_instant
    from tablebackup.restore.restorer import RestoreRequest, restore

    if replay_audit and (as_of is None or backup is not None):
        raise click.UsageError("--replay-audit requires --as-of ISO-8601 (and no --backup)")
    if replay_audit and mode not in REPLAY_MODES:
        modes = " or ".join(REPLAY_MODES)
        raise click.UsageError(f"--replay-audit restores the state at the instant: use --mode {modes}")
    if (backup is None) == (as_of is None):
        raise click.UsageError("give --backup ID, --backup latest, or --as-of ISO-8601")
    if replay_audit and target_account is not None:
        from tablebackup.storage.targets import REPLAY_INTO_ANOTHER_ACCOUNT

        raise click.UsageError(f"--replay-audit with --target-account: {REPLAY_INTO_ANOTHER_ACCOUNT}")
    request = RestoreRequest(
        table=table,
        backup=backup,
        as_of=as_of,
        target=target,
        filter=query_filter,
        mode=mode,
        dry_run=dry_run,
        force=force,
        actor=current_user(),
        allow_app_table=allow_app_table,
        include_legacy=not replay_audit,  # replaying needs a backup's exact start: only the app's have one
        types=parse_types_option(types_text),
        infer_types=infer_types,
        target_account=target_account,
        parallel=parallel,
    )
    run = restore_to_instant if replay_audit else restore
    with progress() as report:
        result = run(open_storage(), request, on_progress=lambda count: report(f"restore {target or table}", count))
    emit(result.as_json(), as_json, _restore_text)


def _undelete_text(data: dict) -> str:
    if data["source"] == "audit":
        origin = f"the audit trail (entry at {data['audit_timestamp']})"
    else:
        origin = f"backup {data['backup']}"
    verb = "would restore" if data["dry_run"] else ("restored" if data["restored"] else "did not restore")
    text = f"{verb} {data['partitionKey']!r}/{data['rowKey']!r} into {data['target']} from {origin}"
    if data["deleted_at"]:
        text += f"; it was deleted at {data['deleted_at']}"
    text += "".join(f"\ngap at {gap['timestamp']} {gap['entityKey']}: {gap['reason']}" for gap in data["gaps"])
    return text


@click.command()
@table_option("The table the entity was deleted from.")
@click.option("--partition-key", required=True, help="The entity's PartitionKey (may be empty: '').")
@click.option("--row-key", required=True, help="The entity's RowKey.")
@target_option("Restore into this table instead (created if missing).")
@click.option(
    "--since", type=IsoInstant(), help="Search the audit trail from this instant (default: AUDIT_QUERY_DAYS days ago)."
)
@click.option("--dry-run", is_flag=True, help="Report where the entity would come from; write nothing.")
@allow_app_table_option
@json_option
def undelete(table, partition_key, row_key, target, since, dry_run, allow_app_table, as_json) -> None:
    """Bring back one deleted entity: its last state before the DELETE from the audit trail, or else
    from the newest backup that holds it."""
    from tablebackup.restore.pointintime import undelete as undelete_entity

    result = undelete_entity(
        open_storage(),
        table,
        partition_key,
        row_key,
        target=target,
        since=since,
        dry_run=dry_run,
        actor=current_user(),
        allow_app_table=allow_app_table,
    )
    emit(result, as_json, _undelete_text)
