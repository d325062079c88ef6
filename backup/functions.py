"""Backup triggers: the daily timer, on-demand POST /api/backups and GET /api/backups."""

import logging
import typing

import azure.functions as func
from pydantic import BaseModel, ConfigDict

from tablebackup.backup import runs
from tablebackup.backup.archiver import backup_tables, tables_to_back_up
from tablebackup.backup.listing import describe_backups
from tablebackup.backup.retention import policy_from_settings, prune
from tablebackup.core import telemetry
from tablebackup.core.clients import Storage
from tablebackup.core.errors import InvalidInput, NotFound
from tablebackup.core.names import BACKUP_ID_RE, table_key, validate_backup_id
from tablebackup.http import Given, caller, error_response, json_response, parse_body, parse_fields, query_fields
from tablebackup.inspect.show import LATEST, describe_backup
from tablebackup.repository.backupformat import BackupReason
from tablebackup.storage.tables import table_exists

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("backup_daily")
@bp.timer_trigger(arg_name="timer", schedule="%BACKUP_SCHEDULE%", run_on_startup=False, use_monitor=True)
@bp.queue_output(arg_name="jobs", queue_name=runs.QUEUE, connection="AzureWebJobsStorage")
def backup_daily(timer: func.TimerRequest, jobs: func.Out[typing.List[str]]) -> None:  # noqa: UP006 (see function_app)
    """Plan the run and fan it out: one queue message per table, or per range of a large table."""
    if timer.past_due:
        log.warning("daily backup is running late")
    run, messages = runs.start_run(Storage.from_settings())
    jobs.set(messages)
    log.info("daily backup run %s: %d work items queued", run, len(messages), extra={"run": run})


@bp.function_name("backup_worker")
@bp.queue_trigger(arg_name="msg", queue_name=runs.QUEUE, connection="AzureWebJobsStorage")
def backup_worker(msg: func.QueueMessage) -> None:
    # A failure raises: the queue retries the item, and its last failure fails the run visibly.
    runs.run_queued_item(Storage.from_settings(), msg.get_body(), delivery=msg.dequeue_count or 1)


@bp.function_name("prune_daily")
@bp.timer_trigger(arg_name="timer", schedule="%PRUNE_SCHEDULE%", run_on_startup=False, use_monitor=True)
def prune_daily(timer: func.TimerRequest) -> None:
    storage = Storage.from_settings()
    result = prune(storage, None, **policy_from_settings(storage.settings))
    log.info("retention: %d kept, %d deleted", len(result["keep"]), len(result["deleted"]))
    if result["failed"]:
        raise RuntimeError("pruning failed: " + "; ".join(f"{f['table']}: {f['error']}" for f in result["failed"]))


class BackupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tables: list[Given] | None = None
    all: bool = False


@bp.function_name("backup_now")
@bp.route(route="backups", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def backup_now(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    try:
        request = parse_body(req, BackupRequest)
        if request.tables is not None and not request.tables:
            raise InvalidInput("invalid request: tables: give at least one table, or leave it out")
        storage = Storage.from_settings()
        # backup_tables works on threads: their log records must carry this invocation's id.
        with telemetry.invocation(context):
            tables = tables_to_back_up(storage, request.tables, every_table=request.all)
            run = backup_tables(storage, tables, reason=BackupReason.on_demand(via="http", actor=caller(req)))
    except Exception as error:
        return error_response(error)
    if run.ok:
        return json_response(run.as_json())
    refused = {type(error) for error in run.failures.values()}
    # Only tables that do not exist: the caller's mistake. Anything else is ours.
    status = 404 if not run.backups and refused == {NotFound} else 500
    return json_response({**run.as_json(), "error": run.summary()}, status)


class ListRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    table: Given | None = None


@bp.function_name("list_backups")
@bp.route(route="backups", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_backups(req: func.HttpRequest) -> func.HttpResponse:
    try:
        request = parse_fields(query_fields(req), ListRequest)
        storage = Storage.from_settings()
        table = request.table or storage.settings.table_name  # only when ?table= is left out
        listing = describe_backups(storage, table)
        if not listing["backups"] and not table_exists(storage, table):
            raise NotFound(f"table {table!r} neither exists nor has complete backups: check its name")
    except Exception as error:
        return error_response(error)
    return json_response(listing)


class ShowRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    table: Given | None = None  # needed only for `latest`; an id names its table


@bp.function_name("show_backup")
@bp.route(route="backups/{id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def show_backup(req: func.HttpRequest) -> func.HttpResponse:
    """What one backup is (`tablebackup show`): by its id, or `latest` with ?table=."""
    try:
        request = parse_fields(query_fields(req), ShowRequest)
        backup = req.route_params.get("id", "")
        if backup == LATEST:
            if request.table is None:
                raise InvalidInput("give ?table= with latest: which table's latest backup")
            table = request.table
        else:
            table = BACKUP_ID_RE.fullmatch(validate_backup_id(backup))["table"]
            if request.table is not None and table_key(request.table) != table_key(table):
                raise InvalidInput(f"backup {backup!r} is not a backup of table {request.table!r}")
        answer = describe_backup(Storage.from_settings(), table, backup)
    except Exception as error:
        return error_response(error)
    return json_response(answer)
