"""Audit triggers: the queue writer on %AUDIT_QUEUE% and GET /api/audit."""

from datetime import datetime
from typing import Annotated

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from tablebackup.audit.queries import PAGE_ENTRIES, entries_page
from tablebackup.audit.writer import handle_message
from tablebackup.core.clients import Storage
from tablebackup.http import Given, error_response, json_response, parse_fields, query_fields

bp = func.Blueprint()


@bp.function_name("audit_writer")
# Binary: the host hands over the message's bytes as they are; as text it would replace what is not
# UTF-8 with U+FFFD before the function could keep the body byte for byte.
@bp.queue_trigger(
    arg_name="msg", queue_name="%AUDIT_QUEUE%", connection="AzureWebJobsStorage", data_type=func.DataType.BINARY
)
def audit_writer(msg: func.QueueMessage) -> None:
    handle_message(
        Storage.from_settings(),
        msg.get_body(),
        msg.id,
        inserted_at=msg.insertion_time,
        delivery=msg.dequeue_count or 1,
    )


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    table: Given | None = None
    # An empty key is a key: ?partitionKey= asks for the entities whose PartitionKey is "".
    partition_key: str | None = Field(None, alias="partitionKey")
    row_key: str | None = Field(None, alias="rowKey")
    operation: Given | None = None
    user: Given | None = None
    since: datetime | None = None
    until: datetime | None = None
    continuation: Given | None = None
    # A query string value is text: digits only, no sign, spaces or exponent.
    limit: Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{0,3}$")] = str(PAGE_ENTRIES)


@bp.function_name("list_audit_entries")
@bp.route(route="audit", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_audit_entries(req: func.HttpRequest) -> func.HttpResponse:
    try:
        query = parse_fields(query_fields(req), AuditQuery)
        criteria = query.model_dump(exclude={"limit"})
        entries, continuation = entries_page(Storage.from_settings(), **criteria, limit=int(query.limit))
    except Exception as error:
        return error_response(error)
    return json_response({"entries": entries, "continuation": continuation})
