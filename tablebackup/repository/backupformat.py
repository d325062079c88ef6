"""The backup format: blob names, the manifest, and the streaming gzip NDJSON data blob.

A backup `<table>-<yyyymmddThhmmss.ffffff>Z` is two blobs in the backup container:
  <id>/data.ndjson.gz   gzip NDJSON, one entity per line (see tablebackup.core.entities)
  <id>/manifest.json    written last; a backup without it is incomplete and never used
Both are write-once. Names start with `<table>-` so lifecycle prefix rules can match a table.

Every manifest records why its backup was taken (`reason`, a BackupReason): by the schedule, on
demand, or as the safety backup of a named restore or import. A manifest written before the reason
was recorded has none and counts as a regular backup (tablebackup.repository.catalog).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Literal

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, ContainerClient
from pydantic import BaseModel, ConfigDict

from tablebackup.core.errors import BackupError
from tablebackup.core.names import BACKUP_ID_RE, table_key

FORMAT = "azure-table-backup"
FORMAT_VERSION = 1
TOOL_VERSION = "0.1.0"
DATA_BLOB = "data.ndjson.gz"
MANIFEST_BLOB = "manifest.json"
# An incremental's extra blobs: keys deleted since its parent, and every key the table held.
DELETED_BLOB = "deleted.ndjson.gz"
KEYS_BLOB = "keys.ndjson.gz"

# A blob's name inside its backup's folder: one path segment, never "." or "..".
_LEAF_RE = re.compile(r"(?!\.\.?\Z)[A-Za-z0-9._-]+")

# 2 MiB blocks: a blob holds up to 50,000 blocks, ~97 GiB of gzip, far more than a part needs.
BLOCK_BYTES = 2 * 1024 * 1024
# Fast compression: backups are network- and CPU-bound, and level 1 still shrinks JSON ~5x.
GZIP_LEVEL = 1


def new_backup_id(table: str, at: datetime) -> str:
    # The table's canonical (lowercase) name: one catalog per table, however it is spelled.
    return f"{table.lower()}-{at.astimezone(UTC):%Y%m%dT%H%M%S.%f}Z"


def attempt_leaf(leaf: str, attempt: int) -> str:
    """A blob name of its own for each attempt at a backup: a retry never overwrites anything."""
    return leaf if attempt == 1 else leaf.replace(".ndjson.gz", f"-a{attempt}.ndjson.gz")


def manifest_blob_name(backup_id: str) -> str:
    return f"{backup_id}/{MANIFEST_BLOB}"


class BlobInfo(BaseModel):
    """One gzip NDJSON blob of a backup besides its data blob."""

    model_config = ConfigDict(frozen=True)

    blob: str
    lines: int
    bytes: int
    sha256: str


SCHEDULED, ON_DEMAND, SAFETY = "scheduled", "on-demand", "safety"


class BackupReason(BaseModel):
    """Why a backup was taken. A safety backup is the state of a table just before a restore or an
    import wrote into it: it is restored only by its id, never as `latest`, and retention keeps it
    by a rule of its own (SAFETY_BACKUP_KEEP_DAYS)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: Literal["scheduled", "on-demand", "safety"]
    via: str | None = None  # "timer", "cli" or "http"
    actor: str | None = None  # who asked (the CLI's OS user, the HTTP caller)
    # A safety backup: what it was taken before ("restore" or "import"), into which table, and for
    # a restore the backup restored, its mode, and its queued operation.
    before: Literal["restore", "import"] | None = None
    target: str | None = None
    restoring: str | None = None
    mode: str | None = None
    operation: str | None = None
    source: str | None = None  # an import's input

    @classmethod
    def scheduled(cls) -> BackupReason:
        return cls(kind=SCHEDULED, via="timer")

    @classmethod
    def on_demand(cls, via: str | None = None, actor: str | None = None) -> BackupReason:
        return cls(kind=ON_DEMAND, via=via, actor=actor)

    @classmethod
    def before_restore(
        cls, target: str, restoring: str, mode: str, actor: str | None = None, operation: str | None = None
    ) -> BackupReason:
        return cls(
            kind=SAFETY,
            before="restore",
            target=target,
            restoring=restoring,
            mode=mode,
            actor=actor,
            operation=operation,
        )

    @classmethod
    def before_import(cls, target: str, source: str, mode: str, actor: str | None = None) -> BackupReason:
        return cls(kind=SAFETY, before="import", target=target, source=source, mode=mode, actor=actor)

    @property
    def safety(self) -> bool:
        return self.kind == SAFETY

    def describe(self) -> str:
        """One line: `scheduled`, `on demand (cli, alice)`, `safety backup before restoring X (mode
        mirror) into T`."""
        who = ", ".join(part for part in (self.via, self.actor) if part)
        if self.kind == SCHEDULED:
            return "scheduled"
        if self.kind == ON_DEMAND:
            return "on demand" + (f" ({who})" if who else "")
        if self.before == "import":
            what = f"importing {self.source or 'a file'} into {self.target}"
        else:
            what = f"restoring {self.restoring} into {self.target}"
        mode = f", mode {self.mode}" if self.mode else ""
        by = f", by {self.actor}" if self.actor else ""
        operation = f", operation {self.operation}" if self.operation else ""
        return f"safety backup before {what}{mode}{by}{operation}"

    def as_json(self) -> dict:
        return {
            **{name: value for name, value in self.model_dump().items() if value is not None},
            "text": self.describe(),
        }


