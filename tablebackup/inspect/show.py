"""What one backup is: when and why it was taken, its kind and chain, its parts, the keys it
spans, its verifications, whether it was read from a secondary, and the erasures that apply.

Manifests, small tables and the first line of the backup are read, never the whole data:
showing a backup costs the same whatever its size. `latest` is resolved by the catalog alone (catalog.newest_state)."""

from __future__ import annotations

from tablebackup.core.clients import Storage
from tablebackup.core.errors import BackupError, InvalidInput
from tablebackup.core.names import BACKUP_ID_RE, table_key, validate_backup_id, validate_table_name
from tablebackup.repository import catalog, erasures
from tablebackup.repository.backupformat import Manifest
from tablebackup.repository.chain import chain_of, key_lines, state_size
from tablebackup.verify.results import verifications_by_backup

LATEST = "latest"


def resolve(storage: Storage, table: str, backup: str) -> tuple[Manifest, str]:
    """The backup named (its id, or `latest`) and why it is the one: `latest` means what the catalog
    says it means, for restore too. An id of another table is refused, not shown."""
    validate_table_name(table)
    if backup == LATEST:
        state = catalog.newest_state(storage.backups, table)
        return state.manifest, f"latest: {state.describe()}"
    validate_backup_id(backup)
    if table_key(BACKUP_ID_RE.fullmatch(backup)["table"]) != table_key(table):
        raise InvalidInput(f"backup {backup!r} is not a backup of table {table!r}")
    return catalog.read_manifest(storage.backups, backup), "named by its id"


def _link(manifest: Manifest) -> dict:
    return {
        "backup": manifest.backup,
        "kind": manifest.kind,
        "taken_at": manifest.summary()["taken_at"],
        "entities": manifest.entities,
        "reason": manifest.reason_json()["kind"],
    }


def _chain(storage: Storage, manifest: Manifest) -> dict:
    """Each link from the full backup up to this one, oldest first; a broken chain is described,
    since showing what is wrong is what `show` is for."""
    try:
        links = chain_of(storage.backups, manifest)
    except BackupError as error:  # a missing or refused parent
        return {"links": [_link(manifest)], "complete": False, "problem": str(error)}
    return {"links": [_link(link) for link in links], "complete": True, "problem": None}


def _key_range(storage: Storage, manifest: Manifest, erased: erasures.Erasures) -> dict:
    """The first key of the backup's state that is not erased (a key may itself name a person), and
    the last PartitionKey among the manifest's samples: finding the very last key would mean reading
    the whole backup."""
    try:
        first = next(erased.without_erased(key_lines(storage.backups, manifest)), None)
    except BackupError as error:
        return {"first": None, "last_sampled_partition_key": None, "problem": str(error)}
    samples = manifest.key_samples
    return {
        "first": None if first is None else {"PartitionKey": first["PartitionKey"], "RowKey": first["RowKey"]},
        "last_sampled_partition_key": samples[-1] if samples else None,
        "note": "the first key is read from the backup; the last is the manifest's last PartitionKey sample "
        "(keys after it may exist; an incremental records no samples): showing a backup never reads it whole",
    }


def describe_backup(storage: Storage, table: str, backup: str) -> dict:
    """The JSON of `show` and GET /api/backups/{id}."""
    manifest, why = resolve(storage, table, backup)
    try:
        latest = catalog.newest_state(storage.backups, table).backup == manifest.backup
    except BackupError:
        latest = False  # nothing (else) is `latest`: that is `list-backups`' to explain
    erased = erasures.load(storage, table)
    registered = len(erased.digests)
    summary = manifest.summary()
    return {
        **summary,
        "chosen": why,
        "latest": latest,
        "read_from_secondary": manifest.read_from_secondary,
        "table_entities": state_size(manifest),
        "chain": _chain(storage, manifest),
        "parts": [
            {"blob": part.blob, "entities": part.lines, "bytes": part.bytes, "sha256": part.sha256}
            for part in manifest.data_parts()
        ],
        "deleted_keys": manifest.deleted.lines if manifest.deleted else None,
        "key_range": _key_range(storage, manifest, erased),
        "verification": verifications_by_backup(storage, table).get(manifest.backup),
        "erasures": {
            "registered_keys": registered,
            "note": (
                f"{registered} erased key(s) of {table_key(table)} are left out of every restore, export and diff "
                "of this backup"
                if registered
                else "no erased keys: restoring this backup brings back everything it holds"
            ),
        },
    }
