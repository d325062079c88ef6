"""`audit`."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator

import click
import orjson

from tablebackup.cli.common import IsoInstant, json_option, not_blank, open_storage
from tablebackup.cli.output import emit, json_stream

# As tablebackup.audit.messages.OPERATIONS; repeated so --help works without importing the domain.
OPERATIONS = ("INSERT", "UPDATE", "DELETE", "RESTORE", "IMPORT", "EXPORT", "PRUNE", "ERASE")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _phase(e: dict) -> str:
    """For an entry of the app's own operations: started (and whether it never ended) or ended how."""
    if e.get("unfinished"):
        return f"  {e['unfinished']}"
    details = e.get("afterData")
    if not isinstance(details, dict) or details.get("phase") not in ("started", "ended"):
        return ""
    return "  started" if details["phase"] == "started" else f"  ended: {details.get('outcome', '?')}"


def _audit_line(e: dict) -> str:
    line = f"{e['timestamp']}  {e['operation']:<7}  {e['tableName']}  {e['entityKey'] or '-'}  by {e['userId']}"
    # A lone surrogate in a key or user id (UTF-8 cannot encode it) is shown as its escape.
    return _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", line + _phase(e)) + "\n"


def _entry_json(entry: dict) -> str:
    try:
        return orjson.dumps(entry, option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONEncodeError:
        # A lone surrogate, which an entity can hold and orjson refuses: written as its escape.
        return json.dumps(entry, indent=2)


def _write_json(entries: Iterator[dict]) -> None:
    """One JSON document {"entries": [...]}, written entry by entry: a range may hold millions. A
    storage failure on the first page leaves stdout to the error document; a later one ends this
    document with the error's fields (tablebackup.cli.output.json_stream)."""
    first = next(entries, None)
    if first is None:
        emit({"entries": []}, True, str)
        return
    with json_stream(closing="\n  ]"):
        sys.stdout.write('{\n  "entries": [\n' + _entry_json(first))
        for entry in entries:
            sys.stdout.write(",\n" + _entry_json(entry))
    sys.stdout.write("\n  ]\n}\n")


def _write_text(entries: Iterator[dict]) -> None:
    written = 0
    for entry in entries:
        sys.stdout.write(_audit_line(entry))
        written += 1
    if not written:
        sys.stdout.write("no audit entries\n")


@click.command()
@click.option("--table", "-t", callback=not_blank("a table name"), help="Only changes to this audited table.")
@click.option("--partition-key", "partition_key", help="Only changes to entities with this PartitionKey.")
@click.option("--row-key", "row_key", help="Only changes to entities with this RowKey.")
@click.option("--operation", type=click.Choice(OPERATIONS, case_sensitive=False), help="Only this operation.")
@click.option("--user", callback=not_blank("a user name"), help="Only changes made by this user.")
@click.option("--since", type=IsoInstant(), help="From this instant (default: AUDIT_QUERY_DAYS days before --until).")
@click.option("--until", type=IsoInstant(), help="Up to this instant (default: now).")
@json_option
def audit(table, partition_key, row_key, operation, user, since, until, as_json) -> None:
    """List audit entries in time order: who changed what, when, with the before and after images.

    The app's own restores, imports, prunes and erasures are a started and an ended entry; a started
    one with no ended one says so ("unfinished" in --json): still running, or killed."""
    from tablebackup.audit.queries import iter_entries

    if since and until and since > until:
        raise click.UsageError("--since must not be after --until")
    entries = iter_entries(
        open_storage(),
        table=table,
        partition_key=partition_key,
        row_key=row_key,
        operation=operation.upper() if operation else None,
        user=user,
        since=since,
        until=until,
        unfinished=True,
    )
    (_write_json if as_json else _write_text)(entries)
