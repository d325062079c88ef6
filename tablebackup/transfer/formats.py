"""The three file formats: names, extensions, content types, writers, readers, and telling a file's
format from its first bytes, else its name. gzip (a backup data blob) is recognised by magic bytes.
JSON readers also tell from the first entity which tool wrote it (see tablebackup.transfer.dialects)."""

from __future__ import annotations

import gzip
import io
import re
import zlib
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import BinaryIO, Protocol

from tablebackup.core.errors import InvalidInput
from tablebackup.transfer.csv_format import CsvWriter, read_csv
from tablebackup.transfer.json_formats import JsonArrayWriter, NdjsonWriter, read_json_array, read_ndjson
from tablebackup.transfer.records import Records, problem
from tablebackup.transfer.typerules import TypeRules

FORMATS = ("ndjson", "json", "csv")
CONTENT_TYPES = {"ndjson": "application/x-ndjson", "json": "application/json", "csv": "text/csv"}
_SUFFIXES = {".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "json", ".csv": "csv"}
GZIP_MAGIC = b"\x1f\x8b"


class EntityWriter(Protocol):
    def write_page(self, page: list[dict]) -> None: ...

    def finish(self) -> None: ...


_WRITERS: dict[str, Callable[[BinaryIO], EntityWriter]] = {
    "ndjson": NdjsonWriter,
    "json": JsonArrayWriter,
    "csv": CsvWriter,
}
_READERS: dict[str, Callable[[BinaryIO, TypeRules], Records]] = {
    "ndjson": read_ndjson,
    "json": read_json_array,
    "csv": lambda stream, _rules: read_csv(stream),
}
# `az storage entity query` prints one JSON object holding the page: {"items": [...], "nextMarker": ...};
# the service's query response (an AzCopy data file) is {"odata.metadata": ..., "value": [...]}.
_DOCUMENT = re.compile(rb'^\{\s*"(?:items|nextMarker|value|odata\.metadata)"\s*:')


def check_format(name: str) -> str:
    if name not in FORMATS:
        raise InvalidInput(f"unknown format {name!r}: use one of {', '.join(FORMATS)}")
    return name


def entity_writer(fmt: str, sink: BinaryIO) -> EntityWriter:
    return _WRITERS[check_format(fmt)](sink)


def _format_from_name(name: str) -> str | None:
    path = PurePosixPath(name.lower())
    if path.suffix == ".gz":
        # A backup data blob is data.ndjson.gz; x.csv.gz is a gzipped export.
        return _SUFFIXES.get(PurePosixPath(path.stem).suffix, "ndjson")
    return _SUFFIXES.get(path.suffix)


def _format_from_content(head: bytes) -> str | None:
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"[") or _DOCUMENT.match(text):
        return "json"
    if text.startswith(b"{"):
        return "ndjson"
    if text.startswith((b"PartitionKey", b'"PartitionKey"')):
        return "csv"
    return None


def open_content(stream: BinaryIO, name: str, fmt: str | None) -> tuple[BinaryIO, str]:
    """The stream decompressed if it is gzip, and its format: as given, else from the first bytes,
    else from the name (a backup data blob saved as backup.json is still NDJSON)."""
    buffered = io.BufferedReader(stream) if not isinstance(stream, io.BufferedReader) else stream
    gzipped = buffered.peek(2)[:2] == GZIP_MAGIC
    if gzipped:
        buffered = io.BufferedReader(gzip.GzipFile(fileobj=buffered, mode="rb"), buffer_size=1024 * 1024)
    if fmt:
        return buffered, check_format(fmt)
    try:
        found = _format_from_content(buffered.peek(64)) or _format_from_name(name)
    except (OSError, EOFError, zlib.error):
        found = "ndjson"  # unreadable gzip: the reader reports it with a line number
    if found is None:
        raise InvalidInput(f"cannot tell the format of {name}; give it as one of {', '.join(FORMATS)}")
    return buffered, found


def read_records(stream: BinaryIO, fmt: str, rules: TypeRules | None = None) -> Records:
    """The file's records, typed by `rules` where the file does not say a type; a stream that
    cannot be read further ends them with a problem."""
    line = 0
    try:
        for line, record in _READERS[fmt](stream, rules or TypeRules()):
            yield line, record
    except (OSError, EOFError, zlib.error) as error:
        yield problem(line + 1, f"unreadable (damaged gzip?): {error}")
    except UnicodeDecodeError as error:
        yield problem(line + 1, f"not UTF-8 text: {error.reason} at byte {error.start}")
