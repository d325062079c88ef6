"""Write entities to a table in entity group transactions: one partition, at most 100
operations and well under the 4 MiB payload limit per batch."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Iterator

import orjson
from azure.core.exceptions import AzureError
from azure.data.tables import EdmType, EntityProperty, TableClient, TableTransactionError, UpdateMode

from tablebackup.entities import TYPE_SUFFIX, writable
from tablebackup.errors import BackupError, StorageUnavailable

MAX_BATCH_OPERATIONS = 100
# The service allows 4 MiB per batch request; leave room for the multipart framing.
MAX_BATCH_BYTES = 3_500_000
_OPERATION_OVERHEAD = 600

Operation = tuple[str, dict, dict]


def to_sdk_entity(entity: dict) -> dict:
    """An entity in backup-line form as the SDK's write form, keeping every EDM type exactly.

    Annotated values go in as EntityProperty so the SDK sends them through unchanged (Int64 and
    DateTime stay strings, so all 7 fractional digits and the full Int64 range survive)."""
    properties = writable(entity)
    sdk: dict = {}
    for name, value in properties.items():
        if name.endswith(TYPE_SUFFIX):
            continue
        edm = properties.get(name + TYPE_SUFFIX)
        if edm is None:
            sdk[name] = value  # str, bool, Int32 int, or float (sent as Edm.Double)
        elif edm == "Edm.Binary":
            sdk[name] = EntityProperty(base64.b64decode(value), EdmType.BINARY)
        else:
            sdk[name] = EntityProperty(value, EdmType(edm))
    return sdk


def upsert_operations(entities: Iterable[dict], mode: UpdateMode = UpdateMode.REPLACE) -> Iterator[Operation]:
    for entity in entities:
        yield ("upsert", entity, {"mode": mode})


def _batches(operations: Iterable[Operation]) -> Iterator[list[Operation]]:
    batch: list[Operation] = []
    size = 0
    for operation in operations:
        entity = operation[1]
        cost = len(orjson.dumps(writable(entity))) + _OPERATION_OVERHEAD
        if batch and (
            entity["PartitionKey"] != batch[0][1]["PartitionKey"]
            or len(batch) == MAX_BATCH_OPERATIONS
            or size + cost > MAX_BATCH_BYTES
        ):
            yield batch
            batch, size = [], 0
        batch.append(operation)
        size += cost
    if batch:
        yield batch


def submit_operations(
    client: TableClient,
    operations: Iterable[Operation],
    *,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Submit the operations (entities in backup-line form) in batches; returns how many ran.

    Consecutive operations on the same partition share a batch, so feed them in key order."""
    done = 0
    for batch in _batches(operations):
        sdk_batch = [(action, to_sdk_entity(entity), options) for action, entity, options in batch]
        try:
            client.submit_transaction(sdk_batch)
        except TableTransactionError as error:
            failed = batch[error.index][1] if error.index is not None and error.index < len(batch) else batch[0][1]
            raise BackupError(
                f"writing to table {client.table_name!r} failed at PartitionKey={failed['PartitionKey']!r} "
                f"RowKey={failed['RowKey']!r}: {str(error.message).splitlines()[0]}"
            ) from None
        except AzureError as error:
            raise StorageUnavailable(
                f"writing to table {client.table_name!r} failed: {str(error).splitlines()[0]}"
            ) from error
        done += len(batch)
        if on_progress:
            on_progress(done)
    return done
