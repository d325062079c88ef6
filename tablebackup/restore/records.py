"""The rows of queued restores in RESTORE_OPERATIONS_TABLE: one per operation (partition `restore`,
row = the operation id), and for a restore cut into key ranges one per range (partition
`ranges-<operation>`, row = the range's number), so status and progress survive restarts and any
instance can tell which ranges are done."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from tablebackup.core.clients import Storage
from tablebackup.core.errors import StorageUnavailable
from tablebackup.storage.tablequery import odata_string

OPERATIONS_PARTITION = "restore"


def now_text() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _client(storage: Storage):
    return storage.tables.get_table_client(storage.settings.restore_operations_table)


def _unreachable(error: AzureError, what: str) -> StorageUnavailable:
    return StorageUnavailable(f"{what} failed: {str(error).splitlines()[0]}")


def create_table(storage: Storage) -> None:
    try:
        with contextlib.suppress(ResourceExistsError):
            storage.tables.create_table(storage.settings.restore_operations_table)
    except AzureError as error:
        raise _unreachable(error, "reaching table storage") from error


def save(storage: Storage, operation: str, **fields) -> None:
    """Merge these fields into the operation's row (upsert: a retry writes the same values)."""
    _upsert(storage, OPERATIONS_PARTITION, operation, fields, f"recording restore {operation}")


def save_range(storage: Storage, operation: str, index: int, **fields) -> None:
    _upsert(storage, ranges_partition(operation), f"{index:05d}", fields, f"recording range {index + 1} of {operation}")


def _upsert(storage: Storage, partition: str, row: str, fields: dict, what: str) -> None:
    entity = {"PartitionKey": partition, "RowKey": row, "updated_at": now_text(), **fields}
    try:
        _client(storage).upsert_entity(entity, mode=UpdateMode.MERGE)
    except AzureError as error:
        raise _unreachable(error, what) from error


def save_ranges(storage: Storage, operation: str, ranges: list[dict]) -> None:
    """Record many ranges at once ({"index", **fields} each): one transaction per 100 rows (they
    share a partition), not one request per range. Upserts: a retry writes the same rows."""
    rows = [
        {
            "PartitionKey": ranges_partition(operation),
            "RowKey": f"{fields['index']:05d}",
            "updated_at": now_text(),
            **{name: value for name, value in fields.items() if name != "index"},
        }
        for fields in ranges
    ]
    try:
        for start in range(0, len(rows), 100):
            _client(storage).submit_transaction(
                [("upsert", row, {"mode": UpdateMode.MERGE}) for row in rows[start : start + 100]]
            )
    except AzureError as error:
        raise _unreachable(error, f"recording the ranges of {operation}") from error


def ranges_partition(operation: str) -> str:
    return f"ranges-{operation}"


def row(storage: Storage, operation: str) -> dict:
    """The operation's row as recorded so far, with its etag in `metadata`; {} if there is none."""
    try:
        return _client(storage).get_entity(OPERATIONS_PARTITION, operation)
    except ResourceNotFoundError:
        return {}
    except AzureError as error:
        raise _unreachable(error, f"reading restore {operation}") from error


def range_row(storage: Storage, operation: str, index: int) -> dict:
    try:
        return dict(_client(storage).get_entity(ranges_partition(operation), f"{index:05d}"))
    except ResourceNotFoundError:
        return {}
    except AzureError as error:
        raise _unreachable(error, f"reading range {index + 1} of {operation}") from error


def range_rows(storage: Storage, operation: str) -> list[dict]:
    try:
        query = f"PartitionKey eq {odata_string(ranges_partition(operation))}"
        return [dict(entity) for entity in _client(storage).query_entities(query)]
    except AzureError as error:
        raise _unreachable(error, f"reading the ranges of {operation}") from error


def claim(storage: Storage, entity, token: str, **fields) -> bool:
    """Set fields on the operation's row only if nobody changed it since it was read (its etag):
    of two instances that both find the last range done, one finishes the operation. A claim whose
    answer was lost (the retry then meets its own change) is recognised by its token."""
    update = {"PartitionKey": entity["PartitionKey"], "RowKey": entity["RowKey"], "claim": token, **fields}
    update["updated_at"] = now_text()
    try:
        _client(storage).update_entity(
            update, mode=UpdateMode.MERGE, etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified
        )
        return True
    except HttpResponseError as error:
        if error.status_code != 412:
            raise _unreachable(error, f"claiming restore {entity['RowKey']}") from error
    except AzureError as error:
        raise _unreachable(error, f"claiming restore {entity['RowKey']}") from error
    return row(storage, entity["RowKey"]).get("claim") == token
