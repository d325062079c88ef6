r"""CSV with typed columns, so that an import restores every EDM value exactly.

Header: PartitionKey, RowKey, then one column per (property, type) seen, named `name@Edm.Type`; a
property that holds different types on different entities gets one column per type. A column
without `@Edm.Type` (a hand-made file) holds strings. Cells: an empty cell is an absent property;
every other cell is the value's text (Int64 in full, DateTime as stored with its 7 digits, Double
as Python's shortest round-trip text or NaN/Infinity/-Infinity, Boolean true/false, Binary as
base64, Guid as text). A value that is empty, or starts with a backslash, is written with one more
backslash in front: the empty string is `\`, and `\a` is `\\a`.

The union of columns is known only at the end, so the writer spools backup lines to a temporary
file and writes header and rows at finish: memory holds the set of columns, never the rows.
"""

from __future__ import annotations

import csv
import io
import math
import re
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from tablebackup.core import wirejson
from tablebackup.core.entities import ANNOTATED_TYPES, EDM_TYPES, KEYS, TYPE_SUFFIX, edm_type, encode_line
from tablebackup.core.errors import InvalidInput
from tablebackup.transfer.records import Records, checked, problem

Column = tuple[str, str]
_DOUBLE_WORDS = {"NaN", "Infinity", "-Infinity"}
_INTEGER = re.compile(r"^-?[0-9]+\Z")
_DECIMAL = re.compile(r"^-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_FLUSH_CHARS = 1024 * 1024


def _properties(entity: dict) -> Iterator[str]:
    for name in entity:
        if name not in KEYS and not name.endswith(TYPE_SUFFIX) and not name.startswith("odata."):
            yield name


def _type(entity: dict, name: str) -> str:
    # Timestamp is always a DateTime, though Azurite sends it without its annotation.
    return "Edm.DateTime" if name == "Timestamp" else edm_type(entity, name)


def _escape(text: str) -> str:
    return "\\" + text if not text or text.startswith("\\") else text


def _unescape(cell: str) -> str:
    return cell[1:] if cell.startswith("\\") else cell


def _cell(edm: str, value: object) -> str:
    if edm == "Edm.Boolean":
        return "true" if value else "false"
    if edm == "Edm.Double" and not isinstance(value, str):
        return repr(float(value))
    return _escape(str(value))


def cell_value(edm: str, text: str) -> object:
    """A cell's text as a value of the EDM type (shared with the AzCopy CSV reader)."""
    if edm == "Edm.Boolean" and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if edm in ("Edm.Int32", "Edm.Int64") and _INTEGER.match(text):
        return int(text) if edm == "Edm.Int32" else str(int(text))
    if edm == "Edm.Double" and (text in _DOUBLE_WORDS or _DECIMAL.match(text)):
        value = text if text in _DOUBLE_WORDS else float(text)
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(f"{text!r} is out of the range of an Edm.Double")
        return value
    if edm in ("Edm.String", "Edm.DateTime", "Edm.Guid", "Edm.Binary"):
        return text  # check_entity validates the last three
    raise InvalidInput(f"{text!r} is not a valid {edm}")


class CsvWriter:
    def __init__(self, sink: BinaryIO):
        self._sink = sink
        # Closed in finish(); the file has no name, so nothing is left behind if export fails.
        self._spool = tempfile.TemporaryFile()  # noqa: SIM115
        self._columns: dict[Column, None] = {}

    def write_page(self, page: list[dict]) -> None:
        for entity in page:
            self._spool.write(encode_line(entity))
            for name in _properties(entity):
                self._columns.setdefault((name, _type(entity, name)))

    def finish(self) -> None:
        position = {column: index for index, column in enumerate(self._columns, start=len(KEYS))}
        text = io.StringIO()
        rows = csv.writer(text)
        rows.writerow([*KEYS, *(f"{name}@{edm}" for name, edm in self._columns)])
        self._spool.seek(0)
        for line in self._spool:
            entity = wirejson.loads(line)
            row = [_escape(entity[key]) for key in KEYS] + [""] * len(self._columns)
            for name in _properties(entity):
                edm = _type(entity, name)
                row[position[(name, edm)]] = _cell(edm, entity[name])
            rows.writerow(row)
            if b"\\ud" in line:  # a surrogate escape (wirejson writes lowercase hex): UTF-8 may fail
                _check_encodable(row, entity)
            if text.tell() > _FLUSH_CHARS:
                self._flush(text)
        self._flush(text)
        self._spool.close()

    def _flush(self, text: io.StringIO) -> None:
        self._sink.write(text.getvalue().encode())
        text.seek(0)
        text.truncate()


def _check_encodable(row: list[str], entity: dict) -> None:
    """A lone surrogate (the JS SDK can store one) has no UTF-8 form, so a CSV cannot hold it; NDJSON
    and JSON keep it as the service's own escape."""
    for cell in row:
        try:
            cell.encode()
        except UnicodeEncodeError:
            raise InvalidInput(
                f"entity PartitionKey={entity['PartitionKey']!r} RowKey={entity['RowKey']!r} holds a string "
                "with a lone surrogate, which a UTF-8 CSV cannot hold: export as ndjson or json, which keep it"
            ) from None


def _column(cell: str) -> tuple[str, str]:
    name, at, edm = cell.rpartition("@")
    if not at:
        name, edm = cell, "Edm.String"
    if not name or name.startswith("odata.") or name in KEYS:
        raise InvalidInput(f"column {cell!r} is not a property name")
    if edm not in EDM_TYPES:
        raise InvalidInput(f"column {cell!r} has unknown type {edm!r}; use one of {', '.join(sorted(EDM_TYPES))}")
    return name, edm


def _header(cells: list[str]) -> list[Column]:
    if cells[: len(KEYS)] != list(KEYS):
        raise InvalidInput("the header must start with PartitionKey,RowKey")
    columns = [_column(cell) for cell in cells[len(KEYS) :]]
    for index, column in enumerate(columns):
        if column in columns[:index]:
            raise InvalidInput(f"column {cells[index + len(KEYS)]!r} appears twice")
    return columns


def _entity(columns: list[Column], cells: list[str]) -> dict:
    if len(cells) != len(columns) + len(KEYS):
        raise InvalidInput(f"{len(cells)} cells, but the header has {len(columns) + len(KEYS)} columns")
    entity: dict = {key: _unescape(cell) for key, cell in zip(KEYS, cells, strict=False)}
    for (name, edm), cell in zip(columns, cells[len(KEYS) :], strict=True):
        if cell == "":
            continue
        if name in entity:
            raise InvalidInput(f"property {name!r} has a value in more than one column")
        try:
            entity[name] = cell_value(edm, _unescape(cell))
        except InvalidInput as error:
            raise InvalidInput(f"column '{name}@{edm}': {error}") from None
        if edm in ANNOTATED_TYPES:
            entity[name + TYPE_SUFFIX] = edm
    return entity


def read_csv(stream: BinaryIO) -> Records:
    rows = csv.reader(io.TextIOWrapper(stream, encoding="utf-8-sig", newline=""), strict=True)
    columns: list[Column] | None = None
    start = 1
    try:
        for cells in rows:
            line, start = start, rows.line_num + 1
            if not cells:
                continue
            try:
                if columns is None:
                    columns = _header(cells)
                    continue
                record = checked(line, _entity(columns, cells))
            except InvalidInput as error:
                record = problem(line, str(error))
                if columns is None:  # without a header no row can be read
                    yield record
                    return
            yield record
    except csv.Error as error:
        yield problem(start, f"not CSV: {error}")
