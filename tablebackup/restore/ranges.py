"""A restore cut into PartitionKey ranges that run independently: on as many Functions instances as
the platform gives (tablebackup.restore.operations) or on N threads of one CLI process.

The ranges cover the whole key space, `[None, c1), [c1, c2), ... [ck, None)`, so every entity of
the backup and every entity of the target belongs to exactly one range: a mirror's deletions happen
range by range. Cuts come from the backup itself:
- a backup written in parts (fan-out) already holds one PartitionKey range per part; the first key of
  each part is where its range begins, read from the first few KiB of the part's blob, and a range
  then reads only its own part. A part larger than RESTORE_PART_ENTITIES is cut further at the key
  samples that fall in it;
- otherwise (one data blob, or an incremental chain) the cuts are the key samples at even intervals
  of the data, and each range reads the backup's state from its start, skipping keys below the range
  and stopping at its end.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from azure.storage.blob import ContainerClient

from tablebackup.core.entities import decode_line
from tablebackup.core.errors import BackupError, DamagedBackup, InvalidInput
from tablebackup.repository.backupformat import Manifest, read_data_lines
from tablebackup.repository.chain import chain_of, state_entities, state_size
from tablebackup.storage.tablequery import partition_range

# The most ranges one restore is cut into: each is a queue message and a row of the operation.
MAX_RANGES = 512
# How much of a part's blob is read to find its first key; doubled until a whole line is there.
_PEEK_BYTES = 64 * 1024


def _order(key: str) -> bytes:
    """The service's order of PartitionKeys: UTF-16 code units (tablebackup.core.entities.service_order)."""
    return key.encode("utf-16-be", "surrogatepass")


@dataclass(frozen=True)
class KeyRange:
    """PartitionKeys `low <= key < high` (None: unbounded), and the data parts that hold them."""

    index: int
    low: str | None = None
    high: str | None = None
    # A backup written in parts: the one part this range reads (its index in manifest.parts).
    part: int | None = None

    def contains(self, partition_key: str) -> bool:
        key = _order(partition_key)
        return (self.low is None or key >= _order(self.low)) and (self.high is None or key < _order(self.high))

    def odata(self) -> str | None:
        """The range as an OData filter on PartitionKey, for queries of the target."""
        return partition_range(self.low, self.high)

    def describe(self) -> str:
        return f"range {self.index + 1} [{self.low!r}, {self.high!r})"

    def as_json(self) -> dict:
        return {"index": self.index, "low": self.low, "high": self.high, "part": self.part}

    @classmethod
    def from_json(cls, data) -> KeyRange:
        if not isinstance(data, dict) or not isinstance(data.get("index"), int) or data["index"] < 0:
            raise InvalidInput("invalid key range: expected an object with a non-negative integer index")
        for name in ("low", "high"):
            if data.get(name) is not None and not isinstance(data[name], str):
                raise InvalidInput(f"invalid key range: {name} must be a string or null")
        part = data.get("part")
        if part is not None and (not isinstance(part, int) or isinstance(part, bool) or part < 0):
            raise InvalidInput("invalid key range: part must be a non-negative integer or null")
        return cls(index=data["index"], low=data.get("low"), high=data.get("high"), part=part)


def _first_key(container: ContainerClient, manifest: Manifest, blob: str, size: int) -> str | None:
    """The PartitionKey of a data blob's first line, from its first few KiB (None: an empty blob)."""
    length = _PEEK_BYTES
    while True:
        try:
            head = container.get_blob_client(blob).download_blob(offset=0, length=min(length, size)).readall()
        except Exception as error:  # a missing or unreadable part: the restore's integrity check says which
            raise BackupError(f"backup {manifest.backup!r}: part {blob!r} cannot be read: {error}") from None
        text = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(head)
        if b"\n" in text:
            line = text.split(b"\n", 1)[0]
            try:
                return decode_line(line)["PartitionKey"]
            except (InvalidInput, KeyError) as error:
                raise DamagedBackup(f"backup {manifest.backup!r}: the first line of {blob!r}: {error}") from None
        if length >= size:
            return None
        length *= 2


def _cuts(samples: list[str], low: str | None, high: str | None, wanted: int) -> list[str]:
    """Up to wanted-1 increasing cut points among the samples inside (low, high), evenly spaced."""
    inside = sorted(
        {s for s in samples if (low is None or _order(s) > _order(low)) and (high is None or _order(s) < _order(high))},
        key=_order,
    )
    if wanted < 2 or not inside:
        return []
    picked = [inside[index * len(inside) // wanted] for index in range(1, wanted)]
    return sorted(set(picked), key=_order)


def _ranges(edges: list[str | None], part: int | None, start: int) -> list[KeyRange]:
    return [
        KeyRange(index=start + offset, low=low, high=high, part=part)
        for offset, (low, high) in enumerate(itertools.pairwise(edges))
    ]


def plan_ranges(container: ContainerClient, manifest: Manifest, part_entities: int) -> list[KeyRange]:
    """The ranges to restore this backup in: about part_entities entities each, at most MAX_RANGES.
    One range (the whole key space) when the backup is small or has nothing to cut at."""
    wanted = min(MAX_RANGES, max(1, math.ceil(state_size(manifest) / max(1, part_entities))))
    if manifest.kind == "full" and manifest.parts and len(manifest.parts) > 1:
        return _part_ranges(container, manifest, part_entities)
    if wanted < 2:
        return [KeyRange(index=0)]
    samples = chain_of(container, manifest)[0].key_samples if manifest.kind == "incremental" else manifest.key_samples
    return _ranges([None, *_cuts(samples, None, None, wanted), None], None, 0)


def _part_ranges(container: ContainerClient, manifest: Manifest, part_entities: int) -> list[KeyRange]:
    firsts = []  # (index of the part, its first PartitionKey)
    for index, part in enumerate(manifest.parts):
        if part.lines:
            key = _first_key(container, manifest, part.blob, part.bytes)
            if key is not None:
                firsts.append((index, key))
    if not firsts:
        return [KeyRange(index=0)]
    ranges: list[KeyRange] = []
    for position, (index, first) in enumerate(firsts):
        low = None if position == 0 else first  # the first range also takes whatever sorts before it
        high = firsts[position + 1][1] if position + 1 < len(firsts) else None
        budget = max(1, (MAX_RANGES - len(firsts)) // len(firsts) + 1)
        wanted = min(budget, math.ceil(manifest.parts[index].lines / max(1, part_entities)))
        ranges += _ranges([low, *_cuts(manifest.key_samples, first, high, wanted), high], index, len(ranges))
    return ranges


def _part(container: ContainerClient, manifest: Manifest, part: int) -> Iterator[dict]:
    blob = manifest.parts[part].blob
    for number, line in enumerate(read_data_lines(container, manifest, blob), start=1):
        try:
            yield decode_line(line)
        except InvalidInput as error:
            raise DamagedBackup(f"backup {manifest.backup!r} part {blob!r} line {number}: {error}") from None


def range_entities(container: ContainerClient, manifest: Manifest, key_range: KeyRange) -> Iterator[dict]:
    """The backup's state within the range, in service order."""
    high = None if key_range.high is None else _order(key_range.high)
    for entity in (
        _part(container, manifest, key_range.part)
        if key_range.part is not None
        else state_entities(container, manifest)
    ):
        if high is not None and _order(entity["PartitionKey"]) >= high:
            return  # service order: nothing after this is in the range
        if key_range.contains(entity["PartitionKey"]):
            yield entity
