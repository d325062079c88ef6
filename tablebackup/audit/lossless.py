"""An entity from the SDK (TableEntity or a dict of Python values) in the lossless JSON backups use,
so an audit image can be replayed exactly: Int64, DateTime, Guid, Binary and Double values carry
`<name>@odata.type`; strings, booleans and Int32 are bare (tablebackup/core/entities.py)."""

from __future__ import annotations

import base64
import math
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from azure.data.tables import EdmType, EntityProperty

from tablebackup.core.entities import TYPE_SUFFIX

_INT32 = (-(2**31), 2**31 - 1)


def _datetime(value: Any) -> str:
    if isinstance(value, str):
        return value
    # The SDK keeps the service's 7-digit text on the datetimes it reads.
    service_value = getattr(value, "tables_service_value", "")
    if service_value:
        return service_value
    value = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).replace(tzinfo=None)
    return f"{value.isoformat(timespec='seconds')}.{value.microsecond:06d}0Z"


def _double(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return float(value)


def _typed(edm: str, value: Any) -> tuple[Any, str | None]:
    converters = {
        EdmType.INT64.value: str,
        EdmType.DATETIME.value: _datetime,
        EdmType.GUID.value: str,
        EdmType.BINARY.value: lambda v: v if isinstance(v, str) else base64.b64encode(v).decode(),
        EdmType.DOUBLE.value: _double,
    }
    if edm in converters:
        return converters[edm](value), edm
    return value, None


def _value(value: Any) -> tuple[Any, str | None]:
    if isinstance(value, EntityProperty):
        return _typed(str(getattr(value.edm_type, "value", value.edm_type)), value.value)
    if isinstance(value, bool | str):
        return value, None
    if isinstance(value, int):
        return (value, None) if _INT32[0] <= value <= _INT32[1] else (str(value), EdmType.INT64.value)
    if isinstance(value, float):
        return _typed(EdmType.DOUBLE.value, value)
    if isinstance(value, datetime):
        return _typed(EdmType.DATETIME.value, value)
    if isinstance(value, uuid.UUID):
        return str(value), EdmType.GUID.value
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode(), EdmType.BINARY.value
    raise TypeError(f"{type(value).__name__} is not a Table entity value")


def lossless_entity(entity: Mapping[str, Any]) -> dict:
    """The entity as lossless JSON; annotations it already has are kept, None values dropped."""
    result: dict[str, Any] = {}
    for name, value in entity.items():
        if name.endswith(TYPE_SUFFIX) or value is None:
            continue
        annotated = entity.get(name + TYPE_SUFFIX)
        result[name], edm = _typed(annotated, value) if annotated else _value(value)
        if annotated or edm:
            result[name + TYPE_SUFFIX] = annotated or edm
    return result
