"""What work in progress needs, recorded where retention sees it.

An incremental writes `<id>/builds-on/<parent id>` (empty; the name says it all) before it reads
anything, so pruning never deletes the parent of an incremental still being written: retention
reads only the manifests of complete backups, and an attempt in progress has none yet.

A restore holds the backup it reads the same way: before its first read it writes
`_holds/<table>/<backup id>/<UTC stamp>-<token>` (empty), and deletes it when it ends. Retention
keeps a held backup and its whole chain (re-reading the holds before each deletion). A hold counts
for HOLD_GRACE from its stamp: a crashed restore cannot hold a backup for ever, and where the
container's immutability policy forbids the deletion, the hold simply runs out.

A scheduled run that plans a table's full backup on FULL_BACKUP_DAY records
`_fulls/<table>/<UTC date>` (empty): a later run that day (an hourly schedule) plans an incremental
even while that full backup, too long for an hour, has not finished yet.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, date, datetime, timedelta

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

from tablebackup.core.names import BACKUP_ID_RE, table_key

log = logging.getLogger(__name__)

_BUILDS_ON = "builds-on"
_HOLDS = "_holds"
_STAMP = "%Y%m%dT%H%M%S.%fZ"
# As long as a backup attempt counts as in progress (a restore that ran longer is held again by its
# next delivery or rerun).
HOLD_GRACE = timedelta(days=1)


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


_FULLS = "_fulls"


def _full_marker(table: str, day: date) -> str:
    return f"{_FULLS}/{table_key(table)}/{day.isoformat()}"


def record_full_planned(container: ContainerClient, table: str, day: date) -> None:
    """Record that a scheduled run planned the table's full backup on this UTC day. Best effort:
    without it, a later run that day may plan a second full backup, which costs time, not data."""
    try:
        container.upload_blob(_full_marker(table, day), b"", overwrite=True)
    except AzureError as error:
        log.warning("the full backup of %s planned today is not recorded: %s", table, str(error).splitlines()[0])


def full_planned(container: ContainerClient, table: str, day: date) -> bool:
    """Whether a scheduled run planned the table's full backup on this UTC day."""
    try:
        return container.get_blob_client(_full_marker(table, day)).exists()
    except AzureError:
        return False  # unknown: the backups' own dates still decide


def _holds_prefix(table: str) -> str:
    return f"{_HOLDS}/{table_key(table)}/"


def hold_backup(container: ContainerClient, backup_id: str, now: datetime | None = None) -> str:
    """Record that a restore reads `backup_id` from now on; returns the hold's name for release_hold."""
    table = BACKUP_ID_RE.match(backup_id)["table"]
    stamp = f"{(now or datetime.now(UTC)).astimezone(UTC):{_STAMP}}"
    name = f"{_holds_prefix(table)}{backup_id}/{stamp}-{uuid.uuid4().hex}"
    container.upload_blob(name, b"", overwrite=True)  # a name of its own: a retry writes the same empty blob
    return name


def release_hold(container: ContainerClient, name: str) -> None:
    """Best effort: a hold that cannot be deleted (an immutability policy, an outage) runs out."""
    try:
        container.delete_blob(name)
    except ResourceNotFoundError:
        pass
    except AzureError as error:
        log.info("restore hold %s left to run out: %s", name, str(error).splitlines()[0])


def _holds(container: ContainerClient, table: str) -> list[tuple[str, datetime, str]]:
    """(backup id, stamp, name) of every hold on the table's backups."""
    found = []
    try:
        for blob in container.list_blobs(name_starts_with=_holds_prefix(table)):
            backup_id, _, leaf = blob.name[len(_holds_prefix(table)) :].partition("/")
            try:
                at = datetime.strptime(leaf.partition("-")[0], _STAMP).replace(tzinfo=UTC)
            except ValueError:
                continue
            if BACKUP_ID_RE.match(backup_id):
                found.append((backup_id, at, blob.name))
    except ResourceNotFoundError:
        return []
    return found


def held_backups(container: ContainerClient, table: str, now: datetime) -> dict[str, str]:
    """backup id -> the hold on it, for every restore of the table in progress at `now`."""
    return {backup_id: name for backup_id, at, name in _holds(container, table) if now - at <= HOLD_GRACE}


def stale_holds(container: ContainerClient, table: str, now: datetime) -> list[str]:
    """Holds that ran out: left by restores that ended without deleting them."""
    return [name for _, at, name in _holds(container, table) if now - at > HOLD_GRACE]
