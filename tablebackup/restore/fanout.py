"""A queued restore cut into PartitionKey ranges, each a queue message that any Functions instance
runs (tablebackup.restore.ranges says where the cuts are).

The first delivery of the operation prepares it, doing before any range writes everything a restore
does before its first write: the request's checks, the hold on the backup, the backup's integrity
check, the `started` audit entry, the safety backup of an existing target and the creation of a new
one. It then records one row per range and sends one message per range. A range's delivery writes
its range (a mirror deletes within it), records its true counts and, if it was the last, finishes the
operation: the restore's record, the hold's release and the `ended` audit entry, once, by whoever
claims it. A range that fails is delivered again on its own; a range already done does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime

import orjson

from tablebackup.audit.entries import write_operation_phase
from tablebackup.core.clients import Storage
from tablebackup.core.errors import BackupError, StorageUnavailable
from tablebackup.repository.attempts import hold_backup, release_hold
from tablebackup.repository.integrity import check_whole_backup
from tablebackup.restore import records
from tablebackup.restore.ranges import KeyRange, plan_ranges
from tablebackup.restore.restorer import (
    SAFETY_MODES,
    RestoreRequest,
    RestoreResult,
    audit_plan,
    check_request,
    record_completed,
    take_safety_backup,
    undo_command,
    write_range,
)
from tablebackup.storage.tables import create_table, table_exists

log = logging.getLogger(__name__)

# A range whose row was touched this recently is being written by another instance: a second
# message for it (a redelivered plan) leaves it alone. Progress is recorded every 5 s.
LEASE_SECONDS = 120
_PROGRESS_EVERY_SECONDS = 5.0


def _audit(storage: Storage, operation: str, request: RestoreRequest, checked, phase: str, details: dict) -> None:
    # The operation id of the audit pair is the restore operation's own: a redelivery writes the same entry.
    write_operation_phase(storage, "RESTORE", request.actor, checked.target, str(uuid.UUID(operation)), phase, details)


def ranges_for(storage: Storage, request: RestoreRequest) -> tuple[object, list[KeyRange]]:
    """The checked request and the ranges it restores in (one: not worth cutting)."""
    checked = check_request(storage, request)
    if checked.legacy is not None or request.dry_run:
        return checked, [KeyRange(index=0)]
    return checked, plan_ranges(storage.backups, checked.manifest, storage.settings.restore_part_entities)


def prepare(
    storage: Storage,
    operation: str,
    request_data: dict,
    request: RestoreRequest,
    checked,
    ranges: list[KeyRange],
    earlier: dict,
) -> list[str]:
    """Everything before the first write, then one message per range. A redelivery after the
    ranges were recorded sends again the messages of the ranges not done yet."""
    if earlier.get("ranges"):
        done = {int(row["RowKey"]) for row in records.range_rows(storage, operation) if row.get("status") == "done"}
        fresh = bool(earlier.get("fresh_target"))
        return [_message(operation, request_data, r, fresh) for r in ranges if r.index not in done]
    hold = earlier.get("hold") or hold_backup(storage.backups, checked.manifest.backup)
    try:
        if not request.force:
            check_whole_backup(storage.backups, checked.manifest)  # a damaged backup changes nothing
    except BackupError:
        release_hold(storage.backups, hold)
        raise
    # Recorded before the entry is written: a failure from here on ends the pair (fail()).
    records.save(storage, operation, status="running", hold=hold, begun=records.now_text(), started=True)
    _audit(storage, operation, request, checked, "started", audit_plan(request, checked))
    data = checked.data or storage
    exists = table_exists(data, checked.target)
    safety = {}
    if request.mode in SAFETY_MODES and exists:
        backup, _ = take_safety_backup(data, request, checked.manifest, checked.target, earlier.get("safety_backup"))
        safety = {"safety_backup": backup}
        records.save(storage, operation, **safety)
    if not exists:
        create_table(data, checked.target)
    records.save_ranges(storage, operation, [{"index": r.index, "status": "queued", **_bounds(r)} for r in ranges])
    records.save(storage, operation, ranges=len(ranges), fresh_target=not exists)
    log.info(
        "restore %s of %s: %d key ranges queued",
        operation,
        request.table,
        len(ranges),
        extra={"table": request.table, "backup": checked.manifest.backup, "operation": operation},
    )
    return [_message(operation, request_data, key_range, not exists) for key_range in ranges]


def _bounds(key_range: KeyRange) -> dict:
    fields = {"low": key_range.low, "high": key_range.high, "part": key_range.part}
    return {name: value for name, value in fields.items() if value is not None}


def _message(operation: str, request_data: dict, key_range: KeyRange, fresh_target: bool) -> str:
    body = {"operation": operation, "request": request_data, "range": key_range.as_json(), "fresh": fresh_target}
    return orjson.dumps(body).decode()


def _fresh(updated_at: str | None) -> bool:
    if not updated_at:
        return False
    age = datetime.now(UTC) - datetime.fromisoformat(updated_at.replace("Z", "+00:00"))
    return age.total_seconds() < LEASE_SECONDS


def run_range(
    storage: Storage,
    operation: str,
    request: RestoreRequest,
    key_range: KeyRange,
    fresh_target: bool,
    delivery: int,
    final: bool,
) -> None:
    """Write one range. Transient failures raise (the queue delivers the range again); the last
    delivery's failure, or a damaged backup, fails the operation."""
    own = records.range_row(storage, operation, key_range.index)
    head = records.row(storage, operation)
    if own.get("status") == "done" or head.get("status") in ("succeeded", "failed"):
        finish_if_complete(storage, operation, request)
        return
    if own.get("status") == "running" and _fresh(own.get("updated_at")):
        log.info(
            "restore %s: %s is being written elsewhere; this message is a duplicate", operation, key_range.describe()
        )
        return
    records.save_range(storage, operation, key_range.index, status="running", delivery=delivery)
    last = [time.monotonic()]

    def report(count: int) -> None:
        if time.monotonic() - last[0] >= _PROGRESS_EVERY_SECONDS:
            last[0] = time.monotonic()
            records.save_range(storage, operation, key_range.index, status="running", progress=count)

    try:
        checked = check_request(storage, request)
        client = (checked.data or storage).tables.get_table_client(checked.target)
        tally, erased = write_range(storage, request, checked, client, not fresh_target, key_range, report)
    except StorageUnavailable as error:
        records.save_range(
            storage, operation, key_range.index, status="failed" if final else "retrying", error=str(error)
        )
        if not final:
            raise
        fail(storage, operation, request, f"{key_range.describe()}: {error}")
        return
    except BackupError as error:
        records.save_range(storage, operation, key_range.index, status="failed", error=str(error))
        fail(storage, operation, request, f"{key_range.describe()}: {error}")
        return
    except Exception as error:
        # Anything else: not `running` any more, or the redelivery would take itself for a duplicate.
        with contextlib.suppress(BackupError):
            records.save_range(storage, operation, key_range.index, status="retrying", error=str(error)[:4000])
        raise
    counts = {"restored": tally.restored, "deleted": tally.deleted, "skipped": tally.skipped, "erased": erased}
    records.save_range(
        storage, operation, key_range.index, status="done", progress=tally.restored + tally.deleted, **counts
    )
    finish_if_complete(storage, operation, request)


