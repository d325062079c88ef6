"""NDJSON (the backup line encoding, uncompressed) and a JSON array of the same objects.

Both writers take wire-JSON entities page by page. Both readers stream: NDJSON line by line, the
array value by value, so a file of any size is read in bounded memory.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Generator
from typing import BinaryIO

import orjson

from tablebackup.core import wirejson
from tablebackup.core.entities import TYPE_SUFFIX, encode_line
from tablebackup.core.errors import InvalidInput
from tablebackup.transfer.dialects import AZURE_CLI, NATIVE, READERS, shape_of
from tablebackup.transfer.records import Record, Records, checked, problem
from tablebackup.transfer.typerules import TypeRules

# The longest line or array element read: a 1 MiB entity, JSON-escaped, with room to spare.
MAX_ENTITY_BYTES = 8 * 1024 * 1024
_CHUNK = 64 * 1024
_SPACE = " \t\r\n"
_BOM = b"\xef\xbb\xbf"


class NdjsonWriter:
    def __init__(self, sink: BinaryIO):
        self._sink = sink

    def write_page(self, page: list[dict]) -> None:
        self._sink.write(b"".join(encode_line(entity) for entity in page))

    def finish(self) -> None:
        pass


class JsonArrayWriter:
    """`[`, one object per line separated by `,`, `]`: valid JSON that is also easy to diff."""

    def __init__(self, sink: BinaryIO):
        self._sink = sink
        self._separator = b"[\n"

    def write_page(self, page: list[dict]) -> None:
        for entity in page:
            self._sink.write(self._separator + encode_line(entity)[:-1])
            self._separator = b",\n"

    def finish(self) -> None:
        self._sink.write(b"[\n]\n" if self._separator == b"[\n" else b"\n]\n")


def _record(line: int, text: str | bytes, shape: str, rules: TypeRules) -> Record:
    """One element or line as an entity in backup-line form, read as the shape's tool wrote it."""
    if shape == NATIVE:
        try:
            entity = wirejson.loads(text)
        except orjson.JSONDecodeError as error:
            return problem(line, f"not JSON: {error}")
        too_large = _integer_read_as_double(text, entity)
        if too_large:
            return problem(
                line, f"property {too_large[0]!r}: {too_large[1]} fits no Edm type (a whole number beyond Int64)"
            )
        return checked(line, entity)
    try:
        # The Azure CLI prints NaN and Infinity bare, which only Python's own parser accepts.
        keys, properties = READERS[shape](wirejson.bounded_loads(text))
        return checked(line, {**keys, **rules.entity(line, properties)})
    except ValueError as error:  # JSONDecodeError too
        return problem(line, f"not JSON: {error}")
    except InvalidInput as error:
        return problem(line, str(error))


def _integer_read_as_double(text: str | bytes, entity: object) -> tuple[str, int] | None:
    """orjson reads an integer literal beyond 64 bits as a float without a word. Only when an
    unannotated whole Double that large is there is the line read again (the standard parser keeps
    integers whole) to tell `1e20`, a Double, from `100000000000000000000`, which no Edm type holds."""
    if not isinstance(entity, dict) or not any(
        isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) >= 2**63
        for name, value in entity.items()
        if name + TYPE_SUFFIX not in entity
    ):
        return None
    try:
        exact = wirejson.bounded_loads(text)
    except ValueError:  # over 4,300 digits, which orjson already refused as infinite
        return None
    for name, value in exact.items():
        if type(value) is int and not -(2**63) <= value < 2**63 and name + TYPE_SUFFIX not in exact:
            return name, value
    return None


def _shape(text: str | bytes, rules: TypeRules) -> str:
    """The shape of the input, from its first entity; remembered in `rules.shape`."""
    if rules.shape is None:
        try:
            rules.shape = shape_of(wirejson.bounded_loads(text))
        except ValueError:
            rules.shape = NATIVE
    return rules.shape


def read_ndjson(stream: BinaryIO, rules: TypeRules | None = None) -> Records:
    rules = rules or TypeRules()
    number = 0
    while line := stream.readline(MAX_ENTITY_BYTES + 1):
        number += 1
        if len(line) > MAX_ENTITY_BYTES and not line.endswith(b"\n"):
            yield problem(number, f"the line is longer than {MAX_ENTITY_BYTES:,} bytes")
            while (rest := stream.readline(MAX_ENTITY_BYTES)) and not rest.endswith(b"\n"):
                pass
            continue
        if number == 1:
            line = line.removeprefix(_BOM)
        if not line.strip():
            continue
        yield _record(number, line, _shape(line, rules), rules)


