"""The catalog of backups: the complete backups in the container, found by their manifests, and the
one answer to "which backup is good": what `latest` means.

`latest` is the table's newest known state (newest_state):
- the newest complete *regular* backup (scheduled or on demand). A safety backup (taken just before
  a restore or an import wrote into the table: Manifest.safety) is never an implicit choice; it is
  restored only by its id;
- unless a completed, unfiltered mirror restore in place made the table exactly some backup's state
  after that backup started: then that backup is the newest known state, until a regular backup
  starts after the restore completed. Each in-place restore leaves a write-once record (RestoreRecord)
  under `_restores/<table>/` in the backup container, written after its last write; a record of
  an unfiltered mirror ("whole") is what moves `latest`. Records are never overwritten, so the
  container's immutability policy (WORM) allows them.

Restore (--backup latest, --as-of), drills, verification, undelete's fallback, incrementals' parents,
retention and the status all ask here.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContainerClient
from pydantic import BaseModel, ConfigDict, ValidationError

from tablebackup.core.errors import BackupError, DamagedBackup, NotFound, StorageUnavailable
from tablebackup.core.names import BACKUP_ID_RE, table_key, validate_backup_id, validate_table_name
from tablebackup.repository.backupformat import MANIFEST_BLOB, Manifest, manifest_blob_name

log = logging.getLogger(__name__)

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


def refused_backup(backup: str, message: str) -> DamagedBackup:
    """The refusal of the backup an implicit choice arrived at (its manifest is refused): nothing
    older is chosen silently instead. It names the backup (`.backup`), and stays a DamagedBackup."""
    error = DamagedBackup(message)
    error.backup = backup
    return error


def no_known_state(message: str, skipped: list[str], refused: list[str]) -> NotFound:
    """Nothing an implicit choice may take; `.skipped` and `.refused` name the newer backups passed
    over (safety backups, refused manifests). Stays a NotFound (HTTP 404, CLI exit 1)."""
    error = NotFound(message)
    error.skipped, error.refused = skipped, refused
    return error


def implicit_candidate(manifest: Manifest) -> bool:
    """Whether an implicit choice (latest, --as-of, a drill, undelete's fallback, an incremental's
    parent) may take this backup: every complete backup but a safety backup."""
    return not manifest.safety


# Records of in-place restores


RESTORES_FOLDER = "_restores"
_STAMP = "%Y%m%dT%H%M%S.%fZ"


class RestoreRecord(BaseModel):
    """A completed restore into the table itself. `whole`: an unfiltered mirror, so the table then
    held exactly the backup's state."""

    model_config = ConfigDict(extra="allow", frozen=True)

    table: str
    backup: str
    mode: str
    whole: bool
    started_at: datetime
    restored_at: datetime
    filter: str | None = None
    safety_backup: str | None = None
    actor: str | None = None
    operation: str | None = None

    def as_json(self) -> dict:
        data = self.model_dump(mode="json")
        data["started_at"], data["restored_at"] = _iso(self.started_at), _iso(self.restored_at)
        return data


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _records_prefix(table: str) -> str:
    return f"{RESTORES_FOLDER}/{table_key(table)}/"


def record_restore(container: ContainerClient, record: RestoreRecord) -> str:
    """Write the record of a completed in-place restore, once (a blob of its own: never an
    overwrite). A write applied whose answer was lost is retried and finds these very bytes."""
    kind = "whole" if record.whole else "part"
    stamp = f"{record.restored_at.astimezone(UTC):{_STAMP}}"
    name = f"{_records_prefix(record.table)}{stamp}-{kind}-{uuid.uuid4().hex}.json"
    content = record.model_dump_json(indent=2).encode()
    try:
        container.upload_blob(name, content, overwrite=False)
    except ResourceExistsError:
        if container.get_blob_client(name).download_blob().readall() != content:
            raise BackupError(f"the restore record {name!r} already exists with other content") from None
    except AzureError as error:
        raise _unreachable(container, error) from error
    return name


def _record_names(container: ContainerClient, table: str) -> list[tuple[datetime, bool, str]]:
    """(restored at, whole?, blob name) of every record of the table, newest first."""
    found = []
    try:
        for blob in container.list_blobs(name_starts_with=_records_prefix(table)):
            stamp, _, rest = blob.name.rsplit("/", 1)[-1].partition("-")
            try:
                at = datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC)
            except ValueError:
                continue  # not a record
            found.append((at, rest.startswith("whole-"), blob.name))
    except ResourceNotFoundError:
        return []
    except AzureError as error:
        raise _unreachable(container, error) from error
    return sorted(found, reverse=True)


def newest_restore(
    container: ContainerClient, table: str, *, whole_only: bool = False, at: datetime | None = None
) -> RestoreRecord | None:
    """The newest record of an in-place restore of the table completed by `at` (default: ever);
    with whole_only, of an unfiltered mirror. An unreadable record is refused, not passed over."""
    for restored_at, whole, name in _record_names(container, table):
        if (at is not None and restored_at > at) or (whole_only and not whole):
            continue
        try:
            return RestoreRecord.model_validate_json(container.download_blob(name).readall())
        except ResourceNotFoundError:
            continue  # deleted meanwhile
        except ValidationError as error:
            raise DamagedBackup(f"the restore record {name!r} is unreadable: {error.errors()[0]['msg']}") from None
        except AzureError as error:
            raise _unreachable(container, error) from error
    return None


