"""Audit entries: their schema in AUDIT_TABLE, writing them once, and reading them back.

PartitionKey `AUDIT_{YYYY-MM-DD}` (the event's UTC day), RowKey `{YYYYMMDDTHHMMSS.fffffffZ}_{UUID}`
(sorts by time). Properties: tableName, operation, entityKey (`PK:RK`), partitionKey, rowKey,
userId, timestamp (Edm.DateTime), beforeData and afterData (JSON text, annotations kept), messageId,
and what orders changes that share a timestamp: sequence (Edm.Int64, when the sender gave one) and
insertedAt (Edm.DateTime, when the message was put on the queue).
An image above the 64 KiB property limit is a blob instead, named by `beforeDataBlob` /
`afterDataBlob` (and `beforeData` / `afterData` are then absent).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from azure.data.tables import EdmType, EntityProperty

from tablebackup.audit import payloads
from tablebackup.audit.messages import APP_OPERATIONS, AuditEvent, canonical_instant, instant_text
from tablebackup.audit.tables import insert_once
from tablebackup.core import wirejson
from tablebackup.core.clients import Storage
from tablebackup.core.errors import BackupError, InvalidInput
from tablebackup.core.names import validate_table_name
from tablebackup.storage.tablewriter import WriteOutcome, write_ledger

log = logging.getLogger(__name__)

PARTITION_PREFIX = "AUDIT_"
DATA_PROPERTIES = ("beforeData", "afterData")
BLOB_SUFFIX = "Blob"
# uuid5 namespace of entry ids derived from queue message ids: a redelivery gets the same RowKey.
_MESSAGE_NAMESPACE = uuid.UUID("6f1c2a53-0b8e-4f4e-9a4c-2f5d7e3b9c11")
# uuid5 namespace of an operation's two entries: a retry of one write after a lost answer finds it.
_OPERATION_NAMESPACE = uuid.UUID("0d6c8f7e-3a51-4b9e-8e0f-5c2b7a9d4e13")
# What stops an operation from outside (Ctrl-C, SIGTERM turned into SystemExit, a closed generator):
# it was interrupted, not failed.
INTERRUPTIONS = (KeyboardInterrupt, SystemExit, GeneratorExit)
# The operations whose writes go to a table through the batch writer: their ended entry always
# gives `table_writes`, zeros included (it wrote nothing before it stopped).
_TABLE_WRITERS = ("RESTORE", "IMPORT")


def partition_for(instant: str) -> str:
    """The partition of a canonical instant (`2026-11-25T02:00:00.1234567Z` -> `AUDIT_2026-11-25`)."""
    return PARTITION_PREFIX + instant[:10]


def row_stamp(instant: str) -> str:
    """The RowKey prefix of a canonical instant: `20261125T020000.1234567Z`."""
    return f"{instant[:10].replace('-', '')}T{instant[11:19].replace(':', '')}{instant[19:]}"


def entry_id(message_id: str) -> uuid.UUID:
    return uuid.uuid5(_MESSAGE_NAMESPACE, message_id)


def _entity(event: AuditEvent, identifier: uuid.UUID, message_id: str, entity_key: str) -> dict:
    return {
        "PartitionKey": partition_for(event.timestamp),
        "RowKey": f"{row_stamp(event.timestamp)}_{identifier}",
        "tableName": event.table,
        "operation": event.operation,
        "entityKey": entity_key,
        "partitionKey": event.partition_key,
        "rowKey": event.row_key,
        "userId": event.user_id,
        "timestamp": EntityProperty(event.timestamp, EdmType.DATETIME),
        "beforeData": event.before_data,
        "afterData": event.after_data,
        "messageId": message_id,
    }


def _insert(storage: Storage, entity: dict) -> bool:
    # Blobs first: an entry never names a blob that was not written.
    for name in DATA_PROPERTIES:
        if not payloads.fits_in_property(entity[name]):
            blob = f"{entity['PartitionKey']}/{entity['RowKey']}/{name}.json"
            payloads.store(storage, blob, entity.pop(name).encode())
            entity[name + BLOB_SUFFIX] = blob
    return insert_once(storage.tables, storage.settings.audit_table, entity)


def write_event(storage: Storage, event: AuditEvent, message_id: str, inserted_at: datetime | None = None) -> bool:
    """Write the message's entry unless it exists already; returns whether it was written now."""
    entity = _entity(event, entry_id(message_id), message_id, event.entity_key)
    if event.sequence is not None:
        entity["sequence"] = EntityProperty(event.sequence, EdmType.INT64)
    if inserted_at is not None:
        entity["insertedAt"] = EntityProperty(instant_text(inserted_at), EdmType.DATETIME)
    return _insert(storage, entity)