# What a manifest without a reason (written before it was recorded) is shown as: a regular backup.
UNRECORDED_REASON = {"kind": "unrecorded", "text": "not recorded (taken before reasons were); a regular backup"}


class Manifest(BaseModel):
    """What a complete backup holds; its presence is what makes the backup complete."""

    model_config = ConfigDict(extra="allow", frozen=True)

    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    backup: str
    table: str
    source_account: str
    # Read from the account's secondary endpoint (regional outage): as of the last geo-replication.
    read_from_secondary: bool = False
    kind: str = "full"  # or "incremental": only what changed since `parent`
    parent: str | None = None  # the backup an incremental builds on
    started_at: datetime
    finished_at: datetime
    entities: int
    bytes: int
    sha256: str
    data_blob: str
    # A backup written in parts (fan-out): data blobs in key order. `data_blob`, `bytes` and
    # `sha256` then name the first part, the total size, and the SHA-256 of the parts' SHA-256s.
    parts: list[BlobInfo] | None = None
    # PartitionKeys at even intervals of the data: where the next backup can split into parts.
    key_samples: list[str] = []
    deleted: BlobInfo | None = None  # incremental: {"PartitionKey", "RowKey"} lines
    keys: BlobInfo | None = None  # incremental: the table's whole key set at this backup
    compression: str = "gzip"
    encoding: str = "ndjson-odata-minimalmetadata"
    tool_version: str = TOOL_VERSION
    # Why it was taken; None in manifests written before it was recorded (a regular backup).
    reason: BackupReason | None = None

    @property
    def safety(self) -> bool:
        """A safety backup: taken just before a restore or an import wrote into its table."""
        return self.reason is not None and self.reason.safety

    def reason_json(self) -> dict:
        return self.reason.as_json() if self.reason else dict(UNRECORDED_REASON)

    def data_parts(self) -> list[BlobInfo]:
        """The data blobs, in key order: one, or the parts of a fan-out backup."""
        if self.parts:
            return list(self.parts)
        return [BlobInfo(blob=self.data_blob, lines=self.entities, bytes=self.bytes, sha256=self.sha256)]

    def blobs(self) -> list[BlobInfo]:
        """Every blob this manifest describes."""
        return self.data_parts() + [info for info in (self.deleted, self.keys) if info]

    def inconsistency(self, backup_id: str) -> str | None:
        """What makes this manifest not hold together as the manifest of `backup_id`, or None.
        Pure: reads no blob. A manifest copied from another backup, pointing at blobs outside its
        own `<id>/` folder, or whose parts were reordered is never used."""
        if self.backup != backup_id:
            return f"names backup {self.backup!r}, not its own id"
        own_table = BACKUP_ID_RE.fullmatch(backup_id)["table"]
        if table_key(self.table) != table_key(own_table):  # table names are case-insensitive
            return f"names table {self.table!r}, not {own_table!r} of its id"
        for name in [self.data_blob] + [info.blob for info in self.blobs()]:
            folder, _, leaf = name.partition("/")
            if folder != backup_id or not _LEAF_RE.fullmatch(leaf):
                return f"names blob {name!r}, outside the backup's own folder {backup_id + '/'!r}"
        if self.parts:
            if self.data_blob != self.parts[0].blob:
                return f"names {self.data_blob!r} as its data blob but {self.parts[0].blob!r} as its first part"
            if self.sha256 != parts_digest(self.parts):
                return "lists its parts in another order (or with other checksums) than its digest of the parts records"
            if self.bytes != sum(part.bytes for part in self.parts):
                return f"says {self.bytes} bytes but its parts hold {sum(part.bytes for part in self.parts)}"
        return None

    def listing_metadata(self) -> dict[str, str]:
        """What the manifest blob carries as metadata, so one listing shows every backup's kind,
        size and parent without reading each manifest (the status trend). The manifest itself stays
        the authority: nothing restores or verifies from this."""
        table_entities = self.keys.lines if self.kind == "incremental" and self.keys else self.entities
        metadata = {
            "kind": self.kind,
            "entities": str(self.entities),
            "tableentities": str(table_entities),
            "bytes": str(self.bytes),
            "startedat": _iso(self.started_at),
            "finishedat": _iso(self.finished_at),
        }
        if self.reason is not None:
            metadata["reason"] = self.reason.kind
        return {**metadata, "parent": self.parent} if self.parent else metadata

    def summary(self) -> dict:
        """The fields users see for one backup, JSON-ready."""
        return {
            "backup": self.backup,
            "table": self.table,
            "kind": self.kind,
            "parent": self.parent,
            "entities": self.entities,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "taken_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "source_account": self.source_account,
            "reason": self.reason_json(),
            "safety": self.safety,
        }


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


