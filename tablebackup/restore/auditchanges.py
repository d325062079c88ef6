"""Reading the audited changes of one table for replay: entry by entry, so that one unreadable entry
is reported instead of stopping (or emptying) the whole read.

tablebackup.audit.queries.find_entries is the general query; a replay needs only the data operations (INSERT,
UPDATE, DELETE; the app's own RESTORE, IMPORT, ... are not entity changes), as a stream rather than
a list. It reads the same partitions with the same RowKey bounds, and keeps each image's problem
(entry_json's `unreadable`) with its change.

The table is matched by any spelling the application sent (tablebackup.audit.queries.table_clause).
Changes come in timestamp order. Changes of one entity that share a timestamp are put in the order
the application sent them (tablebackup.audit.queries.in_send_order, the order `audit` lists): by the
sequence it sent, else by the queue's insertion time, when these tell every one of them apart.
Otherwise the order is unknown: they keep their RowKey order (a uuid: no order at all) and are marked
`tied`, so replay reports a gap instead of claiming faithfulness.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

from tablebackup.audit.entries import PARTITION_PREFIX, entry_json, row_stamp
from tablebackup.audit.messages import DATA_OPERATIONS, canonical_instant, instant_text
from tablebackup.audit.queries import (
    MAX_RANGE_DAYS,
    SendOrder,
    table_clause,
    table_matches,
    time_range,
)
from tablebackup.audit.queries import in_send_order as _in_send_order
from tablebackup.core.clients import Storage
from tablebackup.core.entities import check_entity
from tablebackup.core.errors import InvalidInput, NotFound
from tablebackup.core.names import validate_table_name
from tablebackup.storage.tablequery import iter_pages, odata_string

_DATA_CLAUSE = "(" + " or ".join(f"operation eq {odata_string(op)}" for op in DATA_OPERATIONS) + ")"


@dataclass(frozen=True)
class Change:
    """One audited change: timestamp in the canonical 7-digit form, images parsed (None when absent
    or unreadable; `unreadable` then says why, by image name)."""

    timestamp: str
    operation: str
    partition_key: str
    row_key: str
    before: dict | None
    after: dict | None
    unreadable: dict[str, str] = field(default_factory=dict)
    sequence: int | None = None  # the sender's order (tablebackup.audit.client.next_sequence)
    inserted_at: str | None = None  # canonical instant the message was put on the queue
    tied: bool = False  # shares its timestamp with another change of its entity, order unknown

    @property
    def key(self) -> tuple[str, str]:
        return self.partition_key, self.row_key

    @property
    def entity_key(self) -> str:
        return f"{self.partition_key}:{self.row_key}"

    def entity(self, name: str) -> tuple[dict | None, str | None]:
        """The image `name` ("beforeData" or "afterData") as a writable entity with the change's keys,
        or (None, why not)."""
        if name in self.unreadable:
            return None, f"{name} is unreadable: {self.unreadable[name]}"
        image = self.before if name == "beforeData" else self.after
        if image is None:
            return None, f"{self.operation} without {name}"
        for key, value in (("PartitionKey", self.partition_key), ("RowKey", self.row_key)):
            if key in image and image[key] != value:
                return None, f"{name} has {key} {image[key]!r}, not the entry's {value!r}"
        entity = {**image, "PartitionKey": self.partition_key, "RowKey": self.row_key}
        try:
            check_entity(entity)
        except InvalidInput as error:
            return None, f"{name} is not a valid entity: {error}"
        return entity, None


def _change(storage: Storage, wire: dict) -> Change:
    entry = entry_json(storage, wire)
    return Change(
        timestamp=entry["timestamp"],
        operation=entry["operation"],
        partition_key=entry["partitionKey"],
        row_key=entry["rowKey"],
        before=entry["beforeData"],
        after=entry["afterData"],
        unreadable=entry.get("unreadable", {}),
        sequence=int(wire["sequence"]) if wire.get("sequence") is not None else None,
        inserted_at=canonical_instant(wire["insertedAt"]) if wire.get("insertedAt") else None,
    )


def _send_order(change: Change) -> SendOrder:
    return SendOrder(change.key, change.sequence, change.inserted_at)


def in_send_order(changes: Iterable[Change]) -> Iterator[Change]:
    """Changes in timestamp order, those of one entity at one instant in send order (see above).
    Memory holds the changes of one instant."""
    for _, same_instant in itertools.groupby(changes, key=lambda change: change.timestamp):
        for change, tied in _in_send_order(same_instant, _send_order):
            yield replace(change, tied=True) if tied else change


def _days(first: date, last: date) -> Iterator[date]:
    for offset in range((last - first).days + 1):
        yield first + timedelta(days=offset)


def _query(table: str, day: date, low: str, high: str | None, keys: tuple[str | None, str | None]) -> str:
    clauses = [
        f"PartitionKey eq {odata_string(PARTITION_PREFIX + day.isoformat())}",
        f"RowKey ge {odata_string(low)}",
    ]
    if high is not None:
        clauses.append(f"RowKey lt {odata_string(high)}")
    clauses += [table_clause(table), _DATA_CLAUSE]
    for name, value in zip(("partitionKey", "rowKey"), keys, strict=True):
        if value is not None:
            clauses.append(f"{name} eq {odata_string(value)}")
    return " and ".join(clauses)


def read_changes(
    storage: Storage,
    table: str,
    since: datetime | None,
    until: datetime | None,
    *,
    partition_key: str | None = None,
    row_key: str | None = None,
) -> Iterator[Change]:
    """The audited INSERT, UPDATE and DELETE changes of `table` (optionally of one entity), since and
    until inclusive (a naive datetime is UTC; defaults as audit queries'), in time order. A change
    whose image cannot be read is still yielded, with the reason in `unreadable`; a storage failure
    raises. Changes of one entity with the same timestamp come in send order, or marked tied."""
    validate_table_name(table)
    since, until = time_range(since, until, storage.settings.audit_query_days)
    low, high = row_stamp(instant_text(since)), row_stamp(instant_text(until)) + "~"
    days = _days(since.date(), until.date())
    yield from in_send_order(_entries(storage, table, days, low, high, (partition_key, row_key)))


def _entries(storage: Storage, table: str, days: Iterator[date], low: str, high: str, keys: tuple) -> Iterator[Change]:
    client = storage.tables.get_table_client(storage.settings.audit_table)
    for day in days:
        query = _query(table, day, low, high, keys)
        try:
            for page in iter_pages(client, query_filter=query):
                for wire in page:
                    if table_matches(wire, table):
                        yield _change(storage, wire)
        except NotFound:
            return  # no audit table yet: nothing was ever audited


def first_change_after(storage: Storage, table: str, instant: datetime) -> str | None:
    """The timestamp of the first audited change of `table` (any spelling) after `instant`, looking up
    to a day past now (clock skew) and at most MAX_RANGE_DAYS; None if there is none."""
    instant = instant if instant.tzinfo else instant.replace(tzinfo=UTC)
    low = row_stamp(instant_text(instant)) + "~"  # strictly after: "~" sorts after the "_<id>" suffix
    last = min(max(datetime.now(UTC), instant) + timedelta(days=1), instant + timedelta(days=MAX_RANGE_DAYS))
    client = storage.tables.get_table_client(storage.settings.audit_table)
    for day in _days(instant.astimezone(UTC).date(), last.astimezone(UTC).date()):
        try:
            query = _query(table, day, low, None, (None, None))
            # Entries of other tables in the spelling range are skipped: a page of keys is cheap.
            for page in iter_pages(client, query_filter=query, select=["tableName", "timestamp"], page_size=100):
                for wire in page:
                    if table_matches(wire, table):
                        return canonical_instant(wire["timestamp"])
        except NotFound:
            return None
    return None
