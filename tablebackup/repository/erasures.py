"""GDPR erasure: delete an entity and record its key in an erasure register, so that restore,
import and export skip it and an erased person never comes back from an old backup.

Backups are write-once, so the erased data stays in them until retention removes them; the register
is what keeps it out of every table. The register holds a SHA-256 digest of each key, not the key,
because a key may itself identify the person (an e-mail address as RowKey).

The register lives where the backups are: one small blob per erased key, `_erasures/<table>/<digest>`,
in the backup container. It must outlive the data account (a restore into a new account after the
data account is lost reads it there) and be as hard to tamper with as the backups it guards. No
table name starts with `_`, so these blobs never read as a backup. Registers that earlier versions
kept in the data account's ERASURES_TABLE are still honoured, and each digest found there is copied
into the backup container the first time it is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

from tablebackup.core.clients import Storage
from tablebackup.core.errors import BackupError, InvalidInput, StorageUnavailable
from tablebackup.core.names import table_key, validate_table_name
from tablebackup.storage.tables import table_exists

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


REGISTER_PREFIX = "_erasures/"


def _unreachable(error: AzureError) -> StorageUnavailable:
    return StorageUnavailable(f"the erasure register is unreachable: {str(error).splitlines()[0]}")


def _register_prefix(table: str) -> str:
    return f"{REGISTER_PREFIX}{table_key(table)}/"


def _registered(storage: Storage, table: str) -> set[str]:
    """The digests registered beside the backups."""
    prefix = _register_prefix(table)
    try:
        return {blob.name[len(prefix) :] for blob in storage.backups.list_blobs(name_starts_with=prefix)}
    except ResourceNotFoundError:
        return set()  # no backup container yet
    except AzureError as error:
        raise _unreachable(error) from error


def _data_account_rows(storage: Storage, table: str) -> list[dict]:
    """Rows of the register earlier versions kept in the data account's ERASURES_TABLE: read where
    backups read the data account (its secondary while READ_FROM_SECONDARY is set), so a restore
    into another account during a regional outage still honours them."""
    client = storage.source_tables.get_table_client(storage.settings.erasures_table)
    key = table_key(table)
    try:
        return [row for row in client.list_entities() if table_key(row["PartitionKey"]) == key]
    except ResourceNotFoundError:
        return []
    except AzureError as error:
        if "TableNotFound" in str(error):
            return []
        raise _unreachable(error) from error


def _register(storage: Storage, table: str, digest: str, record: dict) -> None:
    """Write one key's blob. Create-only: a second erasure of the same key, or a retry of a write
    whose answer was lost, finds the blob there, which is the truth either way."""
    storage.ensure_backup_container()
    blob = storage.backups.get_blob_client(_register_prefix(table) + digest)
    with contextlib.suppress(ResourceExistsError):
        blob.upload_blob(orjson.dumps(record), overwrite=False)


def count(storage: Storage, table: str) -> int:
    """How many keys are registered as erased for the table, in either home; reads only."""
    registered = _registered(storage, table)
    return len(registered | {row["RowKey"] for row in _data_account_rows(storage, table)})


def load(storage: Storage, table: str) -> Erasures:
    """The register's keys for one table, under any spelling of its name (erasures are few: the
    register is read whole and fits in memory). Digests found only in the data account's old
    register are brought over to the backup container."""
    registered = _registered(storage, table)
    older = [row for row in _data_account_rows(storage, table) if row["RowKey"] not in registered]
    for row in older:
        record = {name: row.get(name) for name in ("reason", "actor", "erasedAt")}
        try:
            _register(storage, table, row["RowKey"], {"table": table_key(table), **record})
        except (AzureError, BackupError) as error:
            # Still applied below; copied on a later read once the backup container can be written.
            log.warning("erasure register: could not copy %s from the data account: %s", row["RowKey"], error)
    return Erasures(digests=registered | {row["RowKey"] for row in older})


def _has_backups(storage: Storage, table: str) -> bool:
    from tablebackup.repository import catalog

    return bool(catalog.backup_attempts(storage.backups, table))


def erase(
    storage: Storage,
    table: str,
    partition_key: str,
    row_key: str,
    *,
    reason: str,
    actor: str,
    record_audit: Callable[[dict], None] | None = None,
) -> dict:
    """Register the key, then delete the entity (if it is there); erasing twice is harmless. The
    key is registered first: if the delete then fails, the entity can still never come back."""
    validate_table_name(table)
    for name, value in (("partition key", partition_key), ("row key", row_key)):
        if not isinstance(value, str):
            raise InvalidInput(f"the {name} must be a string")
    if not reason.strip():
        raise InvalidInput("give the reason for the erasure (for example the request's reference)")
    live = table_exists(storage, table)
    if not live and not _has_backups(storage, table):
        raise InvalidInput(f"table {table!r} neither exists nor has a backup: check its name")
    if not (partition_key.strip() and row_key.strip()) and not (
        live and _exists(storage, table, partition_key, row_key)
    ):
        blank = " and ".join(n for n, v in (("partition key", partition_key), ("row key", row_key)) if not v.strip())
        raise InvalidInput(
            f"the {blank} is blank and no entity with these keys is in {table!r}: check what gave the keys"
        )
    digest = key_digest(partition_key, row_key)
    erased_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    if record_audit is None:
        from tablebackup.audit.entries import operation_entries  # the audit trail builds on this package

        # One pair of ERASE entries, started before the key is registered. Only the key's digest is in them.
        intent = {"table": table, "key_sha256": digest, "erased_at": erased_at, "reason": reason}
        audit = operation_entries(storage, "ERASE", actor, table, intent)
    else:
        audit = contextlib.nullcontext()
    with audit as entries:
        try:
            _register(
                storage,
                table,
                digest,
                {"table": table_key(table), "reason": reason, "actor": actor, "erasedAt": erased_at},
            )
            existed = live and _delete(storage, table, partition_key, row_key)
        except AzureError as error:
            raise _unreachable(error) from error
        result = {"table": table, "key_sha256": digest, "deleted": existed, "erased_at": erased_at, "reason": reason}
        if entries is not None:
            entries.result = result
    log.info("entity erased: table=%s key_sha256=%s deleted=%s", table, digest, existed, extra=result)
    if record_audit is not None:
        record_audit(result)
    return result


def _exists(storage: Storage, table: str, partition_key: str, row_key: str) -> bool:
    try:
        storage.tables.get_table_client(table).get_entity(partition_key, row_key, select=["PartitionKey"])
    except ResourceNotFoundError:
        return False
    return True


def _delete(storage: Storage, table: str, partition_key: str, row_key: str) -> bool:
    """Whether this call deleted the entity. A delete whose answer was lost and that is retried
    finds nothing: the entity is gone either way, and it was there when this call began."""
    if not _exists(storage, table, partition_key, row_key):
        return False
    with contextlib.suppress(ResourceNotFoundError):
        storage.tables.get_table_client(table).delete_entity(partition_key, row_key)
    return True
