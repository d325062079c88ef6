"""Entities as other tools wrote them, read into `typerules.Value`s: the shape decides what is typed.

- `seed`: the seed's old daily backup, `JSON.stringify(entities, null, 2)` of the JS SDK's
  `listEntities()`: keys `partitionKey`/`rowKey`, metadata `etag`/`timestamp`; Guid (and, in SDK
  12.0.0 betas, Int64 and DateTime) as `{"value", "type"}`; Binary as Node's `{"type": "Buffer",
  "data": [...]}`; DateTime as an ISO string; every number bare, so a whole Double reads like an Int32;
  NaN and ±Infinity as the strings the service sent.
- `azure-cli`: `az storage entity query` output (its `items`), as the real CLI prints it through the
  Python SDK (tests/azcliexport.py runs it): Int64 as `{"edm_type": "Edm.Int64", "value": n}`;
  DateTime as `datetime.isoformat()` of a UTC time (no fraction or 6 digits, `+00:00`; a 7th digit is
  lost); Guid as a lowercase `str(UUID)`; Binary as padded base64; ints and floats apart, NaN and
  Infinity bare; `etag` and `Timestamp` beside the properties. An empty PartitionKey or RowKey is
  left out (the SDK drops a falsy key), and `--select` prints `"Timestamp": null`.

What no shape can tell apart is given with its alternatives, for the typing rules to settle.
"""

from __future__ import annotations

import base64
import re

from tablebackup.core.entities import KEYS
from tablebackup.core.errors import InvalidInput
from tablebackup.transfer.typerules import Value, looks_like_datetime

SEED = "seed"
AZURE_CLI = "azure-cli"
NATIVE = "native"
_JS_TYPES = {"Int64", "Guid", "DateTime", "Double", "Int32", "String", "Boolean", "Binary"}
_DOUBLE_WORDS = {"NaN", "Infinity", "-Infinity"}
_INT32 = (-(2**31), 2**31 - 1)
# The service's entity etags, as the Python SDK returns them: W/"datetime'2026-12-03T10%3A30%3A00.1234567Z'"
_SERVICE_ETAG = re.compile(r"W/\"datetime'[0-9T%A.:Z-]+'\"")
# The only forms in which the CLI prints a DateTime and a Guid: any other string is a String.
_CLI_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{6})?\+00:00", re.ASCII)
_CLI_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?", re.ASCII)


def shape_of(record: object) -> str:
    """Which tool wrote an input, from its first entity."""
    if not isinstance(record, dict):
        return NATIVE
    if "partitionKey" in record and "PartitionKey" not in record:
        return SEED
    if any(isinstance(value, dict) and "edm_type" in value for value in record.values()):
        return AZURE_CLI
    # An `etag` alone may be a property of the table's own: only the pair of metadata the CLI prints,
    # with the service's etag form and none of the annotations the native form carries, is its output.
    # Its Timestamp is null when the query had --select.
    etag = record.get("etag")
    if (
        isinstance(etag, str)
        and _SERVICE_ETAG.fullmatch(etag)
        and "Timestamp" in record
        and isinstance(record["Timestamp"], str | None)
        and not any(name.endswith("@odata.type") for name in record)
    ):
        return AZURE_CLI
    return NATIVE


def _keys(record: dict, names: tuple[str, str]) -> dict:
    keys = {}
    for key, name in zip(KEYS, names, strict=True):
        value = record.get(name)
        if not isinstance(value, str):
            raise InvalidInput(f"{name} is missing or not a string")
        keys[key] = value
    return keys