class BlockSink(io.RawIOBase):
    """A write-only file that stages what it receives as blocks of one block blob."""

    def __init__(self, container: ContainerClient, name: str):
        self._blob = container.get_blob_client(name)
        self._buffer = bytearray()
        self._blocks: list[str] = []
        # Block ids of this writer alone: a committed list of them can only be this writer's commit.
        self._nonce = uuid.uuid4().hex
        self._sha = hashlib.sha256()
        self.bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._buffer += data
        self._sha.update(data)
        self.bytes += len(data)
        if len(self._buffer) >= BLOCK_BYTES:
            self._stage()
        return len(data)

    def _stage(self) -> None:
        block_id = base64.b64encode(f"{self._nonce}-{len(self._blocks):08d}".encode()).decode()
        block, self._buffer = self._buffer, bytearray()  # hand the buffer over: no copy
        self._blob.stage_block(block_id, block)
        self._blocks.append(block_id)

    def commit(self) -> str:
        if self._buffer or not self._blocks:
            self._stage()
        try:
            # If-None-Match: * makes the blob write-once.
            self._blob.commit_block_list(
                [BlobBlock(block_id) for block_id in self._blocks], match_condition=MatchConditions.IfMissing
            )
        except ResourceExistsError:
            # A commit applied whose answer was lost (a 500, a dropped connection) is retried and
            # finds the blob: it is ours if it holds exactly the blocks this writer staged.
            if not self._committed_by_us():
                raise BackupError(
                    f"blob {self._blob.blob_name!r} already exists; backups are never overwritten"
                ) from None
        return self._sha.hexdigest()

    def _committed_by_us(self) -> bool:
        committed, _ = self._blob.get_block_list("committed")
        return [block.id for block in committed] == self._blocks and sum(b.size for b in committed) == self.bytes


