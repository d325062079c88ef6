"""GDPR erasure: delete an entity and record its key in an erasure register, so that restore,
import and export skip it and an erased person never comes back from an old backup.

Backups are write-once, so the erased data stays in them until retention removes them; the register
is what keeps it out of every table. The register holds a SHA-256 digest of each key, not the key,
because a key may itself identify the person (an e-mail address as RowKey).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

from tablebackup.core.clients import Storage
from tablebackup.core.errors import InvalidInput, StorageUnavailable
from tablebackup.core.names import table_key, validate_table_name

log = logging.getLogger(__name__)


def key_digest(partition_key: str, row_key: str) -> str:
    return hashlib.sha256(orjson.dumps([partition_key, row_key])).hexdigest()


@dataclass
class Erasures:
    """The erased keys of one table, and how many entities were skipped because of them."""

    digests: set[str] = field(default_factory=set)
    skipped: int = 0

    def covers(self, entity: dict) -> bool:
        return bool(self.digests) and key_digest(entity["PartitionKey"], entity["RowKey"]) in self.digests

    def without_erased(self, entities: Iterable[dict]) -> Iterator[dict]:
        for entity in entities:
            if self.covers(entity):
                self.skipped += 1
                continue
            yield entity


def _unreachable(error: AzureError) -> StorageUnavailable:
    return StorageUnavailable(f"the erasure register is unreachable: {str(error).splitlines()[0]}")


def load(storage: Storage, table: str) -> Erasures:
    """The register's keys for one table, under any spelling of its name: erasures are recorded
    under the canonical name, but registers written before that used the name as typed (erasures
    are few: the register is read whole and fits in memory)."""
    client = storage.tables.get_table_client(storage.settings.erasures_table)
    key = table_key(table)
    try:
        rows = client.list_entities(select=["PartitionKey", "RowKey"])
        return Erasures(digests={row["RowKey"] for row in rows if table_key(row["PartitionKey"]) == key})
    except ResourceNotFoundError:
        return Erasures()
    except AzureError as error:
        if "TableNotFound" in str(error):
            return Erasures()
        raise _unreachable(error) from error


def erase(storage: Storage, table: str, partition_key: str, row_key: str, *, reason: str, actor: str) -> dict:
    """Delete the entity (if it is there) and record its key; erasing twice is harmless."""
    from tablebackup.audit.entries import record_operation  # the audit trail builds on this package

    validate_table_name(table)
    for name, value in (("partition key", partition_key), ("row key", row_key)):
        if not isinstance(value, str):
            raise InvalidInput(f"the {name} must be a string")
    if not reason.strip():
        raise InvalidInput("give the reason for the erasure (for example the request's reference)")
    digest = key_digest(partition_key, row_key)
    erased_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    try:
        existed = _delete(storage, table, partition_key, row_key)
        with contextlib.suppress(ResourceExistsError):
            storage.tables.create_table(storage.settings.erasures_table)
        storage.tables.get_table_client(storage.settings.erasures_table).upsert_entity(
            {
                "PartitionKey": table_key(table),
                "RowKey": digest,
                "reason": reason,
                "actor": actor,
                "erasedAt": erased_at,
            }
        )
    except AzureError as error:
        raise _unreachable(error) from error
    result = {"table": table, "key_sha256": digest, "deleted": existed, "erased_at": erased_at, "reason": reason}
    log.info("entity erased: table=%s key_sha256=%s deleted=%s", table, digest, existed, extra=result)
    record_operation(storage, "ERASE", actor, table, result)
    return result


def _delete(storage: Storage, table: str, partition_key: str, row_key: str) -> bool:
    client = storage.tables.get_table_client(table)
    try:
        client.get_entity(partition_key, row_key, select=["PartitionKey"])
    except ResourceNotFoundError:
        return False
    client.delete_entity(partition_key, row_key)
    return True
