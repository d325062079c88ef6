"""Finding audit entries: by audited table, entity keys, operation, user and time range.

Only the days in the range are read: one query per `AUDIT_YYYY-MM-DD` partition, bounded by
RowKey (which starts with the entry's time) and filtered by the service on the other criteria.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

from audit.entries import PARTITION_PREFIX, entry_json, row_stamp
from audit.messages import MAX_KEY_CHARS, OPERATIONS, instant_text
from tablebackup.clients import Storage
from tablebackup.errors import InvalidInput, NotFound
from tablebackup.names import validate_table_name
from tablebackup.tablequery import iter_pages

MAX_RANGE_DAYS = 3660


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


def _criteria(table, partition_key, row_key, operation, user) -> list[str]:
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


def find_entries(
    storage: Storage,
    table: str | None = None,
    partition_key: str | None = None,
    row_key: str | None = None,
    operation: str | None = None,
    user: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict]:
    """Entries matching every given criterion, in time order (since and until inclusive; a naive
    datetime is UTC). Images are parsed JSON; blobs are resolved. InvalidInput for bad criteria."""
    clauses = _criteria(table, partition_key, row_key, operation, user)
    since, until = time_range(since, until, storage.settings.audit_query_days)
    # A RowKey starts with its entry's time; "~" sorts after "_", so entries at `until` are included.
    low, high = row_stamp(instant_text(since)), row_stamp(instant_text(until)) + "~"
    client = storage.tables.get_table_client(storage.settings.audit_table)
    entries: list[dict] = []
    for day in _days(since, until):
        partition = f"PartitionKey eq {_literal(PARTITION_PREFIX + day.isoformat())}"
        query = " and ".join([partition, f"RowKey ge {_literal(low)}", f"RowKey lt {_literal(high)}", *clauses])
        for page in _pages(client, query):
            entries += [entry_json(storage, wire) for wire in page]
    return entries


def _pages(client, query: str) -> Iterator[list[dict]]:
    try:
        yield from iter_pages(client, query_filter=query)
    except NotFound:
        return  # no audit table yet: nothing was ever audited