class DataBlobWriter:
    """Streams NDJSON lines into a gzip block blob; memory stays at about one block."""

    def __init__(self, container: ContainerClient, backup_id: str, leaf: str = DATA_BLOB):
        self.name = f"{backup_id}/{leaf}"
        self._sink = BlockSink(container, self.name)
        self._gzip = gzip.GzipFile(fileobj=self._sink, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)
        self.entities = 0

    def write_lines(self, lines: list[bytes]) -> None:
        self._gzip.write(b"".join(lines))
        self.entities += len(lines)

    def finish(self) -> tuple[int, str]:
        """Commit the blob; returns its size in bytes and SHA-256."""
        self._gzip.close()
        sha256 = self._sink.commit()
        return self._sink.bytes, sha256

    def finish_info(self) -> BlobInfo:
        size, sha256 = self.finish()
        return BlobInfo(blob=self.name, lines=self.entities, bytes=size, sha256=sha256)


def write_manifest(container: ContainerClient, manifest: Manifest) -> None:
    """Write the manifest, once. A write applied whose answer was lost is retried and finds the
    manifest there: if it holds exactly these bytes (its finished_at is this attempt's), it is ours."""
    content = manifest.model_dump_json(indent=2).encode()
    name = manifest_blob_name(manifest.backup)
    try:
        container.upload_blob(name, content, overwrite=False, metadata=manifest.listing_metadata())
    except ResourceExistsError:
        if container.get_blob_client(name).download_blob().readall() != content:
            raise BackupError(
                f"backup {manifest.backup!r} already has a manifest; backups are never overwritten"
            ) from None


def _download(container: ContainerClient, manifest: Manifest, blob: str | None = None):
    name = blob or manifest.data_blob
    try:
        return container.get_blob_client(name).download_blob()
    except ResourceNotFoundError:
        raise BackupError(f"backup {manifest.backup!r} is damaged: its blob {name!r} is missing") from None


def read_data_lines(container: ContainerClient, manifest: Manifest, blob: str | None = None) -> Iterator[bytes]:
    """The lines of the data (every part in key order), or of one blob of the backup, streamed."""
    if blob is not None:
        return DataReader(container, manifest, blob).lines()
    return (line for part in manifest.data_parts() for line in DataReader(container, manifest, part.blob).lines())


def parts_digest(parts: list[BlobInfo]) -> str:
    """A multi-part backup's `sha256`: the SHA-256 of its parts' SHA-256s, in order."""
    return hashlib.sha256("".join(part.sha256 for part in parts).encode()).hexdigest()


class KeySampler:
    """Keeps at most about MAX PartitionKeys at even intervals of a stream of unknown length: when
    full, every other sample goes and the interval doubles."""

    MAX = 512

    def __init__(self):
        self.samples: list[str] = []
        self._step, self._seen = 1, 0

    def add(self, entities: list[dict]) -> None:
        for entity in entities:
            if self._seen % self._step == 0:
                self.samples.append(entity["PartitionKey"])
                if len(self.samples) > self.MAX:
                    self.samples = self.samples[::2]
                    self._step *= 2
            self._seen += 1


class DataReader:
    """Streams a data blob's lines and, once they are read, tells the stored blob's SHA-256 and size,
    so one pass can both decode and check a backup."""

    def __init__(self, container: ContainerClient, manifest: Manifest, blob: str | None = None):
        self._container, self._manifest, self._blob = container, manifest, blob
        self._digest = hashlib.sha256()
        self.bytes = 0

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def _chunks(self) -> Iterator[bytes]:
        for chunk in _download(self._container, self._manifest, self._blob).chunks():
            self._digest.update(chunk)
            self.bytes += len(chunk)
            yield chunk

    def lines(self) -> Iterator[bytes]:
        reader = gzip.GzipFile(fileobj=_ChunkReader(self._chunks()), mode="rb")
        yield from io.BufferedReader(reader, buffer_size=1024 * 1024)


class _ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        size = min(len(target), len(self._pending))
        target[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size