# What `latest` means


@dataclass(frozen=True)
class KnownState:
    """The backup an implicit choice restores, and why."""

    manifest: Manifest
    since: datetime  # when the table began to hold this state: the backup's start, or the restore's
    known_at: datetime  # when the state was whole: the backup's finish, or the restore's end
    restore: RestoreRecord | None = None  # the mirror restore in place that made it the newest
    skipped: list[str] = field(default_factory=list)  # newer safety backups passed over
    refused: list[str] = field(default_factory=list)  # newer backups whose manifests are refused

    @property
    def backup(self) -> str:
        return self.manifest.backup

    def describe(self) -> str:
        if self.restore is not None:
            by = f" by {self.restore.actor}" if self.restore.actor else ""
            return (
                f"the table's newest known state: backup {self.backup} was restored into it by an unfiltered "
                f"mirror at {_iso(self.restore.restored_at)}{by}, and no backup has started since"
            )
        text = f"the newest regular backup {self.backup}"
        if self.skipped:
            text += (
                f" ({len(self.skipped)} newer safety backup(s) passed over, e.g. {self.skipped[0]}: "
                "a safety backup is restored only by its id)"
            )
        return text

    def as_json(self) -> dict:
        return {
            "backup": self.backup,
            "why": self.describe(),
            "since": _iso(self.since),
            "known_at": _iso(self.known_at),
            "restored_in_place": self.restore.as_json() if self.restore else None,
            "safety_backups_passed_over": self.skipped,
        }


def newest_state(
    container: ContainerClient,
    table: str,
    at: datetime | None = None,
    *,
    finished_by: bool = False,
    skip_refused: bool = False,
    max_refused: int | None = None,
) -> KnownState:
    """The table's newest known state (see the module docstring), or as of `at`: from the regular
    backups taken (with finished_by: finished) at or before it and the restores completed by then.

    A refused manifest on the way raises DamagedBackup naming it (refused_backup), unless
    skip_refused (the status reports those, and stops after max_refused). NotFound (no_known_state)
    when there is nothing to choose."""
    validate_table_name(table)
    at = None if at is None else (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    skipped: list[str] = []
    refused: list[str] = []
    regular = None
    for backup_id in backup_ids(container, table):
        if at is not None and started_at(backup_id) > at:
            continue
        try:
            manifest = read_manifest(container, backup_id)
        except NotFound:
            continue  # pruned since the listing
        except DamagedBackup as error:
            if not skip_refused:
                raise refused_backup(backup_id, str(error)) from None
            refused.append(backup_id)
            if max_refused is not None and len(refused) >= max_refused:
                break
            continue
        if finished_by and manifest.finished_at.astimezone(UTC) > at:
            continue
        if not implicit_candidate(manifest):
            skipped.append(backup_id)
            continue
        regular = manifest
        break
    record = newest_restore(container, table, whole_only=True, at=at)
    if record is not None and (regular is None or regular.started_at.astimezone(UTC) < record.restored_at):
        try:
            manifest = read_manifest(container, record.backup)
        except NotFound:
            raise NotFound(
                f"the newest known state of {table!r} is backup {record.backup} (restored in place by mirror at "
                f"{_iso(record.restored_at)}), which no longer exists: restore a backup by its id, and take a backup"
            ) from None
        except DamagedBackup as error:
            raise refused_backup(record.backup, str(error)) from None
        return KnownState(manifest, record.started_at, record.restored_at, record, skipped, refused)
    if regular is None:
        when = ""
        if at is not None:
            when = f" {'finished' if finished_by else 'taken'} at or before {_iso(at)}"
        extra = ""
        if skipped:
            extra = f" other than {len(skipped)} safety backup(s), which are restored only by their id (list-backups)"
        if refused:
            extra += f"; the manifest of {refused[0]} is refused"
        raise no_known_state(f"table {table!r} has no complete backup{when}{extra}", skipped, refused)
    return KnownState(regular, regular.started_at, regular.finished_at, None, skipped, refused)


def latest_backup(container: ContainerClient, table: str) -> Manifest:
    """The backup `latest` means: the table's newest known state."""
    return newest_state(container, table).manifest


def regular_manifests(container: ContainerClient, table: str) -> Iterator[tuple[str, Manifest | DamagedBackup]]:
    """(id, manifest) of the table's complete backups an implicit choice may take, newest first; a
    refused manifest comes as its DamagedBackup, for the caller to skip or stop at."""
    for backup_id in backup_ids(container, table):
        try:
            manifest = read_manifest(container, backup_id)
        except NotFound:
            continue
        except DamagedBackup as error:
            yield backup_id, error
            continue
        if implicit_candidate(manifest):
            yield backup_id, manifest
