"""Export and import triggers: GET /api/export/{table} and POST /api/import/{table}."""

from typing import Literal

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tablebackup.core.accounts import parse_target_account
from tablebackup.core.clients import Storage
from tablebackup.core.errors import InvalidInput
from tablebackup.http import Given, QueryFlag, caller, error_response, json_response, parse_fields, query_fields
from tablebackup.transfer import exporter
from tablebackup.transfer.importer import ImportRequest, import_entities
from tablebackup.transfer.records import MalformedInput
from tablebackup.transfer.sources import BlobSource, PayloadTooLarge, body_source
from tablebackup.transfer.typerules import AmbiguousTypes, parse_types

bp = func.Blueprint()

Format = Literal["ndjson", "json", "csv"]


class ExportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filter: Given | None = Field(None, max_length=10_000)
    select: Given | None = Field(None, max_length=10_000)
    format: Format = "ndjson"


@bp.function_name("export_table")
@bp.route(route="export/{table}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def export_table(req: func.HttpRequest) -> func.HttpResponse:
    try:
        query = parse_fields(query_fields(req), ExportQuery)
        request = exporter.ExportRequest(
            table=req.route_params.get("table", ""),
            filter=query.filter,
            select=exporter.parse_select(query.select),
            format=query.format,
            actor=caller(req),
        )
        answer = exporter.export_for_http(Storage.from_settings(), request)
    except Exception as error:
        return error_response(error)
    if isinstance(answer, exporter.BlobExport):
        return json_response(answer.as_json(), 202)
    return func.HttpResponse(
        answer.body,
        status_code=200,
        mimetype=answer.content_type,
        charset="utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{answer.file_name}"',
            "X-Entity-Count": str(answer.entities),
        },
    )


def _as_value_error(check) -> None:
    # pydantic reports only a ValueError as the field's error (HTTP 400 naming the field).
    try:
        check()
    except InvalidInput as error:
        raise ValueError(str(error)) from None


class ImportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    format: Format | None = None
    mode: Literal["replace", "merge", "missing"] = "replace"
    dry_run: QueryFlag = Field(False, alias="dryRun")
    blob: Given | None = Field(None, max_length=1024)
    # As the CLI's --types and --infer-types (tablebackup.transfer.typerules).
    types: Given | None = Field(None, max_length=10_000)
    infer_types: bool = Field(False, alias="inferTypes")
    # The table may be one of the app's own tables; import never deletes.
    allow_app_table: QueryFlag = Field(False, alias="allowAppTable")
    # Another storage account (tablebackup.core.accounts), by the HTTP rules: a setting named *_CONNECTION_STRING.
    target_account: Given | None = Field(None, alias="targetAccount", max_length=1024)

    @field_validator("target_account")
    @classmethod
    def _target_account(cls, value: str | None) -> str | None:
        if value is not None:
            _as_value_error(lambda: parse_target_account(value, over_http=True))
        return value


@bp.function_name("import_table")
@bp.route(route="import/{table}", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def import_table(req: func.HttpRequest) -> func.HttpResponse:
    try:
        query = parse_fields(query_fields(req), ImportQuery)
        storage = Storage.from_settings()
        if query.blob is not None:
            if req.get_body():
                raise InvalidInput("give the entities as the request body or name a blob with ?blob=, not both")
            source = BlobSource(exporter.exports_container(storage), query.blob)
        else:
            source = body_source(req.get_body() or b"", storage.settings.import_max_body_bytes)
        request = ImportRequest(
            table=req.route_params.get("table", ""),
            format=query.format,
            mode=query.mode,
            dry_run=query.dry_run,
            actor=caller(req),
            allow_app_table=query.allow_app_table,
            types=parse_types(query.types),
            infer_types=query.infer_types,
            target_account=query.target_account,
        )
        result = import_entities(storage, request, source)
    except PayloadTooLarge as error:
        return json_response({"error": str(error)}, 413)
    except (MalformedInput, AmbiguousTypes) as error:
        return json_response(error.as_json(), 400)
    except Exception as error:
        return error_response(error)
    if result.failed:
        return json_response({**result.as_json(), "error": result.refusals()}, 500)
    return json_response(result.as_json())
