"""Restoring one of the seed's old daily backups (tablebackup.repository.legacybackups): the blob is read as
the JS SDK wrote it (tablebackup.transfer.dialects), typed by the request's rules, and validated whole, so a
malformed blob or a property without a type is refused before the first write."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from tablebackup.core.clients import Storage
from tablebackup.core.errors import InvalidInput
from tablebackup.repository.legacybackups import LegacyBackup
from tablebackup.transfer.importer import InputScan, read_entities, validate_input
from tablebackup.transfer.sources import BlobSource
from tablebackup.transfer.typerules import TypeRules


@dataclass(frozen=True)
class LegacyRead:
    source: BlobSource
    scan: InputScan

    def entities(self) -> Iterator[dict]:
        return read_entities(self.source, self.scan.format, self.scan.rules)


def read_legacy(storage: Storage, backup: LegacyBackup, mode: str, rules: TypeRules) -> LegacyRead:
    source = BlobSource(storage.backups, backup.backup)
    scan = validate_input(source, "json", rules=rules)
    if mode in ("missing", "mirror") and scan.out_of_order is not None:
        raise InvalidInput(
            f"mode {mode} needs {backup.backup} in key order, but its entity on line {scan.out_of_order} is not "
            "after the one before; use mode replace or merge"
        )
    return LegacyRead(source, scan)
