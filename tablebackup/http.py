"""Shaping HTTP requests and responses for the function blueprints: JSON in, JSON out, and every
refusal a 4xx with a one-line {"error": ...} body."""

from __future__ import annotations

import logging
from typing import Annotated, TypeVar

import azure.functions as func
import orjson
from pydantic import AfterValidator, BaseModel, BeforeValidator, ValidationError

from tablebackup.core import wirejson
from tablebackup.core.errors import (
    BackupError,
    DamagedBackup,
    InvalidInput,
    NotFound,
    SettingsError,
    StorageUnavailable,
)

# Request bodies above this are refused before parsing.
MAX_BODY_BYTES = 64 * 1024

Model = TypeVar("Model", bound=BaseModel)


def json_response(body: dict, status: int = 200) -> func.HttpResponse:
    # wirejson: an entity or audit image may hold a lone surrogate, which the service stores.
    return func.HttpResponse(wirejson.dumps(body), status_code=status, mimetype="application/json")


def error_response(error: Exception) -> func.HttpResponse:
    """The status and one-line body for a failure; unexpected errors are not described."""
    status = {
        InvalidInput: 400,
        NotFound: 404,
        DamagedBackup: 422,  # the request is fine; the backup it names cannot be used
        SettingsError: 500,
        StorageUnavailable: 503,
    }.get(type(error), 500 if isinstance(error, BackupError) else None)
    if status is None:
        logging.getLogger(__name__).error("unexpected error", exc_info=error)
        return json_response({"error": "internal error; see the function's logs"}, 500)
    return json_response({"error": str(error)}, status)


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _query_flag(value: object) -> object:
    if isinstance(value, str):
        if value not in ("true", "false"):
            raise ValueError(f"use true or false, not {value!r}")
        return value == "true"
    return value


def _given(value: str) -> str:
    if not value.strip():
        raise ValueError("is empty: give a value")
    return value


# A value that names or narrows what a request touches (a table, a backup, a filter): given empty or
# blank (an unset variable in the caller's script) it is refused, never taken for the default.
Given = Annotated[str, AfterValidator(_given)]

# A boolean in a query string: exactly `true` or `false` (pydantic alone also takes yes, on, 1, ...).
QueryFlag = Annotated[bool, BeforeValidator(_query_flag)]


def parse_body(req: func.HttpRequest, model: type[Model]) -> Model:
    """The JSON body validated against the model with strict types (a string is not a boolean, a
    number in quotes is not a number, null is not a value); an empty body means all defaults."""
    raw = req.get_body() or b""
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidInput(f"request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        data = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"request body is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise InvalidInput("request body must be a JSON object")
    try:
        # JSON mode: strict, yet an ISO-8601 string still is a datetime (JSON has no other form).
        return model.model_validate_json(raw if data else b"{}", strict=True)
    except ValidationError as error:
        raise InvalidInput(f"invalid request: {_describe(error)}") from None


def query_fields(req: func.HttpRequest) -> dict:
    """The query string's parameters. `code` is the function key, which the host leaves in the
    query string. An empty value (`?filter=`) is kept: the model refuses it where it names or
    narrows (Given) rather than take it for the parameter left out."""
    return {name: value for name, value in req.params.items() if name != "code"}


def caller(req: func.HttpRequest) -> str:
    """Who called, for the audit trail: App Service authentication names the caller; a function key
    alone does not."""
    return req.headers.get("x-ms-client-principal-name") or "function-key"


def parse_fields(data: dict, model: type[Model]) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise InvalidInput(f"invalid request: {_describe(error)}") from None
