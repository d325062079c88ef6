"""Verification triggers: the daily verification after the backup, the monthly DR drill, and
GET /api/drills for the drill history."""

import logging

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field

from tablebackup.core.clients import Storage
from tablebackup.http import Given, error_response, json_response, parse_fields, query_fields
from tablebackup.verify.checker import verify_and_record
from tablebackup.verify.drills import drill_history, scheduled_drills

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("verify_daily")
@bp.timer_trigger(arg_name="timer", schedule="%VERIFY_SCHEDULE%", run_on_startup=False, use_monitor=True)
def verify_daily(timer: func.TimerRequest) -> None:
    outcomes = verify_and_record(Storage.from_settings(), every_table=True)
    failed = [outcome.summary() for outcome in outcomes if not outcome.ok]
    if failed:
        # Failing the invocation is what fires the platform's failure alert.
        raise RuntimeError("; ".join(failed))


@bp.function_name("dr_drill")
@bp.timer_trigger(arg_name="timer", schedule="%DRILL_SCHEDULE%", run_on_startup=False, use_monitor=True)
def dr_drill(timer: func.TimerRequest) -> None:
    drills = scheduled_drills(Storage.from_settings())
    failed = [drill.table for drill in drills if not drill.ok]
    if failed:
        raise RuntimeError(f"DR drill failed for {', '.join(failed)}")


class DrillQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    table: Given | None = None
    limit: int = Field(50, ge=1, le=1000)


@bp.function_name("list_drills")
@bp.route(route="drills", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_drills(req: func.HttpRequest) -> func.HttpResponse:
    try:
        query = parse_fields(query_fields(req), DrillQuery)
        drills = drill_history(Storage.from_settings(), query.table, query.limit)
    except Exception as error:
        return error_response(error)
    return json_response({"drills": drills})
