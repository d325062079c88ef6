"""Finding audit entries: by audited table, entity keys, operation, user and time range.

Only the days in the range are read: one query per `AUDIT_YYYY-MM-DD` partition, bounded by
RowKey (which starts with the entry's time) and filtered by the service on the other criteria.
Entries are streamed (the CLI) or paged with a continuation token (HTTP), never held as one list.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import orjson

from tablebackup.audit.entries import PARTITION_PREFIX, entry_json, row_stamp
from tablebackup.audit.messages import MAX_KEY_CHARS, OPERATIONS, canonical_instant, instant_text
from tablebackup.core.clients import Storage
from tablebackup.core.errors import InvalidInput, NotFound
from tablebackup.core.names import validate_table_name
from tablebackup.storage.tablequery import iter_pages

MAX_RANGE_DAYS = 3660
# One page of GET /api/audit: at most this many entries, and it ends once its JSON passes PAGE_BYTES
# (an entry's images can be up to 1 MiB each).
PAGE_ENTRIES = 1000
PAGE_BYTES = 4 * 1024 * 1024


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


def _criteria(table=None, partition_key=None, row_key=None, operation=None, user=None) -> list[str]:
    clauses = []
    if table is not None:
        clauses.append(f"tableName eq {_literal(validate_table_name(table))}")
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
) -> Iterator[dict]:
    """Entries matching every given criterion, in time order (since and until inclusive; a naive
    datetime is UTC), streamed page by page. Images are parsed JSON; blobs are resolved.
    InvalidInput for bad criteria, raised before the first entry."""
    clauses = _criteria(table, partition_key, row_key, operation, user)
    since, until = time_range(since, until, storage.settings.audit_query_days)
    wires = _wire_entries(storage, clauses, since, until, None)
    return (entry_json(storage, wire) for wire in wires)


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
    for wire in _wire_entries(storage, clauses, since, until, resume):
        if len(entries) >= limit or size >= PAGE_BYTES:
            return entries, _token(clauses, since, until, last)
        entry = entry_json(storage, wire)
        entries.append(entry)
        size += len(orjson.dumps(entry))
        last = (wire["PartitionKey"], wire["RowKey"])
    return entries, None


def _wire_entries(
    storage: Storage, clauses: list[str], since: datetime, until: datetime, resume: tuple[str, str] | None
) -> Iterator[dict]:
    """The matching entries as the service sends them, in time order; with `resume` (PartitionKey,
    RowKey), only those after that entry."""
    # A RowKey starts with its entry's time; "~" sorts after "_", so entries at `until` are included.
    low, high = row_stamp(instant_text(since)), row_stamp(instant_text(until)) + "~"
    client = storage.tables.get_table_client(storage.settings.audit_table)
    for day in _days(since, until):
        partition = PARTITION_PREFIX + day.isoformat()
        bounds = [f"RowKey ge {_literal(low)}", f"RowKey lt {_literal(high)}"]
        if resume is not None:
            if partition < resume[0]:
                continue
            if partition == resume[0]:
                bounds.append(f"RowKey gt {_literal(resume[1])}")
        query = " and ".join([f"PartitionKey eq {_literal(partition)}", *bounds, *clauses])
        for page in _pages(client, query):
            yield from page


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
