"""The audit message the application sends for each change, and its validation.

A message is one JSON object: tableName, operation (INSERT, UPDATE or DELETE), partitionKey and
rowKey (or the older "entityKey": "PK:RK", split on its first colon), userId, timestamp (ISO-8601,
UTC if it has no offset; up to 7 fractional digits kept), and beforeData / afterData, each the
entity as a JSON object (with @odata.type annotations, as backups write them) or null, and
optionally sequence: an integer that grows with each message the sender sends, which orders changes
of one entity that share a timestamp (tablebackup.audit.client sends one).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, field_validator, model_validator

from tablebackup.core import wirejson
from tablebackup.core.instants import tick_of
from tablebackup.core.names import validate_table_name

DATA_OPERATIONS = ("INSERT", "UPDATE", "DELETE")
# Written by this app only (tablebackup.audit.entries.record_operation), never accepted from the queue.
APP_OPERATIONS = ("RESTORE", "IMPORT", "EXPORT", "PRUNE", "ERASE")
OPERATIONS = DATA_OPERATIONS + APP_OPERATIONS

_INSTANT_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,7}))?(Z|[+-]\d{2}:\d{2})?\Z", re.ASCII)
# Edm.DateTime's range in the Table service.
_FIRST_YEAR, _LAST_YEAR = 1601, 9999
_INT64 = (-(2**63), 2**63 - 1)
MAX_KEY_CHARS = 1024


class Rejected(Exception):
    """A message that can never become an entry; the message is the one-line reason."""


def canonical_instant(text: str) -> str:
    """The instant as UTC `YYYY-MM-DDTHH:MM:SS.fffffffZ` (7 digits, so text order is time order)."""
    match = _INSTANT_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not an ISO-8601 instant such as 2026-11-25T02:00:00.1234567Z")
    day, clock, fraction, zone = match.groups()
    zone = "+00:00" if zone in (None, "Z") else zone
    try:
        instant = datetime.fromisoformat(f"{day}T{clock}{zone}").astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(f"{text!r} is not a valid instant") from None
    if not _FIRST_YEAR <= instant.year <= _LAST_YEAR:
        raise ValueError(f"{text!r} is outside {_FIRST_YEAR}-{_LAST_YEAR}, the Table service's DateTime range")
    return f"{instant.replace(tzinfo=None).isoformat(timespec='seconds')}.{(fraction or '').ljust(7, '0')}Z"


def instant_text(instant: datetime) -> str:
    """A datetime (naive means UTC) in the canonical form of canonical_instant, with the 7th digit
    an Instant (tablebackup.core.instants) keeps."""
    instant = (instant if instant.tzinfo else instant.replace(tzinfo=UTC)).astimezone(UTC).replace(tzinfo=None)
    return f"{instant.isoformat(timespec='seconds')}.{instant.microsecond:06d}{tick_of(instant)}Z"


def _text(min_chars: int, max_chars: int, optional: bool = True) -> PlainValidator:
    """A string field checked in Python: pydantic's own str refuses a lone surrogate, which a key
    or a user id the service holds can contain (a JavaScript application can store one)."""

    def check(value: Any) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise ValueError("Input should be a valid string")
        if not min_chars <= len(value) <= max_chars:
            raise ValueError(f"should have {min_chars} to {max_chars} characters, not {len(value)}")
        return value

    return PlainValidator(check)


class AuditMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    table_name: str = Field(alias="tableName")
    operation: Literal["INSERT", "UPDATE", "DELETE"]
    partition_key: Annotated[str | None, _text(0, MAX_KEY_CHARS)] = Field(None, alias="partitionKey")
    row_key: Annotated[str | None, _text(0, MAX_KEY_CHARS)] = Field(None, alias="rowKey")
    entity_key: Annotated[str | None, _text(0, 2 * MAX_KEY_CHARS + 1)] = Field(None, alias="entityKey")
    user_id: Annotated[str, _text(1, 1024, optional=False)] = Field(alias="userId")
    timestamp: str
    before_data: dict[str, Any] | None = Field(None, alias="beforeData")
    after_data: dict[str, Any] | None = Field(None, alias="afterData")
    sequence: int | None = Field(None, ge=0, le=_INT64[1])

    @field_validator("table_name")
    @classmethod
    def _is_table_name(cls, value: str) -> str:
        try:
            return validate_table_name(value)
        except Exception as error:
            raise ValueError(str(error)) from None

    @field_validator("timestamp")
    @classmethod
    def _is_instant(cls, value: str) -> str:
        return canonical_instant(value)

    @model_validator(mode="after")
    def _has_keys(self) -> AuditMessage:
        if self.partition_key is None and self.row_key is None and self.entity_key is not None:
            # Keys may contain colons; the older form is split on the first one (send explicit keys instead).
            partition_key, colon, row_key = self.entity_key.partition(":")
            if not colon:
                raise ValueError('entityKey must be "PartitionKey:RowKey"; better, send partitionKey and rowKey')
            self.partition_key, self.row_key = partition_key, row_key
        if self.partition_key is None or self.row_key is None:
            raise ValueError('give partitionKey and rowKey (or entityKey "PK:RK")')
        if self.entity_key is not None and self.entity_key != f"{self.partition_key}:{self.row_key}":
            raise ValueError("entityKey does not match partitionKey:rowKey")
        return self


@dataclass(frozen=True)
class AuditEvent:
    """A valid message. before_data / after_data are each image as compact JSON text: the values,
    key order and @odata.type annotations as received; "null" when absent."""

    table: str
    operation: str
    partition_key: str
    row_key: str
    user_id: str
    timestamp: str  # canonical_instant form
    before_data: str
    after_data: str
    sequence: int | None = None  # the sender's order of changes that share a timestamp

    @property
    def entity_key(self) -> str:
        return f"{self.partition_key}:{self.row_key}"


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON (send a Double as the string {name!r} with Edm.Double)")


def _checked_int(text: str) -> int:
    value = int(text)
    if not _INT64[0] <= value <= _INT64[1]:
        raise ValueError(f"integer {text} is beyond 64 bits (send an Int64 as a string with Edm.Int64)")
    return value


def parse_json(body: bytes | str) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, integers within 64 bits (kept exact, unlike a float)."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        return json.loads(text, parse_constant=_refuse_constant, parse_int=_checked_int)
    except UnicodeDecodeError:
        raise Rejected("not JSON: the message is not UTF-8 text") from None
    except RecursionError:
        # Python's parser gives up about 1,000 levels down; no entity is nested at all.
        raise Rejected("not JSON this writer accepts: nested too deeply (an entity's properties are flat)") from None
    except ValueError as error:
        raise Rejected(f"not JSON: {str(error).splitlines()[0]}") from None


def _describe(error: ValidationError) -> str:
    parts = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts).replace("\n", " ")


def _json_text(value: dict | None) -> str:
    """An image as compact JSON text, lossless for every string the service holds: a lone surrogate
    (a JavaScript application can store one) is kept as its JSON escape, which the readers
    (tablebackup.core.wirejson.loads) read back as it was."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError as error:
        if "surrogate" not in str(error):  # nested deeper than orjson writes, say: refused as before
            raise Rejected(f"not JSON: {error}") from None
    return wirejson.dumps(value).decode()


def parse_message(body: bytes | str) -> AuditEvent:
    """The event in one queue message; Rejected (with the reason) if it can never become an entry."""
    data = parse_json(body)
    if not isinstance(data, dict):
        raise Rejected("not a JSON object")
    try:
        message = AuditMessage.model_validate(data)
    except ValidationError as error:
        raise Rejected(f"invalid audit message: {_describe(error)}") from None
    return AuditEvent(
        table=message.table_name,
        operation=message.operation,
        partition_key=message.partition_key,
        row_key=message.row_key,
        user_id=message.user_id,
        timestamp=message.timestamp,
        before_data=_json_text(data.get("beforeData")),
        after_data=_json_text(data.get("afterData")),
        sequence=message.sequence,
    )
