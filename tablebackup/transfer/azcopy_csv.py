"""AzCopy 7.3's CSV payload (/PayloadFormat:CSV): each data file `..._<CRC>.csv` has a schema file
`..._<CRC>.schema.csv` beside it that gives its columns' EDM types (AzCopy's docs). AzCopy itself
never imported these ("AzCopy only supports importing for JSON, not CSV") and no public source shows
either file's layout, so this reader takes the forms a CSV of names and types can have, and nothing
it cannot read exactly:

- the schema: a row of column names over a row of their types, or one `name,type` row per column
  (under an optional `Name,Type` header); a type is `Edm.Int64` or `Int64`;
- the data: a header row naming the schema's columns (or no header, in the schema's order), then
  one row per entity; Timestamp is metadata and never a property;
- a cell: the value's text in its column's type (Boolean `true`/`false` in any case, Binary as
  base64, DateTime in ISO 8601); an empty cell is an absent property, as the CSV cannot tell it
  from an empty string, and the import's report counts the empty String cells read so.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from tablebackup.core.entities import ANNOTATED_TYPES, EDM_TYPES, KEYS, TYPE_SUFFIX
from tablebackup.core.errors import InvalidInput
from tablebackup.transfer.csv_format import cell_value
from tablebackup.transfer.records import Records, checked, problem

_METADATA = ("Timestamp",)


def _edm(text: str, where: str) -> str:
    edm = text.strip()
    edm = edm if edm.startswith("Edm.") else "Edm." + edm
    if edm not in EDM_TYPES:
        raise InvalidInput(f"{where}: {text!r} is not an EDM type")
    return edm


def read_schema(path: Path) -> list[tuple[str, str]]:
    """(column, EDM type) in the data file's column order."""
    try:
        rows = [row for row in csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig")), strict=True) if row]
    except (csv.Error, UnicodeDecodeError) as error:
        raise InvalidInput(f"{path.name} is not a CSV schema: {error}") from None
    if rows and [cell.strip().lower() for cell in rows[0]] == ["name", "type"]:
        rows = rows[1:]
    if rows and all(len(row) == 2 and _is_type(row[1]) for row in rows):
        pairs = rows  # one name,type row per column
    elif len(rows) == 2 and len(rows[0]) == len(rows[1]) and all(_is_type(cell) for cell in rows[1]):
        pairs = list(zip(*rows, strict=True))  # a row of names over a row of types
    else:
        raise InvalidInput(f"{path.name}: expected a row of names over a row of types, or one name,type row per column")
    columns = [(name, _edm(edm, f"{path.name} column {name!r}")) for name, edm in pairs]
    names = [name for name, _ in columns]
    for key in KEYS:
        if key not in names:
            raise InvalidInput(f"{path.name} has no {key} column")
    duplicate = next((name for index, name in enumerate(names) if name in names[:index]), None)
    if duplicate is not None:
        raise InvalidInput(f"{path.name} names column {duplicate!r} twice")
    return columns


def _is_type(cell: str) -> bool:
    edm = cell.strip()
    return (edm if edm.startswith("Edm.") else "Edm." + edm) in EDM_TYPES


def _entity(columns: list[tuple[str, str]], cells: list[str], empty_strings: dict[str, int]) -> dict:
    if len(cells) != len(columns):
        raise InvalidInput(f"{len(cells)} cells, but the schema has {len(columns)} columns")
    entity: dict = {}
    for (name, edm), cell in zip(columns, cells, strict=True):
        if name in KEYS:
            entity[name] = cell
            continue
        if name in _METADATA:
            continue
        if cell == "":
            if edm == "Edm.String":
                empty_strings[name] = empty_strings.get(name, 0) + 1
            continue
        try:
            entity[name] = cell_value(edm, cell)
        except InvalidInput as error:
            raise InvalidInput(f"column {name!r} ({edm}): {error}") from None
        if edm in ANNOTATED_TYPES:
            entity[name + TYPE_SUFFIX] = edm
    return entity


def read_azcopy_csv(stream: BinaryIO, columns: list[tuple[str, str]], empty_strings: dict[str, int]) -> Records:
    """The data file's entities; `empty_strings` counts, by column, the empty String cells left out."""
    rows: Iterator[list[str]] = csv.reader(io.TextIOWrapper(stream, encoding="utf-8-sig", newline=""), strict=True)
    names = [name for name, _ in columns]
    start, first = 1, True
    try:
        for cells in rows:
            line, start = start, rows.line_num + 1
            if not cells:
                continue
            if first:
                first = False
                if cells == names:
                    continue  # the header row
                if set(cells) & set(KEYS):  # a header, but not the schema's
                    yield problem(line, f"the header {cells[:5]} does not match the schema's columns {names[:5]}")
                    return
            try:
                yield checked(line, _entity(columns, cells, empty_strings))
            except InvalidInput as error:
                yield problem(line, str(error))
    except csv.Error as error:
        yield problem(start, f"not CSV: {error}")
