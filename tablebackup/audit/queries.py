"""Finding audit entries: by audited table, entity keys, operation, user and time range.

Only the days in the range are read: one query per `AUDIT_YYYY-MM-DD` partition, bounded by
RowKey (which starts with the entry's time) and filtered by the service on the other criteria.
Entries are streamed (the CLI) or paged with a continuation token (HTTP), never held as one list.

A table is matched by any spelling: entries keep `tableName` as the application sent it, and Azure's
table names are case-insensitive (`Orders` is `orders`). The service filters on the range every case
variant lies in (table_clause), and only entries whose table_key matches are kept (table_matches).

Entries come in the order the changes happened, the order replay uses: by timestamp, and those of one
entity that share a timestamp in the order they were sent (in_send_order), not by RowKey (whose
suffix is a uuid). Only the entries of one timestamp are held to reorder them.

An operation of the app's own is a started and an ended entry (tablebackup.audit.entries); with
`unfinished=True` a started entry whose ended one is nowhere from its start up to now (at most
OPERATION_HORIZON after the query's end) says so, as `unfinished`. The ids of the ended entries
looked at are the only thing held: one per operation, not per change.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

import orjson

from tablebackup.audit.entries import PARTITION_PREFIX, entry_json, row_stamp
from tablebackup.audit.messages import APP_OPERATIONS, MAX_KEY_CHARS, OPERATIONS, canonical_instant, instant_text
from tablebackup.core import wirejson
from tablebackup.core.clients import Storage
from tablebackup.core.errors import InvalidInput, NotFound
from tablebackup.core.names import table_key, validate_table_name
from tablebackup.storage.tablequery import iter_pages

MAX_RANGE_DAYS = 3660
# One page of GET /api/audit: at most this many entries, and it ends once its JSON passes PAGE_BYTES
# (an entry's images can be up to 1 MiB each).
PAGE_ENTRIES = 1000
PAGE_BYTES = 4 * 1024 * 1024
# No operation of the app's own runs longer than this (a restore writes hundreds of millions of
# entities in a week): a started entry with no ended one this long after it was killed, or its
# ended entry could not be written. Within it, it may still be running.
OPERATION_HORIZON = timedelta(days=7)
RUNNING_OR_KILLED = "started, not ended (running or killed)"
NEVER_ENDED = "started, never ended (killed, or its ended entry could not be written)"


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _utc(instant: datetime) -> datetime:
    return instant.astimezone(UTC) if instant.tzinfo else instant.replace(tzinfo=UTC)


def time_range(since: datetime | None, until: datetime | None, default_days: int) -> tuple[datetime, datetime]:
    """The UTC range to read: by default the last `default_days` days up to now."""
    try:
        until = _utc(until) if until else datetime.now(UTC)
        since = _utc(since) if since else until - timedelta(days=default_days)
    except OverflowError:
        raise InvalidInput("since/until is outside the range of dates that can be queried") from None
    if since > until:
        raise InvalidInput(f"since ({since.isoformat()}) is after until ({until.isoformat()})")
    if until - since > timedelta(days=MAX_RANGE_DAYS):
        raise InvalidInput(f"the time range is longer than {MAX_RANGE_DAYS} days; narrow since/until")
    return since, until


def table_clause(table: str) -> str:
    """The service-side part of matching `table` by any spelling: its case variants with the same first
    letter lie between the all-uppercase and the all-lowercase spelling of the rest (names are ASCII
    letters and digits, and "A" < "a"). Other names in these ranges are dropped by table_matches.
    Four comparisons: a query may hold 15."""
    validate_table_name(table)
    rest = table[1:]
    ranges = [
        f"(tableName ge {_literal(first + rest.upper())} and tableName le {_literal(first + rest.lower())})"
        for first in (table[0].upper(), table[0].lower())
    ]
    return "(" + " or ".join(ranges) + ")"


def table_matches(wire: dict, table: str | None) -> bool:
    """Whether an entry (as the service sends it) is of `table`, in any spelling; any entry without one."""
    return table is None or table_key(wire.get("tableName") or "") == table_key(table)


T = TypeVar("T")


@dataclass(frozen=True)
class SendOrder:
    """What tells apart the changes that share a timestamp: the entity, the sequence its sender gave
    (tablebackup.audit.client.next_sequence) and the instant it was put on the queue."""

    entity: tuple[str, str]
    sequence: int | None
    inserted_at: str | None


def send_order_of(wire: dict) -> SendOrder:
    """The SendOrder of an entry as the service sends it."""
    inserted = wire.get("insertedAt")
    return SendOrder(
        entity=(wire.get("partitionKey") or "", wire.get("rowKey") or ""),
        sequence=int(wire["sequence"]) if wire.get("sequence") is not None else None,
        inserted_at=canonical_instant(str(inserted)) if inserted else None,
    )


def in_send_order(same_instant: Iterable[T], order: Callable[[T], SendOrder]) -> Iterator[tuple[T, bool]]:
    """Changes that share a timestamp (given in RowKey order), each with whether it is tied. Those of
    one entity come in the order they were sent: by sequence, else by queue insertion time, when these
    tell every one of them apart; otherwise the order is unknown and they keep their RowKey order,
    tied. Entities come in the order of their first RowKey."""
    by_entity: dict[tuple[str, str], list[T]] = {}
    for change in same_instant:
        by_entity.setdefault(order(change).entity, []).append(change)
    for same_entity in by_entity.values():
        if len(same_entity) == 1:
            yield same_entity[0], False
            continue
        for field in ("sequence", "inserted_at"):
            values = [getattr(order(change), field) for change in same_entity]
            if None not in values and len(set(values)) == len(values):
                ordered = [change for _, change in sorted(zip(values, same_entity, strict=True), key=lambda p: p[0])]
                yield from ((change, False) for change in ordered)
                break
        else:
            yield from ((change, True) for change in same_entity)


def _stamp(row_key: str) -> str:
    """The time part of an entry's RowKey, `<stamp>_<uuid>`: entries of one timestamp share it."""
    return row_key.split("_", 1)[0]


