"""Entity encoding: one backup line per entity, the service's own JSON with explicit EDM types.

A line is the entity as the Table service sends it (odata=minimalmetadata): strings, booleans and
Int32 bare; Int64, DateTime, Guid and Binary as strings annotated with "<name>@odata.type". We
also annotate every Double, so a whole Double such as 2.0 can never be read back as an Int32 by
a reader that does not distinguish 2.0 from 2. Timestamp is kept for reference only.
"""

from __future__ import annotations

import base64
import binascii
import math
import re

import orjson

from tablebackup.core import wirejson
from tablebackup.core.errors import InvalidInput

TYPE_SUFFIX = "@odata.type"
KEYS = ("PartitionKey", "RowKey")
# Service metadata: kept in the backup, never written back as a property.
SYSTEM_PROPERTIES = ("Timestamp",)

EDM_TYPES = {
    "Edm.String",
    "Edm.Boolean",
    "Edm.Int32",
    "Edm.Int64",
    "Edm.Double",
    "Edm.DateTime",
    "Edm.Guid",
    "Edm.Binary",
}
# The types a backup line marks with "<name>@odata.type" (every Double too); the others are bare JSON.
ANNOTATED_TYPES = frozenset({"Edm.Int64", "Edm.Double", "Edm.DateTime", "Edm.Guid", "Edm.Binary"})
_DOUBLE_WORDS = {"NaN", "Infinity", "-Infinity"}
_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,7})?)?(Z|[+-]\d{2}:\d{2})?\Z", re.ASCII)
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


def encode_line(wire: dict) -> bytes:
    """One backup line from one entity of a query response page."""
    wire.pop("odata.etag", None)
    doubles = [name for name, value in wire.items() if type(value) is float]
    for name in doubles:
        wire[name + TYPE_SUFFIX] = "Edm.Double"
    return wirejson.dumps(wire) + b"\n"


def decode_line(line: bytes | str) -> dict:
    """The entity on one backup line; InvalidInput if the line is not a valid entity."""
    try:
        entity = wirejson.loads(line)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"not JSON: {error}") from None
    check_entity(entity)
    return entity


def edm_type(entity: dict, name: str) -> str:
    """The EDM type of one property, from its annotation or its JSON type."""
    annotated = entity.get(name + TYPE_SUFFIX)
    if annotated:
        return annotated
    value = entity[name]
    if isinstance(value, bool):
        return "Edm.Boolean"
    if isinstance(value, int):
        return "Edm.Int32"
    if isinstance(value, float):
        return "Edm.Double"
    return "Edm.String"


def check_entity(entity: object) -> None:
    """Raise InvalidInput unless this is a well-formed entity with valid keys and typed values."""
    if not isinstance(entity, dict):
        raise InvalidInput("not a JSON object")
    for key in KEYS:
        if not isinstance(entity.get(key), str):
            raise InvalidInput(f"{key} is missing or not a string")
    for name, value in entity.items():
        if name.endswith(TYPE_SUFFIX):
            prop = name[: -len(TYPE_SUFFIX)]
            if prop not in entity:
                raise InvalidInput(f"type annotation {name!r} has no property")
            if value not in EDM_TYPES:
                raise InvalidInput(f"property {prop!r} has unknown type {value!r}")
        elif not name.startswith("odata."):
            _check_value(name, edm_type(entity, name), value)


def _check_value(name: str, edm: str, value: object) -> None:
    if _value_fits(edm, value):
        return
    raise InvalidInput(f"property {name!r}: {value!r} is not a valid {edm}")


def _value_fits(edm: str, value: object) -> bool:
    if edm == "Edm.String":
        return isinstance(value, str)
    if edm == "Edm.Boolean":
        return isinstance(value, bool)
    if edm == "Edm.Int32":
        return type(value) is int and _INT32[0] <= value <= _INT32[1]
    if edm == "Edm.Int64":
        return isinstance(value, str) and _fits_int64(value)
    if edm == "Edm.Double":
        return (type(value) in (float, int) and math.isfinite(value)) or (
            isinstance(value, str) and value in _DOUBLE_WORDS
        )
    if edm == "Edm.DateTime":
        return isinstance(value, str) and bool(_DATETIME_RE.match(value))
    if edm == "Edm.Guid":
        return isinstance(value, str) and bool(_GUID_RE.match(value))
    if edm == "Edm.Binary":
        return isinstance(value, str) and _is_base64(value)
    return False


def _fits_int64(text: str) -> bool:
    try:
        return _INT64[0] <= int(text) <= _INT64[1]
    except ValueError:
        return False


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
        return True
    except (binascii.Error, ValueError):
        return False


def writable(entity: dict) -> dict:
    """The entity as a write request body: its properties and types, no service metadata. A Double
    the input left unannotated (the service's own JSON writes 2.0 bare) is annotated, or the
    service would store a whole one as an Int32."""
    body = {
        name: value
        for name, value in entity.items()
        if name not in SYSTEM_PROPERTIES and not name.startswith("odata.") and not name.startswith("Timestamp@")
    }
    for name in [name for name, value in body.items() if type(value) is float and name + TYPE_SUFFIX not in body]:
        body[name + TYPE_SUFFIX] = "Edm.Double"
    return body


def service_order(entity: dict) -> tuple[bytes, bytes]:
    """The Table service's key order: PartitionKey, then RowKey, each compared by UTF-16 code units
    (ordinal, as .NET and Azurite compare strings), so streams the service listed can be merged."""
    return (
        entity["PartitionKey"].encode("utf-16-be", "surrogatepass"),
        entity["RowKey"].encode("utf-16-be", "surrogatepass"),
    )
