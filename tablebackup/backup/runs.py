"""Backup runs on the queue: the timer records a run and enqueues its work items; queue workers
run them on as many Functions instances as the platform gives. A run record (one row per item in
BACKUP_RUNS_TABLE) tracks every item; whoever finishes a table's last part writes its manifest."""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime

import orjson
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

from tablebackup.backup.archiver import execute_item, finish_table, incremental_today, tables_to_back_up
from tablebackup.backup.fanout import PartResult, WorkItem, plan_run
from tablebackup.core.clients import Storage
from tablebackup.core.errors import BackupError, NotFound, StorageUnavailable
from tablebackup.repository import catalog
from tablebackup.repository.backupformat import BlobInfo, Manifest
from tablebackup.storage.tablequery import odata_string

log = logging.getLogger(__name__)

QUEUE = "backup-jobs"
# host.json extensions.queues.maxDequeueCount: the last delivery records the failure for good.
MAX_DELIVERIES = 5
_RUN_ROW = "~run"


def _ledger(storage: Storage):
    return storage.tables.get_table_client(storage.settings.backup_runs_table)


def _save(storage: Storage, run: str, row: str, **fields) -> None:
    entity = {"PartitionKey": run, "RowKey": row, "updated_at": datetime.now(UTC).isoformat(), **fields}
    try:
        _ledger(storage).upsert_entity(entity)
    except AzureError as error:
        raise StorageUnavailable(f"recording backup run {run} failed: {str(error).splitlines()[0]}") from error


def start_run(storage: Storage, now: datetime | None = None) -> tuple[str, list[str]]:
    """Plan the scheduled run, record it, and return its id and the queue messages, one per item.
    With BACKUP_MODE=incremental each table takes a full backup only when one is due
    (tablebackup.backup.fanout.full_backup_due), however often the schedule runs."""
    items = plan_run(
        storage, tables_to_back_up(storage), incremental=incremental_today(storage, now), now=now, weekly_full=True
    )
    if not items:
        return "", []
    run = items[0].run
    try:
        with contextlib.suppress(ResourceExistsError):
            storage.tables.create_table(storage.settings.backup_runs_table)
    except AzureError as error:
        raise StorageUnavailable(f"table storage is unreachable: {str(error).splitlines()[0]}") from error
    for item in items:
        _save(storage, run, item.key, status="queued", table=item.table, backup=item.backup, part=item.part)
    _save(storage, run, _RUN_ROW, status="running", items=len(items))
    log.info("backup run planned: run=%s items=%d", run, len(items), extra={"run": run, "items": len(items)})
    return run, [item.message() for item in items]


def _rows(storage: Storage, run: str) -> list[dict]:
    try:
        return list(_ledger(storage).query_entities(f"PartitionKey eq {odata_string(run)}"))
    except AzureError as error:
        raise StorageUnavailable(f"reading backup run {run} failed: {str(error).splitlines()[0]}") from error


def run_status(storage: Storage, run: str) -> dict:
    rows = _rows(storage, run)
    header = next((row for row in rows if row["RowKey"] == _RUN_ROW), {})
    items = [
        {"item": row["RowKey"], "status": row["status"], "error": row.get("error")}
        for row in rows
        if row["RowKey"] != _RUN_ROW
    ]
    return {"run": run, "status": header.get("status"), "items": items}


def _result_fields(result: Manifest | PartResult) -> dict:
    if isinstance(result, Manifest):
        return {"status": "done", "manifest": result.backup}
    return {"status": "done", "info": result.info.model_dump_json(), "samples": orjson.dumps(result.samples).decode()}


def _update_run(storage: Storage, run: str) -> str:
    statuses = [row["status"] for row in _rows(storage, run) if row["RowKey"] != _RUN_ROW]
    status = "failed" if "failed" in statuses else "succeeded" if all(s == "done" for s in statuses) else "running"
    _save(storage, run, _RUN_ROW, status=status)
    return status


def _already_done(storage: Storage, item: WorkItem) -> bool:
    """Whether an earlier delivery finished this item: the host delivers a message again when its
    ack is lost, after the work was done. A whole-table item is done once its manifest exists."""
    try:
        row = _ledger(storage).get_entity(item.run, item.key)
    except ResourceNotFoundError:
        row = {}
    except AzureError as error:
        raise StorageUnavailable(f"reading backup run {item.run} failed: {str(error).splitlines()[0]}") from error
    if row.get("status") == "done":
        return True
    if item.parts != 1:
        return False
    try:
        catalog.read_manifest(storage.backups, item.backup)
    except NotFound:
        return False
    _save(storage, item.run, item.key, status="done", manifest=item.backup)
    return True


def run_queued_item(storage: Storage, body: str | bytes, delivery: int) -> None:
    """The queue worker's job. A failure raises so the queue delivers the item again; on the last
    delivery the item and the run are recorded as failed and nothing of the table is listed. An
    item an earlier delivery finished succeeds at once, writing nothing."""
    item = WorkItem.from_message(body)
    if _already_done(storage, item):
        log.info(
            "backup item already done, delivered again: table=%s backup=%s part=%d delivery=%d",
            item.table,
            item.backup,
            item.part,
            delivery,
            extra={"table": item.table, "backup": item.backup, "run": item.run},
        )
        _finish_if_complete(storage, item)
        _update_run(storage, item.run)
        return
    _save(storage, item.run, item.key, status="running", delivery=delivery)
    try:
        result = execute_item(storage, item, attempt=delivery)
    except Exception as error:
        final = delivery >= MAX_DELIVERIES
        _save(storage, item.run, item.key, status="failed" if final else "retrying", error=str(error)[:4000])
        if final:
            _update_run(storage, item.run)
            log.error(
                "backup failed: table=%s backup=%s part=%d: %s",
                item.table,
                item.backup,
                item.part,
                error,
                extra={"table": item.table, "backup": item.backup, "run": item.run},
            )
        raise
    _save(storage, item.run, item.key, **_result_fields(result))
    _finish_if_complete(storage, item)
    _update_run(storage, item.run)


def _finish_if_complete(storage: Storage, item: WorkItem) -> None:
    if item.parts == 1:
        return
    rows = [row for row in _rows(storage, item.run) if row.get("table") == item.table and row["RowKey"] != _RUN_ROW]
    if len(rows) < item.parts or any(row["status"] != "done" for row in rows):
        return
    try:
        catalog.read_manifest(storage.backups, item.backup)
        return  # finished already: by another worker, or by an earlier delivery of this item
    except NotFound:
        pass
    items = [WorkItem(**{**item.__dict__, "part": row["part"]}) for row in sorted(rows, key=lambda row: row["part"])]
    results = {
        row["part"]: PartResult(info=BlobInfo.model_validate_json(row["info"]), samples=orjson.loads(row["samples"]))
        for row in rows
    }
    try:
        finish_table(storage, items, results)
    except BackupError as error:
        if "already has a manifest" not in str(error):
            raise  # two workers finishing together: the other one wrote the same manifest