def ordered_entries(wires: Iterable[dict], table: str | None, after: str | None = None) -> Iterator[dict]:
    """Entries of one partition in RowKey order, kept when of `table` (any spelling), in send order.
    With `after` (a RowKey), those that come after that entry in this order: the entries before its
    timestamp must already be left out (by a RowKey bound), its own timestamp's must not."""
    kept = (wire for wire in wires if table_matches(wire, table))
    for stamp, same_instant in itertools.groupby(kept, key=lambda wire: _stamp(wire["RowKey"])):
        ordered = [wire for wire, _ in in_send_order(same_instant, send_order_of)]
        if after is not None and stamp == _stamp(after):
            rows = [wire["RowKey"] for wire in ordered]
            # The entry itself gone (pruned, say): what follows it in RowKey order is what is left.
            ordered = ordered[rows.index(after) + 1 :] if after in rows else [w for w in ordered if w["RowKey"] > after]
        yield from ordered


def _criteria(table=None, partition_key=None, row_key=None, operation=None, user=None) -> list[str]:
    clauses = []
    if table is not None:
        clauses.append(table_clause(table))
    if operation is not None:
        if not isinstance(operation, str) or operation.upper() not in OPERATIONS:
            raise InvalidInput(f"invalid operation {operation!r}: expected one of {', '.join(OPERATIONS)}")
        clauses.append(f"operation eq {_literal(operation.upper())}")
    for name, value in (("partitionKey", partition_key), ("rowKey", row_key), ("userId", user)):
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > MAX_KEY_CHARS:
            raise InvalidInput(f"invalid {name}: expected a string of at most {MAX_KEY_CHARS} characters")
        clauses.append(f"{name} eq {_literal(value)}")
    return clauses


def _days(since: datetime, until: datetime) -> Iterator[date]:
    first = since.date()
    for offset in range((until.date() - first).days + 1):
        yield first + timedelta(days=offset)


def find_entries(storage: Storage, **criteria) -> list[dict]:
    """Every entry iter_entries finds, as one list: for short ranges; iter_entries or entries_page otherwise."""
    return list(iter_entries(storage, **criteria))


