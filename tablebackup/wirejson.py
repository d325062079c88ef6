"""JSON for every string the Table service holds, lone surrogates included.

The service's strings are UTF-16: a JavaScript application (the JS SDK) can store one half of a
surrogate pair alone, and the service sends it back as a JSON escape ("\\ud800"). orjson, fast and
strict UTF-8, refuses such a string both ways; the standard library's json reads the escape into
a Python str and writes it back as the same escape. So orjson does the work and the standard
library takes over only for the rare document orjson refuses, with ASCII output so the escape is
written, never the unencodable character. Backup lines stay valid JSON either way.
"""

from __future__ import annotations

import json

import orjson


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
        return json.loads(data, parse_constant=_refuse_constant)
    except ValueError as error:
        raise orjson.JSONDecodeError(str(error), "", 0) from None


def dumps(value) -> bytes:
    """`value` as compact JSON bytes; a lone surrogate in a string is written as its escape."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        # Only a str orjson cannot encode as UTF-8 gets here; anything else fails again below.
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode()
