"""Checking a whole backup before it is trusted: one streaming pass over every blob of every link of
its chain checks each blob's size and SHA-256, decodes every line as an entity, checks that keys
strictly increase in the service's order (across a backup's parts too: restore's mirror and the
merge of a chain rely on it), and counts the lines of each blob and of each backup against the
manifest.

Verification reports what this finds; a restore runs it before its first write and refuses a backup
with any finding (unless forced). Memory stays bounded whatever the backup's size: lines are
streamed, and only the first few findings of each kind are kept (all are counted).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from azure.core.exceptions import AzureError
from azure.storage.blob import ContainerClient

from tablebackup.core.entities import decode_line, service_order
from tablebackup.core.errors import BackupError, DamagedBackup, InvalidInput, StorageUnavailable
from tablebackup.repository.backupformat import BlobInfo, DataReader, Manifest
from tablebackup.repository.chain import chain_of

# Findings of one kind named in a report; the count covers the rest.
MAX_REPORTED = 5


@dataclass
class Findings:
    """Problems of one kind: the first few by name, all of them counted."""

    named: list[str] = field(default_factory=list)
    total: int = 0

    def add(self, text: str) -> None:
        self.total += 1
        if len(self.named) < MAX_REPORTED:
            self.named.append(text)

    def __bool__(self) -> bool:
        return self.total > 0

    def describe(self) -> str:
        more = self.total - len(self.named)
        return "; ".join(self.named) + (f"; and {more} more" if more else "")


@dataclass
class ChainReport:
    """What one pass over a backup's chain found."""

    links: list[Manifest]
    blobs: int = 0
    mismatches: Findings = field(default_factory=Findings)  # size or SHA-256 differs from the manifest
    bad_lines: Findings = field(default_factory=Findings)  # a line that is no entity, or a cut gzip stream
    miscounts: Findings = field(default_factory=Findings)  # lines per blob or per backup differ
    disorder: Findings = field(default_factory=Findings)  # a key not after the one before it
    missing_fields: Findings = field(default_factory=Findings)  # required fields absent or empty

    def problems(self) -> str | None:
        """Every kind of damage found, in one line; None for a sound backup."""
        kinds = (self.mismatches, self.bad_lines, self.miscounts, self.disorder)
        found = [kind.describe() for kind in kinds if kind]
        return "; ".join(found) or None


def inspect_chain(container: ContainerClient, manifest: Manifest, required: Iterable[str] = ()) -> ChainReport:
    """Stream every blob of the backup and of every backup it builds on, once each. Raises
    DamagedBackup when the chain itself is unusable (a parent missing or not its table's)."""
    report = ChainReport(links=chain_of(container, manifest))
    for link in report.links:
        data_parts = link.data_parts()
        if sum(part.lines for part in data_parts) != link.entities:
            report.miscounts.add(f"{link.backup}: its parts hold a different number of entities than {link.entities}")
        data_blobs = {part.blob for part in data_parts}
        order = _KeyOrder()  # one stream over the parts; the deleted and key blobs are streams of their own
        for info in link.blobs():
            report.blobs += 1
            if info.blob not in data_blobs:
                order = _KeyOrder()
            _scan_blob(container, link, info, list(required) if info.blob in data_blobs else [], order, report)
    return report


class _KeyOrder:
    """Remembers the last key of a stream, to tell whether the next one sorts after it."""

    def __init__(self):
        self.last: tuple[bytes, bytes] | None = None

    def follows(self, entity: dict) -> bool:
        try:
            key = service_order(entity)
        except UnicodeEncodeError:  # a key the order cannot be computed for: not judged here
            return True
        ordered, self.last = self.last is None or key > self.last, key
        return ordered


def _scan_blob(
    container: ContainerClient, link: Manifest, info: BlobInfo, required: list[str], order: _KeyOrder, report
) -> None:
    reader = DataReader(container, link, info.blob)
    lines = 0
    try:
        for number, line in enumerate(reader.lines(), start=1):
            lines += 1
            try:
                entity = decode_line(line)
            except InvalidInput as error:
                report.bad_lines.add(f"{info.blob} line {number}: {error}")
                continue
            if not order.follows(entity):
                key = f"({entity['PartitionKey']!r}, {entity['RowKey']!r})"
                report.disorder.add(f"{info.blob} line {number}: key {key} does not sort after the key before it")
            for name in required:
                if entity.get(name) in (None, ""):
                    key = f"({entity['PartitionKey']!r}, {entity['RowKey']!r})"
                    report.missing_fields.add(f"{info.blob} line {number} {key}: {name}")
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        report.bad_lines.add(f"{info.blob} is not a complete gzip stream after {lines} lines: {error}")
    except AzureError as error:
        raise StorageUnavailable(f"reading blob {info.blob!r} failed: {str(error).splitlines()[0]}") from error
    except BackupError as error:  # the blob is missing
        report.bad_lines.add(str(error))
    if (reader.bytes, reader.sha256) != (info.bytes, info.sha256):
        report.mismatches.add(
            f"{info.blob}: {reader.bytes} bytes, SHA-256 {reader.sha256}; "
            f"the manifest says {info.bytes} bytes, SHA-256 {info.sha256}"
        )
    if lines != info.lines:
        report.miscounts.add(f"{info.blob}: {lines} lines, the manifest says {info.lines}")


def check_whole_backup(container: ContainerClient, manifest: Manifest) -> None:
    """Refuse a backup unless every blob of its chain matches its checksum, every line decodes as an
    entity and every count matches its manifest."""
    problems = inspect_chain(container, manifest).problems()
    if problems:
        raise DamagedBackup(f"backup {manifest.backup!r} is damaged: {problems}; use --force to restore anyway")