def _totals(rows: list[dict]) -> dict:
    return {name: sum(row.get(name) or 0 for row in rows) for name in ("restored", "deleted", "skipped", "erased")}


def fail(storage: Storage, operation: str, request: RestoreRequest, why: str) -> None:
    """The operation failed for good: recorded, its hold released, its `ended` entry written once."""
    head = records.row(storage, operation)
    records.save(storage, operation, status="failed", error=why)
    if head.get("hold"):
        release_hold(storage.backups, head["hold"])
    if not head.get("started"):
        return  # refused before it began: nothing in the audit trail, as for any restore
    try:
        checked = check_request(storage, request)
    except BackupError:
        return
    done = {**_totals(records.range_rows(storage, operation)), "safety_backup": head.get("safety_backup")}
    ended = {**audit_plan(request, checked), **done, "outcome": f"failed: {why}"}
    _audit(storage, operation, request, checked, "ended", ended)


def finish_if_complete(storage: Storage, operation: str, request: RestoreRequest) -> None:
    """If every range is done and nobody finished the operation yet: finish it."""
    rows = records.range_rows(storage, operation)
    if not rows or any(r.get("status") != "done" for r in rows):
        return  # the common case, one query: other ranges still to run
    head = records.row(storage, operation)
    if not head or len(rows) < int(head.get("ranges") or 0):
        return
    if head.get("status") in ("succeeded", "failed"):
        return
    if head.get("status") == "finishing" and _fresh(head.get("updated_at")):
        return
    if not records.claim(storage, head, uuid.uuid4().hex, status="finishing"):
        return
    checked = check_request(storage, request)
    totals = _totals(rows)
    result = RestoreResult(
        backup=checked.manifest.backup,
        target=checked.target,
        mode=request.mode,
        chosen=checked.chosen,
        safety_backup=head.get("safety_backup"),
        **{name: totals[name] for name in ("restored", "deleted", "skipped", "erased")},
    )
    result.target_account = checked.account.name if checked.account else None
    if result.safety_backup:
        result.undo = undo_command(checked.target, result.safety_backup, request.filter, result.target_account)
    begun = datetime.fromisoformat(head["begun"].replace("Z", "+00:00")) if head.get("begun") else datetime.now(UTC)
    result.seconds = (datetime.now(UTC) - begun).total_seconds()
    record_completed(storage, request, checked, result, begun, True)
    if head.get("hold"):
        release_hold(storage.backups, head["hold"])
    answer = {**result.as_json(), "ranges": len(rows)}
    ended = {**audit_plan(request, checked), **answer, "outcome": "succeeded"}
    _audit(storage, operation, request, checked, "ended", ended)
    records.save(storage, operation, status="succeeded", result=orjson.dumps(answer).decode())
    log.info(
        "restore %s complete: table=%s target=%s ranges=%d restored=%d deleted=%d",
        operation,
        request.table,
        checked.target,
        len(rows),
        result.restored,
        result.deleted,
        extra={"table": request.table, "backup": result.backup, "operation": operation, **totals},
    )
