"""JSON for every string the Table service holds, lone surrogates included.

The service's strings are UTF-16: a JavaScript application (the JS SDK) can store one half of a
surrogate pair alone, and the service sends it back as a JSON escape ("\\ud800"). orjson, fast and
strict UTF-8, refuses such a string both ways; the standard library's json reads the escape into
a Python str. So orjson does the work and the standard library takes over only for the rare
document orjson refuses; it writes UTF-8 like orjson, with each lone surrogate (the only code
points UTF-8 cannot encode) as its escape, so the document is no larger than the service's own
(an all-escaped ASCII form would triple CJK text and push a large entity past the 1 MiB limit).
"""

from __future__ import annotations

import json
import re

import orjson

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_constant(name: str) -> None:
    # orjson never accepts NaN or Infinity as bare JSON words; neither does the fallback.
    raise ValueError(f"{name} is not valid JSON")


def loads(data: bytes | str):
    """The JSON value in `data`; orjson.JSONDecodeError if it is not valid JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        if "surrogate" not in str(error):
            raise
    try:
        return bounded_loads(data, parse_constant=_refuse_constant)
    except ValueError as error:
        raise orjson.JSONDecodeError(str(error), "", 0) from None


def bounded_loads(data: bytes | str, **options):
    """json.loads for untrusted input: its recursive parser's RecursionError on deep nesting becomes
    the ValueError of any other invalid JSON (orjson refuses past 1,024 levels the same way)."""
    try:
        return json.loads(data, **options)
    except RecursionError:
        raise ValueError("JSON nested too deeply (more than 1,024 levels)") from None


def dumps(value) -> bytes:
    """`value` as compact JSON bytes; a lone surrogate in a string is written as its escape."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        # Only a str orjson cannot encode as UTF-8 gets here; anything else fails again below. In a
        # decoded str a surrogate pair is one astral character, so every surrogate left is lone,
        # and (JSON outside strings being ASCII) inside a string, where its escape is valid.
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text).encode()
