"""Restore triggers: POST /api/restore, GET /api/restore/{operation}, and the queue worker that
runs restores too large for one HTTP answer."""

import typing
from datetime import UTC, datetime
from typing import Literal

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tablebackup.core.accounts import parse_target_account
from tablebackup.core.clients import Storage
from tablebackup.core.errors import InvalidInput
from tablebackup.core.instants import parse_instant
from tablebackup.http import Given, caller, error_response, json_response, parse_body
from tablebackup.restore import operations
from tablebackup.restore.restorer import RestoreRequest
from tablebackup.storage.targets import REPLAY_INTO_ANOTHER_ACCOUNT

bp = func.Blueprint()


class RestoreBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    table: Given
    backup: Given | None = None
    as_of: datetime | None = Field(None, alias="asOf")
    target: str | None = None  # a blank one: check_target_given refuses it, as for the CLI
    filter: Given | None = Field(None, max_length=10_000)
    mode: Literal["replace", "merge", "missing", "mirror"] = "replace"
    dry_run: bool = Field(False, alias="dryRun")
    force: bool = False
    # With asOf: restore the newest backup finished by then and replay the audit trail up to asOf.
    replay_audit: bool = Field(False, alias="replayAudit")
    # The target may be one of the app's own tables, in a mode that deletes nothing.
    allow_app_table: bool = Field(False, alias="allowAppTable")
    # Another storage account (tablebackup.core.accounts), by the HTTP rules: a setting named *_CONNECTION_STRING.
    target_account: str | None = Field(None, alias="targetAccount", max_length=1024)

    @field_validator("target_account")
    @classmethod
    def _target_account(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_target_account(value, over_http=True)
            except InvalidInput as error:
                raise ValueError(str(error)) from None  # pydantic's field error: HTTP 400 naming the field
        return value

    @model_validator(mode="after")
    def _no_replay_elsewhere(self):
        if self.replay_audit and self.target_account is not None:
            raise ValueError(REPLAY_INTO_ANOTHER_ACCOUNT)
        return self

    @field_validator("as_of", mode="before")
    @classmethod
    def _all_seven_digits(cls, value):
        # pydantic's datetime keeps 6 fractional digits; the service's instants have 7.
        if isinstance(value, str):
            try:
                return parse_instant(value)
            except ValueError:
                return value  # pydantic refuses it with its own message
        return value


@bp.function_name("restore_table")
@bp.route(route="restore", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.queue_output(arg_name="jobs", queue_name=operations.QUEUE, connection="AzureWebJobsStorage")
def restore_table(req: func.HttpRequest, jobs: func.Out[str]) -> func.HttpResponse:
    try:
        body = parse_body(req, RestoreBody)
        as_of = body.as_of.replace(tzinfo=body.as_of.tzinfo or UTC) if body.as_of else None
        request = RestoreRequest(
            table=body.table,
            backup=body.backup,
            as_of=as_of,
            target=body.target,
            filter=body.filter,
            mode=body.mode,
            dry_run=body.dry_run,
            force=body.force,
            actor=caller(req),
            allow_app_table=body.allow_app_table,
            target_account=body.target_account,
        )
        answer, message = operations.start(Storage.from_settings(), request, replay_audit=body.replay_audit)
    except Exception as error:
        return error_response(error)
    if message is None:
        return json_response(answer)
    jobs.set(message)
    return json_response(answer, 202)


@bp.function_name("restore_status")
@bp.route(route="restore/{operation}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def restore_status(req: func.HttpRequest) -> func.HttpResponse:
    try:
        return json_response(operations.status(Storage.from_settings(), req.route_params.get("operation", "")))
    except Exception as error:
        return error_response(error)


@bp.function_name("restore_worker")
@bp.queue_trigger(arg_name="msg", queue_name=operations.QUEUE, connection="AzureWebJobsStorage")
@bp.queue_output(arg_name="jobs", queue_name=operations.QUEUE, connection="AzureWebJobsStorage")
def restore_worker(msg: func.QueueMessage, jobs: func.Out[typing.List[str]]) -> None:  # noqa: UP006 (see function_app)
    """An operation's first message, or one of its key ranges; the first sends the ranges back onto
    the queue, for every instance to take."""
    ranges = operations.run_queued(Storage.from_settings(), msg.get_body(), delivery=msg.dequeue_count or 1)
    if ranges:
        jobs.set(ranges)