def _check_operation(operation: str, table: str) -> None:
    if operation not in APP_OPERATIONS:
        raise InvalidInput(f"invalid audit operation {operation!r}: expected one of {', '.join(APP_OPERATIONS)}")
    validate_table_name(table)


def _write_operation_entry(
    storage: Storage, operation: str, actor: str, table: str, details: dict, identifier: uuid.UUID
) -> None:
    """Write one entry of the app's own; a storage failure is logged as a warning and never raised:
    the audit trail being unreachable must not stop (or hide the result of) a restore."""
    try:
        event = AuditEvent(
            table=table,
            operation=operation,
            partition_key="",
            row_key="",
            user_id=actor or "unknown",
            timestamp=instant_text(datetime.now(UTC)),
            before_data="null",
            after_data=_details_text(details),
        )
        # Built once: the client's retries of this one insert send the same RowKey (insert_once).
        _insert(storage, _entity(event, identifier, message_id="", entity_key=""))
    except Exception as error:
        log.warning("audit entry for %s of %s was not written: %s", operation, table, error, exc_info=error)


def _details_text(details: dict) -> str:
    try:
        return orjson.dumps(details, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        # A lone surrogate (in a filter, an entity's key), which orjson refuses: kept as its escape,
        # which the readers (wirejson.loads) read back as it was.
        return json.dumps(details, default=str, separators=(",", ":"))


def record_operation(storage: Storage, operation: str, actor: str, table: str, details: dict) -> None:
    """Record one of this app's own operations that changes nothing (EXPORT) as a single entry.
    Operations that change data use operation_entries (a started and an ended entry).

    details (what: backup, filter, target, mode, counts) become afterData. A storage failure is
    logged as a warning and never raised: it must not hide the operation's own result."""
    _check_operation(operation, table)
    _write_operation_entry(storage, operation, actor, table, details, uuid.uuid4())


@dataclass
class OperationEntries:
    """The running operation's side of its pair of entries: what it reports as it goes."""

    operation_id: str
    result: dict | None = None  # what it did, set when it completes: the ended entry carries it
    partial: dict = field(default_factory=dict)  # facts known before the end (e.g. the safety backup)
    # What the operation's table writes did, exactly (tablebackup.storage.tablewriter.write_ledger):
    # filled in as its batches finish, the ones in flight when it stopped included.
    table_writes: WriteOutcome = field(default_factory=WriteOutcome)
    # The last progress count reported through counting(): for the caller's display only; the
    # ended entry's counts come from table_writes, which is exact.
    reported: int = 0

    def counting(self, on_progress: Callable[[int], None] | None, offset: int = 0) -> Callable[[int], None]:
        """on_progress (count of operations handled), keeping the last count in `reported`."""

        def report(count: int) -> None:
            self.reported = offset + count
            if on_progress is not None:
                on_progress(count)

        return report


def _outcome(error: BaseException | None) -> str:
    if error is None:
        return "succeeded"
    if isinstance(error, INTERRUPTIONS):
        return "interrupted"
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return f"failed: {text}"


@contextmanager
def operation_entries(
    storage: Storage, operation: str, actor: str, table: str, plan: dict, *, record: bool = True
) -> Iterator[OperationEntries]:
    """One operation that changes data, as one pair of audit entries linked by `operation_id`: a
    `started` entry before the body runs (plan: what it will do), an `ended` entry when it leaves
    (the plan, then `result` if it completed or else `partial`, its exact `table_writes`, and
    outcome `succeeded`, `interrupted` or `failed: <why>`). An operation killed hard leaves its
    started entry and no ended one. record=False (a dry run, or a part of a larger operation)
    writes nothing."""
    _check_operation(operation, table)
    entries = OperationEntries(operation_id=str(uuid.uuid4()))
    if not record:
        yield entries
        return
    with write_ledger() as entries.table_writes:
        yield from _recorded(storage, operation, actor, table, plan, entries)


def _recorded(
    storage: Storage, operation: str, actor: str, table: str, plan: dict, entries: OperationEntries
) -> Iterator[OperationEntries]:

    def write(phase: str, details: dict) -> None:
        identifier = uuid.uuid5(_OPERATION_NAMESPACE, f"{entries.operation_id}/{phase}")
        linked = {**details, "phase": phase, "operation_id": entries.operation_id}
        _write_operation_entry(storage, operation, actor, table, linked, identifier)

    def writes() -> dict:
        ledger = entries.table_writes
        return {"table_writes": ledger.counts()} if operation in _TABLE_WRITERS or ledger.handled else {}

    write("started", plan)
    try:
        yield entries
    except BaseException as error:
        write("ended", {**plan, **entries.partial, **writes(), "outcome": _outcome(error)})
        raise
    write("ended", {**plan, **(entries.result or {}), **writes(), "outcome": _outcome(None)})


def write_operation_phase(
    storage: Storage, operation: str, actor: str, table: str, operation_id: str, phase: str, details: dict
) -> None:
    """One entry of an operation whose started and ended entries are written by different
    invocations (a restore cut into ranges on the queue): as operation_entries writes them, under
    ids derived from operation_id and phase, so a redelivery writes no second entry."""
    _check_operation(operation, table)
    identifier = uuid.uuid5(_OPERATION_NAMESPACE, f"{operation_id}/{phase}")
    linked = {**details, "phase": phase, "operation_id": operation_id}
    _write_operation_entry(storage, operation, actor, table, linked, identifier)


def _image(storage: Storage, wire: dict, name: str) -> dict | None:
    blob = wire.get(name + BLOB_SUFFIX)
    try:
        # wirejson: an image may hold a lone surrogate (as its escape), which orjson refuses.
        return wirejson.loads(payloads.load(storage, blob) if blob else wire.get(name) or "null")
    except orjson.JSONDecodeError as error:
        raise BackupError(f"its {name} is not valid JSON: {error}") from None


def _images(storage: Storage, wire: dict) -> dict:
    """Both images; one that can't be read (a missing payload blob, bad JSON, not an object) is None
    and `unreadable` says why, by image name: one damaged entry must not hide the others."""
    images: dict = {}
    unreadable: dict[str, str] = {}
    for name in DATA_PROPERTIES:
        try:
            image = _image(storage, wire, name)
            if image is not None and not isinstance(image, dict):
                raise BackupError("not a JSON object")
            images[name] = image
        except BackupError as error:
            images[name], unreadable[name] = None, str(error).splitlines()[0]
    return {**images, "unreadable": unreadable} if unreadable else images


def entry_json(storage: Storage, wire: dict) -> dict:
    """An entry as the service sent it (wire JSON), with its images parsed and blobs resolved."""
    return {
        "id": wire["RowKey"],
        # The service may shorten a DateTime's fraction; the canonical form keeps text order = time order.
        "timestamp": canonical_instant(wire["timestamp"]),
        "operation": wire["operation"],
        "tableName": wire["tableName"],
        "entityKey": wire["entityKey"],
        "partitionKey": wire["partitionKey"],
        "rowKey": wire["rowKey"],
        "userId": wire["userId"],
        "messageId": wire.get("messageId", ""),
        **_images(storage, wire),
    }