def iter_entries(
    storage: Storage,
    table: str | None = None,
    partition_key: str | None = None,
    row_key: str | None = None,
    operation: str | None = None,
    user: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    unfinished: bool = False,
    now: datetime | None = None,
) -> Iterator[dict]:
    """Entries matching every given criterion, in time order (since and until inclusive; a naive
    datetime is UTC), streamed page by page. Images are parsed JSON; blobs are resolved.
    InvalidInput for bad criteria, raised before the first entry. unfinished: a started entry of
    an operation that has no ended entry gets `unfinished` (RUNNING_OR_KILLED, or NEVER_ENDED once
    OPERATION_HORIZON has passed since it started); now: the clock (default: the current time)."""
    clauses = _criteria(table, partition_key, row_key, operation, user)
    since, until = time_range(since, until, storage.settings.audit_query_days)
    wires = _wire_entries(storage, clauses, table, since, until, None)
    entries = (entry_json(storage, wire) for wire in wires)
    if not unfinished:
        return entries
    return _marking_unfinished(storage, entries, clauses, table, until, _utc(now) if now else datetime.now(UTC))


def _started(entry: dict) -> str | None:
    """The operation_id of an operation's started entry; None for any other entry."""
    details = entry.get("afterData")
    if entry["operation"] in APP_OPERATIONS and isinstance(details, dict) and details.get("phase") == "started":
        return str(details.get("operation_id"))
    return None


def _instant(canonical: str) -> datetime:
    return datetime.fromisoformat(canonical[:26]).replace(tzinfo=UTC)  # microseconds are enough here


def _marking_unfinished(
    storage: Storage, entries: Iterator[dict], clauses: list[str], table: str | None, until: datetime, now: datetime
) -> Iterator[dict]:
    ended: set[str] | None = None
    for entry in entries:
        operation_id = _started(entry)
        if operation_id is not None:
            started = _instant(entry["timestamp"])
            if ended is None:  # read once, from the first started entry on: later ones lie within
                end = max(started, min(until + OPERATION_HORIZON, now))
                ended = _ended_operations(storage, clauses, table, started, end)
            if operation_id not in ended:
                entry = {**entry, "unfinished": NEVER_ENDED if now - started > OPERATION_HORIZON else RUNNING_OR_KILLED}
        yield entry


def _ended_operations(
    storage: Storage, clauses: list[str], table: str | None, since: datetime, until: datetime
) -> set[str]:
    """The operation_ids of the ended entries matching the query's criteria (an operation's two
    entries share its table, operation and user) between since and until."""
    ours = "(" + " or ".join(f"operation eq {_literal(name)}" for name in APP_OPERATIONS) + ")"
    ids = set()
    for wire in _wire_entries(storage, [*clauses, ours], table, since, until, None):
        details = entry_json(storage, wire).get("afterData")
        if isinstance(details, dict) and details.get("phase") == "ended":
            ids.add(str(details.get("operation_id")))
    return ids


def entries_page(
    storage: Storage,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    continuation: str | None = None,
    limit: int = PAGE_ENTRIES,
    **criteria,
) -> tuple[list[dict], str | None]:
    """One page of iter_entries: at most `limit` entries and about PAGE_BYTES of JSON, and the
    continuation token of the next page (None after the last). A token carries the range of its first
    page (a default `until` stays fixed) and is refused with other criteria or another range."""
    if not isinstance(limit, int) or not 1 <= limit <= PAGE_ENTRIES:
        raise InvalidInput(f"invalid limit {limit!r}: expected 1 to {PAGE_ENTRIES} entries per page")
    clauses = _criteria(**criteria)
    resume = None
    if continuation is not None:
        since, until, resume = _resume(continuation, clauses, since, until)
    since, until = time_range(since, until, storage.settings.audit_query_days)
    if resume is not None and not since.date() <= _day_of(resume[0]) <= until.date():
        raise InvalidInput("invalid continuation: it points outside its own time range")
    entries: list[dict] = []
    size, last = 0, None
    for wire in _wire_entries(storage, clauses, criteria.get("table"), since, until, resume):
        if len(entries) >= limit or size >= PAGE_BYTES:
            return entries, _token(clauses, since, until, last)
        entry = entry_json(storage, wire)
        entries.append(entry)
        size += len(wirejson.dumps(entry))  # an entry may hold a lone surrogate, which orjson refuses
        last = (wire["PartitionKey"], wire["RowKey"])
    return entries, None


