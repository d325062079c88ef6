"""`show`, `diff` and `history`: looking into backups without restoring them."""

from __future__ import annotations

import os
from pathlib import Path

import click

from tablebackup.cli.common import GivenPath, human_size, json_option, not_blank, open_storage, table_option
from tablebackup.cli.output import emit

# diff's exit codes: 0 identical, 1 different (CommandFailed), 2 bad usage (click), and 3 when the
# comparison could not be made, so a script can tell "different" from "could not compare".
DIFF_ERROR = 3


class DiffError(click.ClickException):
    """The comparison could not be made (storage, a missing or damaged backup): exit 3."""

    exit_code = DIFF_ERROR


def _show_text(b: dict) -> str:
    chain = " <- ".join(link["backup"] for link in b["chain"]["links"])
    lines = [
        f"backup    {b['backup']}{'  (latest)' if b['latest'] else ''}",
        f"table     {b['table']}  ({b['table_entities']:,} entities at this backup)",
        f"taken     {b['taken_at']} .. {b['finished_at']}",
        f"why       {b['reason']['text']}",
        f"kind      {b['kind']}" + (f", parent {b['parent']}" if b["parent"] else ""),
        f"chain     {chain}" + ("" if b["chain"]["complete"] else f"  BROKEN: {b['chain']['problem']}"),
        f"size      {b['entities']:,} entities, {human_size(b['bytes'])}, sha256 {b['sha256'][:12]}…",
    ]
    lines += [f"  part    {p['blob']}  {p['entities']:,} entities, {human_size(p['bytes'])}" for p in b["parts"]]
    keys = b["key_range"]
    if keys.get("first"):
        last = keys["last_sampled_partition_key"]
        lines.append(
            f"keys      from {keys['first']['PartitionKey']!r} / {keys['first']['RowKey']!r}"
            + (f"; last sampled PartitionKey {last!r}" if last is not None else "")
        )
    if b["read_from_secondary"]:
        lines.append("source    read from the secondary endpoint: as of the account's last geo-replication")
    verification = b["verification"]
    if verification is None:
        lines.append("verified  never")
    else:
        outcome = "passed" if verification["ok"] else "FAILED: " + "; ".join(verification["failed"])
        lines.append(f"verified  {verification['at']}: {outcome}")
    lines.append(f"erasures  {b['erasures']['note']}")
    return "\n".join(lines)


@click.command()
@table_option("The backed-up table.")
@click.option(
    "--backup",
    "-b",
    "backup",
    required=True,
    callback=not_blank("a backup id or latest"),
    help="A backup id, or `latest`.",
)
@json_option
def show(table: str, backup: str, as_json: bool) -> None:
    """Show what one backup is: when and why it was taken, its kind and chain, parts, key range,
    verifications, whether it was read from a secondary, and the erasures that apply to it."""
    from tablebackup.inspect.show import describe_backup

    emit(describe_backup(open_storage(), table, backup), as_json, _show_text)


def _value(side: dict | None) -> str:
    return "(none)" if side is None else f"{side['value']!r} ({side['type']})"


def _diff_text(d: dict) -> str:
    to = "the live table" if d["to"]["live"] else d["to"]["backup"]
    lines = [
        f"{d['from']['backup']} -> {to}: {d['added']:,} added, {d['removed']:,} removed, "
        f"{d['changed']:,} changed, {d['unchanged']:,} unchanged"
    ]
    for record in d["differences"]:
        lines.append(f"{record['change']:<8} {record['PartitionKey']!r} / {record['RowKey']!r}")
        if record["change"] == "changed":
            for name, values in record["properties"].items():
                lines.append(f"    {name}: {_value(values['old'])} -> {_value(values['new'])}")
    if d["differences_listed"] < d["differences_total"]:
        lines.append(f"... {d['differences_total'] - d['differences_listed']:,} more: --output FILE lists every one")
    if d["erased_left_out"]:
        lines.append(f"{d['erased_left_out']:,} erased entities left out")
    return "\n".join(lines)


class _Lines:
    """NDJSON lines into FILE.partial, renamed to FILE only once the whole comparison is written:
    a failed diff never leaves a file that looks complete."""

    def __init__(self, path: Path):
        self.path, self.partial = path, path.with_name(path.name + ".partial")
        self._file = self.partial.open("wb")

    def write(self, record: dict) -> None:
        import orjson

        self._file.write(orjson.dumps(record) + b"\n")

    def finish(self) -> None:
        self._file.close()
        os.replace(self.partial, self.path)

    def abandon(self) -> None:
        self._file.close()
        self.partial.unlink(missing_ok=True)