def _seed_value(name: str, raw: object) -> Value:
    if isinstance(raw, bool):
        return Value(raw, "Edm.Boolean")
    if isinstance(raw, int):
        # JS has one number type: the SDK wrote a whole number as an Int32, but a whole Double reads the same.
        in_range = _INT32[0] <= raw <= _INT32[1]
        return Value(raw, "Edm.Int32", ("Edm.Double",)) if in_range else Value(raw, "Edm.Double")
    if isinstance(raw, float):
        return Value(raw, "Edm.Double")
    if isinstance(raw, str):
        if raw in _DOUBLE_WORDS:
            return Value(raw, "Edm.Double", ("Edm.String",))
        if looks_like_datetime(raw):
            return Value(raw, "Edm.DateTime", ("Edm.String",))
        # The SDK returns a Guid as {value, type}, so a plain string in Guid form is a String.
        return Value(raw, "Edm.String")
    if isinstance(raw, dict) and set(raw) == {"value", "type"} and raw["type"] in _JS_TYPES:
        return Value(raw["value"], "Edm." + raw["type"], typed=True)
    if isinstance(raw, dict) and raw.get("type") == "Buffer" and isinstance(raw.get("data"), list):
        try:
            data = bytes(raw["data"])
        except (TypeError, ValueError):
            raise InvalidInput(f"property {name!r}: a Buffer's data must be bytes (0-255)") from None
        return Value(base64.b64encode(data).decode(), "Edm.Binary", typed=True)
    raise InvalidInput(f"property {name!r}: {str(raw)[:60]} is not a value the JS SDK returns")


def seed_properties(record: object) -> tuple[dict, dict[str, Value]]:
    """(keys, properties) of one entity of an old JS backup."""
    if not isinstance(record, dict):
        raise InvalidInput("not a JSON object")
    keys = _keys(record, ("partitionKey", "rowKey"))
    properties = {
        name: _seed_value(name, raw)
        for name, raw in record.items()
        if name not in ("partitionKey", "rowKey", "etag", "timestamp") and not name.startswith("odata.")
    }
    return keys, properties


def _looks_like_base64(text: str) -> bool:
    """What the CLI prints for a Binary: standard padded base64 that decodes and encodes back the same."""
    if not text or len(text) % 4 or not _BASE64.fullmatch(text):
        return False
    return base64.b64encode(base64.b64decode(text)).decode() == text


def _cli_value(name: str, raw: object) -> Value:
    if isinstance(raw, bool):
        return Value(raw, "Edm.Boolean")
    if isinstance(raw, int):
        return Value(raw, "Edm.Int32")
    if isinstance(raw, float):
        return Value(raw, "Edm.Double")
    if isinstance(raw, str):
        if _CLI_DATETIME.fullmatch(raw):
            return Value(raw, "Edm.DateTime", ("Edm.String",))
        if _CLI_GUID.fullmatch(raw):
            return Value(raw, "Edm.Guid", ("Edm.String",))
        # A Binary is printed as base64, which many short strings also are ("John", "2024"); an
        # empty string is taken as a String, as an empty Binary is rare and every table has them.
        if _looks_like_base64(raw):
            return Value(raw, "Edm.String", ("Edm.Binary",))
        return Value(raw, "Edm.String")
    if isinstance(raw, dict) and set(raw) == {"edm_type", "value"} and isinstance(raw["edm_type"], str):
        return Value(raw["value"], raw["edm_type"], typed=True)
    raise InvalidInput(f"property {name!r}: {str(raw)[:60]} is not a value az storage entity query prints")


def _cli_keys(record: dict) -> dict:
    """The keys, where the CLI leaves an empty one out: the Python SDK it prints through drops a key
    that is "". Only in a whole entity (its Timestamp a string) does a missing key mean an empty one."""
    keys = {}
    for key in KEYS:
        value = record.get(key)
        if key not in record and isinstance(record.get("Timestamp"), str):
            value = ""
        elif key not in record and "Timestamp" in record and record["Timestamp"] is None:
            raise InvalidInput(
                f"{key} is missing, and this az storage entity query had --select (its Timestamp is null), "
                f"where an empty {key} and one not selected look alike: export again without --select"
            )
        if not isinstance(value, str):
            raise InvalidInput(f"{key} is missing or not a string")
        keys[key] = value
    return keys


def cli_properties(record: object) -> tuple[dict, dict[str, Value]]:
    """(keys, properties) of one item of an Azure CLI entity query."""
    if not isinstance(record, dict):
        raise InvalidInput("not a JSON object")
    keys = _cli_keys(record)
    properties = {
        name: _cli_value(name, raw)
        for name, raw in record.items()
        if name not in (*KEYS, "etag", "Timestamp") and not name.startswith("odata.")
    }
    return keys, properties


READERS = {SEED: seed_properties, AZURE_CLI: cli_properties}