def _wire_entries(
    storage: Storage,
    clauses: list[str],
    table: str | None,
    since: datetime,
    until: datetime,
    resume: tuple[str, str] | None,
) -> Iterator[dict]:
    """The matching entries as the service sends them, in the order changes happened; with `resume`
    (PartitionKey, RowKey), only those after that entry in this order."""
    # A RowKey starts with its entry's time; "~" sorts after "_", so entries at `until` are included.
    low, high = row_stamp(instant_text(since)), row_stamp(instant_text(until)) + "~"
    client = storage.tables.get_table_client(storage.settings.audit_table)
    for day in _days(since, until):
        partition = PARTITION_PREFIX + day.isoformat()
        bounds = [f"RowKey ge {_literal(low)}", f"RowKey lt {_literal(high)}"]
        after = None
        if resume is not None:
            if partition < resume[0]:
                continue
            if partition == resume[0]:
                # From the resumed entry's timestamp: its own may be sent after it in send order.
                after = resume[1]
                bounds.append(f"RowKey ge {_literal(_stamp(after))}")
        query = " and ".join([f"PartitionKey eq {_literal(partition)}", *bounds, *clauses])
        yield from ordered_entries(itertools.chain.from_iterable(_pages(client, query)), table, after)


# Continuation tokens: base64url (no padding) of a JSON object naming the query and the last entry
# returned. Opaque to callers, and checked exactly: a token is never trusted to widen a query.
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,4096}")
_TOKEN_FIELDS = ("v", "query", "since", "until", "partition", "row")
_PARTITION_RE = re.compile(re.escape(PARTITION_PREFIX) + r"\d{4}-\d{2}-\d{2}")


def _digest(clauses: list[str]) -> str:
    return hashlib.sha256("\n".join(clauses).encode()).hexdigest()[:32]


def _token(clauses: list[str], since: datetime, until: datetime, last: tuple[str, str]) -> str:
    values = (1, _digest(clauses), instant_text(since), instant_text(until), *last)
    return _encode(dict(zip(_TOKEN_FIELDS, values, strict=True)))


def _encode(body: dict) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(body)).decode().rstrip("=")


def _day_of(partition: str) -> date:
    return date.fromisoformat(partition.removeprefix(PARTITION_PREFIX))


def _resume(
    token: str, clauses: list[str], since: datetime | None, until: datetime | None
) -> tuple[datetime, datetime, tuple[str, str]]:
    """The range and the position a continuation token names, refused unless it is one this query made."""
    invalid = InvalidInput("invalid continuation: pass the token of the previous page unchanged")
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token) or len(token) % 4 == 1:
        raise invalid
    try:
        body = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise invalid from None
    if not isinstance(body, dict) or list(body) != list(_TOKEN_FIELDS) or type(body["v"]) is not int or body["v"] != 1:
        raise invalid
    if not all(isinstance(body[name], str) for name in _TOKEN_FIELDS[1:]) or _encode(body) != token:
        raise invalid  # exactly as _token writes it: no other spelling of the same JSON or base64
    partition, row = body["partition"], body["row"]
    if not _PARTITION_RE.fullmatch(partition) or not 0 < len(row) <= MAX_KEY_CHARS:
        raise invalid
    try:
        _day_of(partition)
        begins, ends = (datetime.fromisoformat(canonical_instant(body[name])) for name in ("since", "until"))
    except ValueError:
        raise invalid from None
    if body["query"] != _digest(clauses):
        raise InvalidInput("invalid continuation: it belongs to a query with other criteria")
    for name, given, held in (("since", since, begins), ("until", until, ends)):
        if given is not None and instant_text(_utc(given)) != instant_text(held):
            raise InvalidInput(f"invalid continuation: it belongs to a query with another {name}")
    return begins, ends, (partition, row)


def _pages(client, query: str) -> Iterator[list[dict]]:
    try:
        yield from iter_pages(client, query_filter=query)
    except NotFound:
        return  # no audit table yet: nothing was ever audited