def _could_not_compare(error: Exception) -> str:
    """One line, without what an SDK error's text may carry (a URL, its SAS query)."""
    from azure.core.exceptions import AzureError

    from tablebackup.core.errors import BackupError
    from tablebackup.core.retrysettings import failure_reason

    if isinstance(error, BackupError):
        return (str(error).strip().splitlines() or [type(error).__name__])[0]
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.strerror}: {error.filename}"
    what = "storage request failed" if isinstance(error, AzureError) else "the operating system refused"
    return f"{what}: {type(error).__name__}: {failure_reason(error)}"


@click.command()
@table_option("The table.")
@click.option(
    "--from",
    "from_backup",
    required=True,
    callback=not_blank("a backup id or latest"),
    help="The backup to compare from: an id, or `latest`.",
)
@click.option(
    "--to",
    "to_backup",
    callback=not_blank("a backup id or latest"),
    help="The backup to compare with (an id, or `latest`); default: the live table.",
)
@click.option(
    "--filter",
    "filter_text",
    metavar="ODATA",
    callback=not_blank("an OData filter"),
    help="Compare only entities matching this OData filter.",
)
@click.option(
    "--output",
    "-o",
    type=GivenPath(dir_okay=False, path_type=Path),
    help="Write one NDJSON line per differing entity to FILE (written whole, or not at all).",
)
@json_option
def diff(table: str, from_backup: str, to_backup: str | None, filter_text: str | None, output, as_json: bool) -> None:
    """Compare a backup with another backup or with the live table: how many entities were added,
    removed, changed and unchanged, and for each changed entity the properties that changed, with
    old and new values and EDM types. Erased entities are left out of both sides.

    \b
    Exit codes: 0 identical, 1 different, 2 bad usage, 3 the comparison could not be made."""
    from azure.core.exceptions import AzureError

    from tablebackup.core.errors import BackupError, InvalidInput
    from tablebackup.inspect.diff import diff_table
    from tablebackup.storage.odatafilter import parse_filter

    if filter_text is not None:
        try:
            parse_filter(filter_text)
        except InvalidInput as error:
            raise click.BadParameter(str(error), param_hint="--filter") from None
    lines = None
    try:
        storage = open_storage()
        if output is not None:
            lines = _Lines(output)
        result = diff_table(storage, table, from_backup, to_backup, filter_text, None if lines is None else lines.write)
        if lines is not None:
            lines.finish()
    except InvalidInput as error:
        if lines is not None:
            lines.abandon()
        raise click.UsageError(str(error)) from None
    except (BackupError, AzureError, OSError) as error:
        # Storage or the file system failed (an SDK error no domain function named too): exit 3,
        # never 1, which says "different".
        if lines is not None:
            lines.abandon()
        raise DiffError(_could_not_compare(error)) from None
    emit(result, as_json, _diff_text)
    if not result["identical"]:
        # As diff(1): "different" is an answer, not an error, so no `error:` line; stdout says how.
        raise click.exceptions.Exit(1)


def _history_text(h: dict) -> str:
    head = f"{h['table']} {h['PartitionKey']!r} / {h['RowKey']!r}"
    if h["erased"]:
        return f"{head}: {h['note']}"
    live = f"live: {'present, digest ' + h['live']['digest'][:12] + '…' if h['live']['holds'] else 'absent'}"
    lines = [f"{head}  ({live})"]
    for row in h["backups"]:
        if "refused" in row:
            lines.append(f"  {row['backup']}  REFUSED: {row['refused']}")
        elif not row["holds"]:
            lines.append(f"  {row['backup']}  absent")
        else:
            lines.append(f"  {row['backup']}  {row['digest'][:12]}…  {row['since_previous']}")
            for name, values in (row["changes"] or {}).items():
                lines.append(f"      {name}: {_value(values['old'])} -> {_value(values['new'])}")
    if h["audit"]:
        lines.append("audited changes:")
        for change in h["audit"]:
            lines.append(f"  {change['timestamp']}  {change['operation']:<6} by {change['user']}")
            for name, values in change["changes"].items():
                lines.append(f"      {name}: {_value(values['old'])} -> {_value(values['new'])}")
        if h.get("audit_note"):
            lines.append(f"  ({h['audit_note']})")
    return "\n".join(lines)


@click.command()
@table_option("The table.")
@click.option("--partition-key", "partition_key", required=True, help="The entity's PartitionKey.")
@click.option("--row-key", "row_key", required=True, help="The entity's RowKey.")
@json_option
def history(table: str, partition_key: str, row_key: str, as_json: bool) -> None:
    """One entity across the backups, newest first: each backup that holds it with a digest of its
    version and what changed from the one before, the backups taken while it was absent, and the
    audit trail's changes of it (for an audited table)."""
    from tablebackup.inspect.history import entity_history

    emit(entity_history(open_storage(), table, partition_key, row_key), as_json, _history_text)
