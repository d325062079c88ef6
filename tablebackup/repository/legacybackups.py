"""The seed's old daily backups: one blob per run, `<table>-<ISO time with ':' and '.' replaced by
'-'>.json` (e.g. `candidates-2025-01-13T02-00-00-000Z.json`) at the top of the backup container,
holding JSON.stringify of the JS SDK's listEntities(). They have no manifest and no checksum; their
time is the one in their name. They are listed beside the app's backups and can be restored (reading
them is tablebackup.transfer.dialects' job); retention never deletes them (tablebackup.backup.retention
only knows backup ids).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

from tablebackup.core.errors import InvalidInput, NotFound
from tablebackup.core.names import table_key, validate_table_name
from tablebackup.repository.catalog import _unreachable

KIND = "legacy"
LEGACY_NAME_RE = re.compile(
    r"^(?P<table>[A-Za-z][A-Za-z0-9]{2,62})-(?P<stamp>\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z)\.json$"
)


@dataclass(frozen=True)
class LegacyBackup:
    backup: str  # the blob name
    table: str
    taken_at: datetime
    bytes: int
    kind: str = KIND

    def summary(self) -> dict:
        """The fields list-backups shows for every backup; what an old backup cannot tell is None."""
        at = self.taken_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {
            "backup": self.backup,
            "table": self.table,
            "kind": KIND,
            "legacy": True,
            "parent": None,
            "entities": None,
            "bytes": self.bytes,
            "sha256": None,
            "taken_at": at,
            "finished_at": at,
            "source_account": None,
        }


def is_legacy_name(name: str) -> bool:
    return isinstance(name, str) and bool(LEGACY_NAME_RE.match(name))


def _taken_at(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H-%M-%S-%fZ").replace(tzinfo=UTC)


def legacy_backups(container: ContainerClient, table: str) -> list[LegacyBackup]:
    """The table's old backups, newest first."""
    validate_table_name(table)
    key = table_key(table)
    found = []
    try:
        # Table names are case-insensitive and the old function used whatever spelling it was given.
        for first in dict.fromkeys((key[0], key[0].upper())):
            for item in container.walk_blobs(name_starts_with=first, delimiter="/"):
                match = LEGACY_NAME_RE.match(item.name)
                if match and table_key(match["table"]) == key and not item.name.endswith("/"):
                    found.append(LegacyBackup(item.name, match["table"], _taken_at(match["stamp"]), item.size))
    except ResourceNotFoundError:
        return []
    except AzureError as error:
        raise _unreachable(container, error) from error
    return sorted(found, key=lambda backup: backup.taken_at, reverse=True)


def read_legacy_backup(container: ContainerClient, name: str) -> LegacyBackup:
    match = LEGACY_NAME_RE.match(name) if isinstance(name, str) else None
    if not match:
        raise InvalidInput(f"invalid legacy backup name {name!r}: expected <table>-<yyyy-mm-ddThh-mm-ss-fffZ>.json")
    try:
        properties = container.get_blob_client(name).get_blob_properties()
    except ResourceNotFoundError:
        raise NotFound(f"legacy backup {name!r} not found") from None
    except AzureError as error:
        raise _unreachable(container, error) from error
    return LegacyBackup(name, match["table"], _taken_at(match["stamp"]), properties.size)
