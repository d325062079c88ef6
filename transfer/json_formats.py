"""NDJSON (the backup line encoding, uncompressed) and a JSON array of the same objects.

Both writers take wire-JSON entities page by page. Both readers stream: NDJSON line by line, the
array value by value, so a file of any size is read in bounded memory.
"""

from __future__ import annotations

import io
import json
from typing import BinaryIO

import orjson

from tablebackup import wirejson
from tablebackup.entities import encode_line
from transfer.records import Records, checked, problem

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


def read_ndjson(stream: BinaryIO) -> Records:
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
        try:
            entity = wirejson.loads(line)
        except orjson.JSONDecodeError as error:
            yield problem(number, f"not JSON: {error}")
            continue
        yield checked(number, entity)


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
        if len(window.text) - window.pos > MAX_ENTITY_BYTES:
            raise ValueError(f"an element is longer than {MAX_ENTITY_BYTES:,} characters")
        window.more()


def read_json_array(stream: BinaryIO) -> Records:
    """A JSON array's elements; a syntax error ends the reading, as nothing after it can be trusted."""
    window = _TextWindow(stream)
    if window.next_char() != "[":
        yield problem(window.line, "expected a JSON array starting with '['")
        return
    window.advance(window.pos + 1)
    if window.next_char() == "]":
        window.advance(window.pos + 1)
    else:
        while True:
            if window.next_char() is None:
                yield problem(window.line, "the array is not closed with ']'")
                return
            line = window.line
            try:
                end = _value_end(window)
            except ValueError as error:
                yield problem(window.line, str(error))
                return
            try:
                record = checked(line, wirejson.loads(window.text[window.pos : end]))
            except orjson.JSONDecodeError as error:
                record = problem(line, f"not JSON: {error}")
            window.advance(end)
            yield record
            separator = window.next_char()
            if separator is None:
                yield problem(window.line, "the array is not closed with ']'")
                return
            if separator not in ",]":
                yield problem(window.line, "expected ',' or ']' after an element")
                return
            window.advance(window.pos + 1)
            if separator == "]":
                break
    if window.next_char() is not None:
        yield problem(window.line, "unexpected text after the array")
