"""Disaster-recovery drills: restore from the newest backup into a scratch table, compare it entity
by entity with the backup, time it against the RTO, check the backup's age against the RPO, and
delete the scratch table. A drill never writes to the production table."""

from __future__ import annotations

import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import zip_longest

from azure.core.exceptions import AzureError, ResourceNotFoundError

from tablebackup.core import telemetry
from tablebackup.core.clients import Storage
from tablebackup.core.entities import decode_line, encode_line, writable
from tablebackup.core.errors import BackupError
from tablebackup.core.names import table_key, validate_table_name
from tablebackup.repository import catalog, erasures
from tablebackup.repository.chain import state_entities
from tablebackup.restore.restorer import RestoreRequest, restore
from tablebackup.storage.tablequery import iter_pages, odata_string
from tablebackup.verify import results
from tablebackup.verify.checker import Check

log = logging.getLogger(__name__)

CHECKLIST = ("restoration successful", "integrity verified", "recovery time meets RTO", "recovery point meets RPO")


@dataclass
class Drill:
    table: str
    kind: str
    backup: str | None = None
    scratch_table: str | None = None
    restore_seconds: float | None = None
    backup_age_hours: float | None = None
    checks: list[Check] = field(default_factory=list)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def ok(self) -> bool:
        return len(self.checks) == len(CHECKLIST) and all(check.ok for check in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))

    def as_json(self) -> dict:
        return {
            "ok": self.ok,
            "table": self.table,
            "kind": self.kind,
            "backup": self.backup,
            "scratch_table": self.scratch_table,
            "restore_seconds": self.restore_seconds,
            "backup_age_hours": self.backup_age_hours,
            "at": self.at.isoformat().replace("+00:00", "Z"),
            "checks": [check.as_json() for check in self.checks],
        }


def _comparable(entity: dict) -> dict:
    """An entity as the backup encodes it, without service metadata."""
    return writable(dict(entity))


def _random_entity(storage: Storage, backup) -> dict | None:
    """One entity chosen uniformly from the backup's state in one streaming pass (reservoir
    sampling); erased keys are never chosen."""
    chosen = None
    entities = erasures.load(storage, backup.table).without_erased(state_entities(storage.backups, backup))
    for number, entity in enumerate(entities, start=1):
        if random.randrange(number) == 0:
            chosen = entity
    return chosen


def _compare(storage: Storage, backup, scratch: str, only: dict | None) -> tuple[bool, str]:
    """Walk the backup and the scratch table side by side; both are in the service's key order."""
    client = storage.tables.get_table_client(scratch)
    if only is not None:
        expected = iter([only])
    else:
        # Erased keys are expected absences: the restore leaves them out.
        expected = erasures.load(storage, backup.table).without_erased(state_entities(storage.backups, backup))
    actual = (entity for page in iter_pages(client) for entity in page)
    compared = 0
    for want, got in zip_longest(expected, actual):
        if want is None or got is None:
            present = want or got
            where = "missing from the scratch table" if got is None else "not in the backup"
            return False, f"entity ({present['PartitionKey']!r}, {present['RowKey']!r}) is {where}"
        if _comparable(want) != _comparable(decode_line(encode_line(got))):
            return False, f"entity ({want['PartitionKey']!r}, {want['RowKey']!r}) differs after the restore"
        compared += 1
    return True, f"{compared} entities identical to the backup, every property and type"


def run_drill(storage: Storage, table: str, *, full: bool = False) -> Drill:
    """Run one drill and record its report; the scratch table is always deleted."""
    validate_table_name(table)
    drill = Drill(table=table, kind="full" if full else "entity")
    with telemetry.operation("drill", table, kind=drill.kind):
        try:
            _run(storage, drill, full)
        finally:
            if drill.scratch_table:
                _drop(storage, drill.scratch_table)
    _record(storage, drill)
    return drill


