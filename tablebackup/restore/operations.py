"""Restores requested over HTTP: small ones run at once; large ones are queued, run by a queue
worker, and their progress and outcome are kept in a table so status survives restarts.

A request is resolved once, when it is asked: the backup `latest` or an as-of instant means then is
pinned in the request (RestoreRequest.resolved), named in the answer, the operation's status and
the audit entry, and every delivery of the queued message restores exactly it. The safety backup the
first delivery takes is kept on the operation's row, and a redelivery reuses it: the undo goes back
to the table as it was before the operation began."""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import asdict
from dataclasses import replace as replace_fields

import orjson

from tablebackup.audit.messages import instant_text
from tablebackup.core.clients import Storage
from tablebackup.core.errors import BackupError, InvalidInput, NotFound, StorageUnavailable
from tablebackup.core.instants import parse_instant
from tablebackup.repository.chain import state_size
from tablebackup.restore import fanout, records
from tablebackup.restore.pointintime import check_point_in_time, restore_to_instant
from tablebackup.restore.ranges import KeyRange
from tablebackup.restore.restorer import RestoreRequest, check_request, restore

log = logging.getLogger(__name__)

QUEUE = "restore-jobs"
# host.json extensions.queues.maxDequeueCount: the last delivery records the failure for good.
MAX_DELIVERIES = 5
_OPERATION_RE = re.compile(r"^[0-9a-f]{32}\Z")
_PROGRESS_EVERY_SECONDS = 5.0


def request_json(request: RestoreRequest, *, replay_audit: bool = False) -> dict:
    data = asdict(request)
    data["as_of"] = instant_text(request.as_of) if request.as_of else None  # all 7 digits
    if replay_audit:
        data["replay_audit"] = True  # a point-in-time restore: the backup, then the audit trail replayed
    return data


def request_from_json(data: dict) -> RestoreRequest:
    as_of = parse_instant(data["as_of"]) if data.get("as_of") else None
    fields = {name: value for name, value in data.items() if name != "replay_audit"}
    return RestoreRequest(**{**fields, "as_of": as_of})


def _run(storage: Storage, request: RestoreRequest, replay_audit: bool, on_progress=None, **safety) -> dict:
    if replay_audit:
        return restore_to_instant(storage, request, on_progress=on_progress, **safety).as_json()
    return restore(storage, request, on_progress=on_progress, **safety).as_json()


def start(storage: Storage, request: RestoreRequest, *, replay_audit: bool = False) -> tuple[dict, str | None]:
    """Run the restore now if it is small, else record it as queued. With replay_audit, a
    point-in-time restore (tablebackup.restore.pointintime). Its size is the table's state at the backup (for an
    incremental, its key set, not just what changed since its parent).

    Returns (answer, queue message): the message is None when the restore already ran."""
    # Every refusal happens here, before anything is written.
    checked = check_point_in_time(storage, request) if replay_audit else check_request(storage, request)
    # What `latest` or the instant means now is what this request restores, however often it runs.
    request = replace_fields(request, resolved=checked.manifest.backup)
    entities = state_size(checked.manifest)
    if entities <= storage.settings.restore_http_max_entities:
        return _run(storage, request, replay_audit), None
    operation = uuid.uuid4().hex
    request = replace_fields(request, operation=operation)
    records.create_table(storage)
    data = request_json(request, replay_audit=replay_audit)
    records.save(
        storage, operation, status="queued", request=orjson.dumps(data).decode(), backup=checked.manifest.backup
    )
    log.info("restore queued: operation=%s table=%s backup=%s", operation, request.table, checked.manifest.backup)
    answer = {
        "operation": operation,
        "status": "queued",
        "backup": checked.manifest.backup,
        "chosen": checked.chosen,
        "entities": entities,
        "statusUrl": f"/api/restore/{operation}",
    }
    return answer, orjson.dumps({"operation": operation, "request": data}).decode()