class _TextWindow:
    """The unread part of a text stream, refilled on demand, and the line where it starts."""

    def __init__(self, stream: BinaryIO):
        # Universal newlines are safe: JSON strings cannot hold a raw line break.
        self._stream = io.TextIOWrapper(stream, encoding="utf-8-sig")
        self.text, self.pos, self.line, self.eof = "", 0, 1, False

    def more(self) -> None:
        chunk = self._stream.read(max(_CHUNK, len(self.text) - self.pos))
        self.text = self.text[self.pos :] + chunk
        self.pos = 0
        self.eof = not chunk

    def advance(self, end: int) -> None:
        self.line += self.text.count("\n", self.pos, end)
        self.pos = end

    def next_char(self) -> str | None:
        """The next character that is not whitespace, or None at the end."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in _SPACE:
                self.advance(self.pos + 1)
            if self.pos < len(self.text):
                return self.text[self.pos]
            if self.eof:
                return None
            self.more()


_SCANNER = json.JSONDecoder()


def _value_end(window: _TextWindow) -> int:
    """Where the JSON value at the window's position ends, reading more as needed."""
    while True:
        try:
            _, end = _SCANNER.raw_decode(window.text, window.pos)
            if end < len(window.text) or window.eof:
                return end
        except json.JSONDecodeError as error:
            if window.eof or len(window.text) - window.pos > MAX_ENTITY_BYTES:
                window.advance(error.pos)
                raise ValueError(f"not JSON: {error.msg}") from None
        except ValueError as error:  # e.g. an integer with thousands of digits
            raise ValueError(f"not JSON: {error}") from None
        except RecursionError:  # the scanner is recursive: untrusted nesting must not crash the reader
            window.advance(len(window.text))
            raise ValueError("not JSON: nested too deeply (more than 1,024 levels)") from None
        if len(window.text) - window.pos > MAX_ENTITY_BYTES:
            raise ValueError(f"an element is longer than {MAX_ENTITY_BYTES:,} characters")
        window.more()


def _elements(window: _TextWindow, rules: TypeRules) -> Generator[Record, None, bool]:
    """The elements of the array at the window's position; a syntax error ends the reading, as
    nothing after it can be trusted. Leaves the window after the closing ']'; returns whether it was reached."""
    window.advance(window.pos + 1)
    if window.next_char() == "]":
        window.advance(window.pos + 1)
        return True
    while True:
        if window.next_char() is None:
            yield problem(window.line, "the array is not closed with ']'")
            return False
        line = window.line
        try:
            end = _value_end(window)
        except ValueError as error:
            yield problem(window.line, str(error))
            return False
        text = window.text[window.pos : end]
        yield _record(line, text, _shape(text, rules), rules)
        window.advance(end)
        separator = window.next_char()
        if separator is None:
            yield problem(window.line, "the array is not closed with ']'")
            return False
        if separator not in ",]":
            yield problem(window.line, "expected ',' or ']' after an element")
            return False
        window.advance(window.pos + 1)
        if separator == "]":
            return True


# The key holding the entities of a document: the Azure CLI's, and the service's own query response.
_ENTITY_LISTS = {"items": AZURE_CLI, "value": None}


def _document(window: _TextWindow, rules: TypeRules) -> Records:
    """`{"items": [...], "nextMarker": {...}}`, as `az storage entity query` prints it, or
    `{"odata.metadata": "...", "value": [...]}`, the service's minimal-metadata query response (the
    payload of an AzCopy export's data file)."""
    window.advance(window.pos + 1)
    while (char := window.next_char()) not in ("}", None):
        line = window.line
        try:
            key_end = _value_end(window)
            key = json.loads(window.text[window.pos : key_end])
            window.advance(key_end)
            if window.next_char() != ":" or not isinstance(key, str):
                raise ValueError("not JSON: expected a key and ':'")
            window.advance(window.pos + 1)
            if key in _ENTITY_LISTS and window.next_char() == "[":
                rules.shape = rules.shape or _ENTITY_LISTS[key]
                if not (yield from _elements(window, rules)):
                    return
            elif window.next_char() is None:
                raise ValueError("the object is not closed with '}'")
            else:
                value_end = _value_end(window)
                if key == "nextMarker":
                    rules.next_marker = wirejson.bounded_loads(window.text[window.pos : value_end]) or None
                window.advance(value_end)
        except ValueError as error:
            yield problem(line, str(error))
            return
        if window.next_char() == ",":
            window.advance(window.pos + 1)
    if char is None:
        yield problem(window.line, "the object is not closed with '}'")
        return
    window.advance(window.pos + 1)


def read_json_array(stream: BinaryIO, rules: TypeRules | None = None) -> Records:
    """A JSON array of entities, or a document holding one: an Azure CLI entity query's output or
    the service's query response."""
    rules = rules or TypeRules()
    window = _TextWindow(stream)
    first = window.next_char()
    if first == "{":
        yield from _document(window, rules)
    elif first == "[":
        if not (yield from _elements(window, rules)):
            return
    else:
        yield problem(window.line, "expected a JSON array starting with '['")
        return
    if window.next_char() is not None:
        yield problem(window.line, "unexpected text after the array")
