"""Entities as other tools wrote them, read into `typerules.Value`s: the shape decides what is typed.

- `seed`: the seed's old daily backup, `JSON.stringify(entities, null, 2)` of the JS SDK's
  `listEntities()`: keys `partitionKey`/`rowKey`, metadata `etag`/`timestamp`; Guid (and, in SDK
  12.0.0 betas, Int64 and DateTime) as `{"value", "type"}`; Binary as Node's `{"type": "Buffer",
  "data": [...]}`; DateTime as an ISO string; every number bare, so a whole Double reads like an Int32;
  NaN and ±Infinity as the strings the service sent.
- `azure-cli`: `az storage entity query` output (its `items`), from the Python SDK: Int64 as
  `{"edm_type": "Edm.Int64", "value": n}`, DateTime as `datetime.isoformat()` (6 digits, +00:00), Guid
  and Binary as plain strings, ints and floats apart, `etag` and `Timestamp` beside the properties.

What no shape can tell apart is given with its alternatives, for the typing rules to settle.
"""

from __future__ import annotations

import base64
import re

from tablebackup.core.entities import KEYS
from tablebackup.core.errors import InvalidInput
from tablebackup.transfer.typerules import Value, looks_like_datetime, looks_like_guid

SEED = "seed"
AZURE_CLI = "azure-cli"
NATIVE = "native"
_JS_TYPES = {"Int64", "Guid", "DateTime", "Double", "Int32", "String", "Boolean", "Binary"}
_DOUBLE_WORDS = {"NaN", "Infinity", "-Infinity"}
_INT32 = (-(2**31), 2**31 - 1)
# The service's entity etags, as the Python SDK returns them: W/"datetime'2026-12-03T10%3A30%3A00.1234567Z'"
_SERVICE_ETAG = re.compile(r"W/\"datetime'[0-9T%A.:Z-]+'\"")


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
    etag = record.get("etag")
    if (
        isinstance(etag, str)
        and _SERVICE_ETAG.fullmatch(etag)
        and isinstance(record.get("Timestamp"), str)
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


def _string(text: str, *, guid_is_typed: bool) -> Value:
    if looks_like_datetime(text):
        return Value(text, "Edm.DateTime", ("Edm.String",))
    if not guid_is_typed and looks_like_guid(text):
        return Value(text, "Edm.Guid", ("Edm.String",))
    return Value(text, "Edm.String")


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
        # The SDK returns a Guid as {value, type}, so a plain string in Guid form is a String.
        return _string(raw, guid_is_typed=True)
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


def _cli_value(name: str, raw: object) -> Value:
    if isinstance(raw, bool):
        return Value(raw, "Edm.Boolean")
    if isinstance(raw, int):
        return Value(raw, "Edm.Int32")
    if isinstance(raw, float):
        return Value(raw, "Edm.Double")
    if isinstance(raw, str):
        return _string(raw, guid_is_typed=False)
    if isinstance(raw, dict) and set(raw) == {"edm_type", "value"} and isinstance(raw["edm_type"], str):
        return Value(raw["value"], raw["edm_type"], typed=True)
    raise InvalidInput(f"property {name!r}: {str(raw)[:60]} is not a value az storage entity query prints")


def cli_properties(record: object) -> tuple[dict, dict[str, Value]]:
    """(keys, properties) of one item of an Azure CLI entity query."""
    if not isinstance(record, dict):
        raise InvalidInput("not a JSON object")
    keys = _keys(record, KEYS)
    properties = {
        name: _cli_value(name, raw)
        for name, raw in record.items()
        if name not in (*KEYS, "etag", "Timestamp") and not name.startswith("odata.")
    }
    return keys, properties


READERS = {SEED: seed_properties, AZURE_CLI: cli_properties}
