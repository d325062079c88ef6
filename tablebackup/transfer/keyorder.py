"""Put an import's entities in the service's key order before they are written, in bounded memory.

The batch writer (tablebackup.storage.tablewriter) groups consecutive operations on one partition,
so input out of key order would go nearly one entity per $batch request: 15 times slower, without a
word. Input already in order (an export, a backup data blob) streams straight through; the import's
validation pass already knows which it is. Input out of order goes through an external sort: runs
of at most RUN_ENTITIES entities and RUN_BYTES bytes are sorted in memory and spilled to a private
temporary folder (tempfile, so TMPDIR is honoured), then merged a few at a time. Input that fits in
one run is sorted in memory and touches no disk.

Runs hold each entity as tablebackup.core.wirejson JSON, exactly the dict the reader made (every
EDM type, lone surrogates, U+2028/U+2029, astral characters), one per line, gzip level 1: the disk
an import of a large file needs is about its compressed size, for little CPU.

The sort is stable: the same key twice keeps the input's order, so the result is the one the same
entities give when the input is sorted (the service refuses the second in one batch, and the
import counts it as failed and names it). The folder goes on success, failure and Ctrl-C alike.
"""

from __future__ import annotations

import gzip
import heapq
import logging
import tempfile
from collections.abc import Iterable, Iterator
from operator import itemgetter
from pathlib import Path

from tablebackup.core import wirejson
from tablebackup.core.entities import service_order

log = logging.getLogger(__name__)

# What one run holds in memory, whichever is reached first: the bound on the sort's memory.
RUN_ENTITIES = 10_000
RUN_BYTES = 16 * 1024 * 1024
# Runs merged at once: each open run costs a file and a gzip window; more runs merge in passes.
MERGE_FAN_IN = 64
_GZIP_LEVEL = 1
_CHUNK_BYTES = 1024 * 1024


class KeyOrder:
    """The stage between reading an import's entities and planning its writes. Use as a context
    manager around the writes, so the temporary runs are removed however they end."""

    def __init__(
        self,
        out_of_order: str | None,
        *,
        write: bool = True,
        run_entities: int | None = None,
        run_bytes: int | None = None,
        fan_in: int | None = None,
    ):
        # out_of_order: where the validation pass first saw a key below the one before, or None. A key
        # equal to the one before is in order: sorting would leave it where it is.
        self.out_of_order = out_of_order
        self.write = write  # a dry run only counts, so it needs no order
        self.run_entities = run_entities or RUN_ENTITIES
        self.run_bytes = run_bytes or RUN_BYTES
        self.fan_in = max(2, fan_in or MERGE_FAN_IN)
        self.runs = 0  # sorted runs spilled to disk (0: straight through, or sorted in memory)
        self.passes = 0  # merges of runs into longer runs, when there were more than fan_in
        self._files = 0
        self.sorted = 0  # entities put in key order here
        self._folder: tempfile.TemporaryDirectory | None = None
        self._open: list[Iterator] = []

    @property
    def needed(self) -> bool:
        return self.out_of_order is not None and self.write

    def __enter__(self) -> KeyOrder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for reader in self._open:
            reader.close()
        self._open = []
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def ordered(self, entities: Iterable[dict]) -> Iterator[dict]:
        """The entities in key order: as they come if they already are, else sorted."""
        if not self.needed:
            return iter(entities)
        log.info("import input not in key order (%s): grouping it by partition", self.out_of_order)
        return self._sorted(entities)

    def notes(self) -> list[str]:
        """What this stage chose, for the import's result; nothing when the input was in order."""
        if self.out_of_order is None:
            return []
        head = f"the input is not in key order (the key on {self.out_of_order} sorts before the one above it)"
        if not self.write:
            return [f"{head}: the import will group it by partition before writing, so batches form"]
        if self.runs:
            passes = f", merged in {self.passes + 1} passes" if self.passes else ""
            how = (
                f"through {self.runs:,} temporary sorted runs of at most {self.run_entities:,} entities or "
                f"{_size(self.run_bytes)} each{passes}, removed afterwards"
            )
        else:
            how = "in memory"
        return [f"{head}: {self.sorted:,} entities grouped by partition {how}, so batches form"]

    def _sorted(self, entities: Iterable[dict]) -> Iterator[dict]:
        run: list[tuple[tuple[bytes, bytes], bytes]] = []
        size = 0
        paths: list[Path] = []
        for entity in entities:
            # + b"\n" copies the line into a bytes object of its own size: orjson's keeps its 4 KiB+ buffer.
            line = wirejson.dumps(entity) + b"\n"
            run.append((service_order(entity), line))
            size += len(line)
            self.sorted += 1
            if len(run) >= self.run_entities or size >= self.run_bytes:
                paths.append(self._spill(run))
                run, size = [], 0
        if not paths:
            run.sort(key=itemgetter(0))  # stable: equal keys keep the input's order
            for _, line in run:
                yield wirejson.loads(line)
            return
        if run:
            paths.append(self._spill(run))
        del run
        log.info("import input: %d entities sorted into %d temporary runs", self.sorted, len(paths))
        # Merge consecutive groups until one merge can take them all; in input order, so stable.
        while len(paths) > self.fan_in:
            self.passes += 1
            paths = [self._merge_to_run(paths[i : i + self.fan_in]) for i in range(0, len(paths), self.fan_in)]
        for entity, _ in self._merge(paths):
            yield entity

    def _run_path(self) -> Path:
        if self._folder is None:
            # mkdtemp: a folder only this user can read, as the entities may hold personal data.
            self._folder = tempfile.TemporaryDirectory(prefix="tablebackup-import-")
        self._files += 1
        return Path(self._folder.name) / f"run{self._files:06d}.ndjson.gz"

    def _spill(self, run: list[tuple[tuple[bytes, bytes], bytes]]) -> Path:
        run.sort(key=itemgetter(0))
        path = self._run_path()
        self.runs += 1
        with gzip.open(path, "wb", compresslevel=_GZIP_LEVEL) as sink:
            _write_lines(sink, (line for _, line in run))
        return path

    def _merge_to_run(self, paths: list[Path]) -> Path:
        path = self._run_path()
        with gzip.open(path, "wb", compresslevel=_GZIP_LEVEL) as sink:
            _write_lines(sink, (line for _, line in self._merge(paths)))
        for merged in paths:
            merged.unlink()
        return path

    def _merge(self, paths: list[Path]) -> Iterator[tuple[dict, bytes]]:
        """(entity, its line) from sorted runs in key order; on equal keys the earlier run first."""
        readers = [self._read(path) for path in paths]
        self._open += readers
        try:
            yield from heapq.merge(*readers, key=lambda pair: service_order(pair[0]))
        finally:
            for reader in readers:
                reader.close()
            self._open = [reader for reader in self._open if reader not in readers]

    @staticmethod
    def _read(path: Path) -> Iterator[tuple[dict, bytes]]:
        # Binary lines: JSON escapes every line break in a string, and U+2028 is no break in bytes.
        with gzip.open(path, "rb") as source:
            for line in source:
                yield wirejson.loads(line), line


def _write_lines(sink, lines: Iterable[bytes]) -> None:
    # A write to GzipFile costs a call into zlib and a CRC each: lines go in chunks of about 1 MiB.
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        chunk.append(line)
        size += len(line)
        if size >= _CHUNK_BYTES:
            sink.write(b"".join(chunk))
            chunk, size = [], 0
    if chunk:
        sink.write(b"".join(chunk))


def _size(count: int) -> str:
    return f"{count / 2**20:g} MiB" if count >= 2**20 else f"{count:,} bytes"