def run_queued(storage: Storage, message: str | bytes, delivery: int) -> list[str]:
    """The queue worker's job: the operation's first message, or one of its key ranges (a restore
    larger than RESTORE_PART_ENTITIES is cut into ranges, tablebackup.restore.fanout). Returns the
    messages to send on the queue: the ranges. Transient storage failures raise so the queue
    delivers again (a restore converges when rerun); anything else is recorded as failed and not
    retried."""
    try:
        data = orjson.loads(message)
        operation = data["operation"]
        if not isinstance(operation, str) or not _OPERATION_RE.match(operation):
            raise ValueError(f"invalid operation id {operation!r}")
        request = request_from_json(data["request"])
        replay_audit = data["request"].get("replay_audit") is True
        key_range = KeyRange.from_json(data["range"]) if "range" in data else None
        fresh_target = data.get("fresh") is True
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, InvalidInput) as error:
        log.error("restore message refused: %s", error)
        return []  # malformed: retrying can never help
    final = delivery >= MAX_DELIVERIES
    if key_range is not None:
        fanout.run_range(storage, operation, request, key_range, fresh_target, delivery, final)
        return []
    earlier = _row(storage, operation)
    try:
        if not replay_audit:  # a point-in-time restore replays the audit trail in order: one stream
            checked, ranges = fanout.ranges_for(storage, request)
            if len(ranges) > 1 or earlier.get("ranges"):
                return fanout.prepare(storage, operation, data["request"], request, checked, ranges, earlier)
        return _run_whole(storage, operation, request, replay_audit, earlier, delivery)
    except StorageUnavailable as error:
        records.save(storage, operation, status="failed" if final else "retrying", error=str(error))
        if not final:
            raise
    except BackupError as error:
        fanout.fail(storage, operation, request, str(error))
    return []


def _run_whole(
    storage: Storage, operation: str, request: RestoreRequest, replay_audit: bool, earlier: dict, delivery: int
) -> list[str]:
    """A restore in one stream, in this invocation."""
    records.save(storage, operation, status="running", delivery=delivery)
    last = [time.monotonic()]

    def report(count: int) -> None:
        if time.monotonic() - last[0] >= _PROGRESS_EVERY_SECONDS:
            last[0] = time.monotonic()
            records.save(storage, operation, status="running", progress=count)

    def keep_safety(backup: str) -> None:
        records.save(storage, operation, safety_backup=backup)

    result = _run(
        storage,
        request,
        replay_audit,
        on_progress=report,
        reuse_safety=earlier.get("safety_backup"),
        on_safety_backup=keep_safety,
    )
    records.save(storage, operation, status="succeeded", result=orjson.dumps(result).decode())
    return []


def _row(storage: Storage, operation: str) -> dict:
    """The operation's row as recorded so far; {} if there is none."""
    return dict(records.row(storage, operation))


def _ranges(storage: Storage, operation: str, entity: dict) -> dict | None:
    """A restore cut into ranges: how many are done, running, queued or failed."""
    if not entity.get("ranges"):
        return None
    rows = records.range_rows(storage, operation)
    states = [row.get("status") for row in rows]
    counts = {state: states.count(state) for state in ("done", "running", "retrying", "queued", "failed")}
    return {"total": int(entity["ranges"]), **counts}


def status(storage: Storage, operation: str) -> dict:
    if not _OPERATION_RE.match(operation or ""):
        raise InvalidInput(f"invalid operation id {operation!r}: expected 32 hex digits")
    entity = _row(storage, operation)
    if not entity:
        raise NotFound(f"restore operation {operation!r} not found")
    ranges = _ranges(storage, operation, entity)
    progress = entity.get("progress")
    if ranges is not None:  # what every range has written so far
        progress = sum(row.get("progress") or 0 for row in records.range_rows(storage, operation))
    return {
        "operation": operation,
        "status": entity["status"],
        "backup": entity.get("backup"),
        "safety_backup": entity.get("safety_backup"),
        "request": orjson.loads(entity["request"]) if entity.get("request") else None,
        "progress": progress,
        "ranges": ranges,
        "result": orjson.loads(entity["result"]) if entity.get("result") else None,
        "error": entity.get("error"),
        "updated_at": entity.get("updated_at"),
    }
