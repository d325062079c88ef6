"""Status triggers: GET /api/status (JSON) and GET /api/status/page (one HTML page), both behind a
function key; the page takes the key as ?code= so a person can open it in a browser."""

import azure.functions as func
from pydantic import BaseModel, ConfigDict

from tablebackup.core.clients import Storage
from tablebackup.core.errors import InvalidInput
from tablebackup.http import Given, error_response, json_response, parse_fields, query_fields
from tablebackup.status.page import CONTENT_SECURITY_POLICY, render
from tablebackup.status.report import account_status

bp = func.Blueprint()


class StatusQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    table: Given | None = None

    def tables(self):
        """`?table=a,b` as ["a", "b"]; None means every table."""
        if self.table is None:
            return None
        names = [name.strip() for name in self.table.split(",")]
        if not all(names):
            raise InvalidInput("invalid request: table: expected table names separated by commas")
        return names


def _document(req: func.HttpRequest) -> dict:
    query = parse_fields(query_fields(req), StatusQuery)
    return account_status(Storage.from_settings(), query.tables())


@bp.function_name("get_status")
@bp.route(route="status", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def get_status(req: func.HttpRequest) -> func.HttpResponse:
    try:
        return json_response(_document(req))
    except Exception as error:
        return error_response(error)


@bp.function_name("get_status_page")
@bp.route(route="status/page", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def get_status_page(req: func.HttpRequest) -> func.HttpResponse:
    try:
        document = _document(req)
    except Exception as error:
        return error_response(error)
    return func.HttpResponse(
        render(document),
        status_code=200,
        mimetype="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        },
    )
