"""What a backup attempt builds on, recorded where retention sees it before the manifest exists.

An incremental writes `<id>/builds-on/<parent id>` (empty; the name says it all) before it reads
anything, so pruning never deletes the parent of an incremental still being written: retention
reads only the manifests of complete backups, and an attempt in progress has none yet.
"""

from __future__ import annotations

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

from tablebackup.core.names import BACKUP_ID_RE

_BUILDS_ON = "builds-on"


def record_parent(container: ContainerClient, backup_id: str, parent_id: str) -> None:
    """Record that the attempt at `backup_id` builds on `parent_id`. Idempotent: a retried or
    redelivered attempt records the same name again."""
    container.upload_blob(f"{backup_id}/{_BUILDS_ON}/{parent_id}", b"", overwrite=True)


def recorded_parents(container: ContainerClient, backup_id: str) -> list[str]:
    """The backups the attempts at `backup_id` recorded they build on (one per parent, sorted)."""
    prefix = f"{backup_id}/{_BUILDS_ON}/"
    try:
        names = [blob.name[len(prefix) :] for blob in container.list_blobs(name_starts_with=prefix)]
    except ResourceNotFoundError:
        return []
    return sorted(name for name in names if BACKUP_ID_RE.match(name))
