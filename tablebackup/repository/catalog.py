"""The catalog of backups: the complete backups in the container, found by their manifests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob import ContainerClient
from pydantic import ValidationError

from tablebackup.core.errors import DamagedBackup, NotFound, StorageUnavailable
from tablebackup.core.names import BACKUP_ID_RE, table_key, validate_backup_id, validate_table_name
from tablebackup.repository.backupformat import MANIFEST_BLOB, Manifest, manifest_blob_name

# A backup still being written has no manifest yet; after a day an attempt can only be debris of a
# crashed or abandoned one (retention deletes those).
INCOMPLETE_GRACE = timedelta(days=1)


def started_at(backup_id: str) -> datetime:
    """When a backup attempt started: its id's stamp, so no manifest needs reading."""
    stamp = BACKUP_ID_RE.fullmatch(validate_backup_id(backup_id))["stamp"]
    return datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)


def _unreachable(container: ContainerClient, error: AzureError) -> StorageUnavailable:
    return StorageUnavailable(
        f"backup storage at {container.url.split('?')[0]} is unreachable: {str(error).splitlines()[0]}"
    )


def read_manifest(container: ContainerClient, backup_id: str) -> Manifest:
    """The manifest of one backup; NotFound if the backup does not exist or is incomplete."""
    validate_backup_id(backup_id)
    try:
        data = container.download_blob(manifest_blob_name(backup_id)).readall()
    except ResourceNotFoundError:
        raise NotFound(f"backup {backup_id!r} not found (or incomplete: it has no manifest)") from None
    except AzureError as error:
        raise _unreachable(container, error) from error
    try:
        manifest = Manifest.model_validate_json(data)
    except ValidationError as error:
        raise DamagedBackup(f"backup {backup_id!r} has an unreadable manifest: {error.errors()[0]['msg']}") from None
    problem = manifest.inconsistency(backup_id)
    if problem:
        raise DamagedBackup(f"backup {backup_id!r} is refused: its manifest {problem}")
    return manifest


def spellings(container: ContainerClient, table: str) -> list[str]:
    """Every spelling of the table among the backup ids. New ids use the lowercase name; older
    ones the spelling they were taken under. Only the top level is listed (one entry per backup),
    and only under the name's first letter in either case."""
    key = table_key(table)
    found = {key}
    for first in dict.fromkeys((key[0], key[0].upper())):
        for item in container.walk_blobs(name_starts_with=first, delimiter="/"):
            match = BACKUP_ID_RE.match(item.name.rstrip("/"))
            if match and table_key(match["table"]) == key:
                found.add(match["table"])
    return sorted(found)


def backup_attempts(container: ContainerClient, table: str) -> list[tuple[str, bool]]:
    """Every backup of the table, in any spelling, that wrote anything, newest first, with whether
    it is complete (has its manifest)."""
    validate_table_name(table)
    complete: dict[str, bool] = {}
    try:
        for spelling in spellings(container, table):
            # Table names hold no '-': this prefix is this spelling's backups only.
            for blob in container.list_blobs(name_starts_with=f"{spelling}-"):
                backup_id, _, leaf = blob.name.partition("/")
                if BACKUP_ID_RE.match(backup_id):
                    complete[backup_id] = complete.get(backup_id, False) or leaf == MANIFEST_BLOB
    except ResourceNotFoundError:
        return []  # no container yet: no backups
    except AzureError as error:
        raise _unreachable(container, error) from error
    # Newest first by the id's timestamp (it sorts as text), whatever the spelling.
    return sorted(complete.items(), key=lambda item: (BACKUP_ID_RE.match(item[0])["stamp"], item[0]), reverse=True)


def backup_ids(container: ContainerClient, table: str) -> list[str]:
    """Ids of the table's complete backups, newest first."""
    return [backup_id for backup_id, complete in backup_attempts(container, table) if complete]


def backed_up_tables(container: ContainerClient) -> list[str]:
    """Every table with at least one backup attempt in the container, by its canonical name."""
    tables = set()
    try:
        for blob in container.list_blobs():
            match = BACKUP_ID_RE.match(blob.name.partition("/")[0])
            if match:
                tables.add(table_key(match["table"]))
    except ResourceNotFoundError:
        return []
    except AzureError as error:
        raise _unreachable(container, error) from error
    return sorted(tables)


def list_backups(container: ContainerClient, table: str) -> list[Manifest]:
    """The table's complete backups, newest first."""
    return [read_manifest(container, backup_id) for backup_id in backup_ids(container, table)]


def backup_summaries(container: ContainerClient, table: str) -> list[dict]:
    """What list-backups shows: each complete backup's summary, newest first. A backup whose
    manifest is refused is listed as `{"backup", "table", "refused": why}`, so it hides none of
    the others."""
    listed = []
    for backup_id in backup_ids(container, table):
        try:
            listed.append(read_manifest(container, backup_id).summary())
        except DamagedBackup as error:
            listed.append({"backup": backup_id, "table": table, "refused": str(error)})
    return listed


def latest_backup(container: ContainerClient, table: str) -> Manifest:
    ids = backup_ids(container, table)
    if not ids:
        raise NotFound(f"table {table!r} has no complete backup")
    return read_manifest(container, ids[0])