def _run(storage: Storage, drill: Drill, full: bool) -> None:
    settings = storage.settings
    try:
        backup = catalog.latest_backup(storage.backups, drill.table)
    except BackupError as error:
        drill.add("restoration successful", False, str(error))
        drill.add("integrity verified", False, "nothing was restored")
        drill.add("recovery time meets RTO", False, "nothing was restored")
        drill.add("recovery point meets RPO", False, f"no backup within {settings.backup_max_age_hours:g} hours")
        return
    drill.backup = backup.backup
    drill.backup_age_hours = round((datetime.now(UTC) - backup.finished_at).total_seconds() / 3600, 2)
    drill.scratch_table = f"drill{uuid.uuid4().hex[:20]}"
    only = None if full else _random_entity(storage, backup)
    query = None
    if only is not None:
        query = f"PartitionKey eq {odata_string(only['PartitionKey'])} and RowKey eq {odata_string(only['RowKey'])}"
    started = time.monotonic()
    try:
        restored = restore(
            storage,
            RestoreRequest(table=drill.table, backup=backup.backup, target=drill.scratch_table, filter=query),
        )
        drill.restore_seconds = round(time.monotonic() - started, 3)
        drill.add("restoration successful", True, f"{restored.restored} entities restored into {drill.scratch_table}")
        ok, detail = _compare(storage, backup, drill.scratch_table, only if not full else None)
        drill.add("integrity verified", ok, detail)
    except BackupError as error:
        drill.restore_seconds = round(time.monotonic() - started, 3)
        drill.add("restoration successful", False, str(error))
        drill.add("integrity verified", False, "the restore failed")
    rto_seconds = settings.rto_minutes * 60
    drill.add(
        "recovery time meets RTO",
        drill.restore_seconds <= rto_seconds and drill.checks[0].ok,
        f"restored in {drill.restore_seconds:.1f} s (RTO {settings.rto_minutes:g} min)",
    )
    drill.add(
        "recovery point meets RPO",
        drill.backup_age_hours <= settings.backup_max_age_hours,
        f"the backup is {drill.backup_age_hours:.1f} hours old (RPO {settings.backup_max_age_hours:g} h)",
    )


def _drop(storage: Storage, scratch: str) -> None:
    try:
        storage.tables.delete_table(scratch)
    except ResourceNotFoundError:
        pass
    except AzureError as error:
        log.error("drill scratch table %s could not be deleted: %s", scratch, error, extra={"table": scratch})


def _record(storage: Storage, drill: Drill) -> None:
    report = drill.as_json()
    results.save_row(storage, storage.settings.drills_table, table_key(drill.table), drill.at, report)
    context = {"table": drill.table, "backup": drill.backup, "ok": drill.ok}
    if drill.ok:
        log.info("drill passed: table=%s backup=%s kind=%s", drill.table, drill.backup, drill.kind, extra=context)
    else:
        failed = "; ".join(f"{c.name}: {c.detail}" for c in drill.checks if not c.ok)
        log.error("drill failed: table=%s backup=%s: %s", drill.table, drill.backup, failed, extra=context)
        results.notify(storage.settings.notify_webhook_url, f"DR drill FAILED for {drill.table}: {failed}", report)
    telemetry.record_outcome("drill", drill.table, drill.ok)


def drill_history(storage: Storage, table: str | None = None, limit: int = 50) -> list[dict]:
    if table:
        validate_table_name(table)
    return results.read_rows(storage, storage.settings.drills_table, table, limit)


def scheduled_drills(storage: Storage, now: datetime | None = None) -> list[Drill]:
    """The monthly timer: an entity drill for each scheduled table, and a full restore in the first
    month of each quarter (the seed's monthly and quarterly drills)."""
    now = now or datetime.now(UTC)
    full = now.month in (1, 4, 7, 10)
    tables = storage.settings.scheduled_tables or catalog.backed_up_tables(storage.backups)
    return [run_drill(storage, table, full=full) for table in tables]
