"""Back up tables: stream each table's pages into a gzip NDJSON blob, then write its manifest."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime

from azure.core.exceptions import AzureError

from tablebackup.backup.fanout import (
    PartResult,
    WorkItem,
    assemble,
    back_up_part,
    plan_run,
    stream_items,
    stream_to_blob,
)
from tablebackup.backup.incremental import stream_incremental
from tablebackup.core import telemetry
from tablebackup.core.clients import Storage
from tablebackup.core.errors import BackupError, DamagedBackup, NotFound, StorageUnavailable
from tablebackup.core.names import BACKUP_ID_RE, table_key, validate_table_name
from tablebackup.repository import catalog
from tablebackup.repository.attempts import record_parent
from tablebackup.repository.backupformat import (
    DATA_BLOB,
    BackupReason,
    Manifest,
    attempt_leaf,
    new_backup_id,
    write_manifest,
)

log = logging.getLogger(__name__)

# Called with the number of entities written so far.
Progress = Callable[[int], None]


def backup_table(
    storage: Storage,
    table: str,
    *,
    incremental: bool = False,
    on_progress: Progress | None = None,
    backup_id: str | None = None,
    started: datetime | None = None,
    attempt: int = 1,
    reason: BackupReason | None = None,
) -> Manifest:
    """Back up one table, in full or (when it has a complete backup) only what changed since its
    newest one. The backup is listed only once its manifest is written, last. A planned run passes
    its backup id and start; a retry (attempt > 1) writes a data blob of its own. `reason` is
    recorded in the manifest (default: on demand)."""
    validate_table_name(table)
    started = started or datetime.now(UTC)
    backup_id = backup_id or new_backup_id(table, started)
    reason = reason or BackupReason.on_demand()
    parent = _newest(storage, table, backup_id) if incremental else None
    context = {"table": table, "backup": backup_id, "kind": "incremental" if parent else "full"}
    log.info("backup started: table=%s backup=%s kind=%s", table, backup_id, context["kind"], extra=context)
    with telemetry.operation("backup", table, backup=backup_id, kind=context["kind"]):
        if parent is None:
            manifest = _stream_table(storage, table, backup_id, started, on_progress, attempt)
        else:
            manifest = _stream_changes(storage, table, backup_id, started, parent, on_progress, attempt)
        manifest = manifest.model_copy(update={"reason": reason})
        write_manifest(storage.backups, manifest)
        telemetry.record_volume("backup", table, manifest.entities, manifest.bytes)
    log.info(
        "backup complete: table=%s backup=%s entities=%d bytes=%d",
        table,
        backup_id,
        manifest.entities,
        manifest.bytes,
        extra={**context, "entities": manifest.entities, "bytes": manifest.bytes, "sha256": manifest.sha256},
    )
    return manifest


def _newest(storage: Storage, table: str, backup_id: str) -> Manifest | None:
    """What an incremental builds on: the newest complete regular backup taken before it (a run
    planned before another backup completed must not build on that one: a chain only goes back in
    time; a safety backup is never an implicit choice), or None (take a full one) when there is
    none or its manifest is refused, so a damaged backup never stops the backups."""
    stamp = BACKUP_ID_RE.match(backup_id)["stamp"]
    try:
        for candidate in catalog.backup_ids(storage.backups, table):
            taken = BACKUP_ID_RE.match(candidate)
            if taken is None or taken["stamp"] < stamp:
                manifest = catalog.read_manifest(storage.backups, candidate)
                if catalog.implicit_candidate(manifest):
                    return manifest
        return None
    except NotFound:
        return None
    except DamagedBackup as error:
        log.warning("taking a full backup instead of an incremental: %s", error, extra={"table": table})
        return None


def _stream_changes(
    storage: Storage,
    table: str,
    backup_id: str,
    started: datetime,
    parent: Manifest,
    on_progress: Progress | None,
    attempt: int,
) -> Manifest:
    try:
        storage.ensure_backup_container()
        # Before anything is read: retention must see what this attempt builds on (tablebackup.repository.attempts).
        record_parent(storage.backups, backup_id, parent.backup)
        manifest = stream_incremental(storage, table, backup_id, started, parent, on_progress, attempt)
    except AzureError as error:
        raise StorageUnavailable(
            f"writing backup {backup_id!r} to {storage.backups.url} failed: {str(error).splitlines()[0]}"
        ) from error
    try:  # the manifest is written next: never an incremental whose parent is gone
        catalog.read_manifest(storage.backups, parent.backup)
    except NotFound:
        raise BackupError(
            f"the parent {parent.backup!r} of incremental {backup_id!r} was deleted while it ran; "
            "nothing is listed: take the backup again"
        ) from None
    return manifest


def _stream_table(
    storage: Storage, table: str, backup_id: str, started: datetime, on_progress: Progress | None, attempt: int
) -> Manifest:
    """Stream the table's pages into the data blob; returns the manifest that describes it."""
    data = stream_to_blob(storage, table, backup_id, attempt_leaf(DATA_BLOB, attempt), on_progress=on_progress)
    return Manifest(
        backup=backup_id,
        table=table,
        source_account=storage.account,
        read_from_secondary=storage.settings.read_from_secondary,
        started_at=started,
        finished_at=datetime.now(UTC),
        entities=data.info.lines,
        bytes=data.info.bytes,
        sha256=data.info.sha256,
        data_blob=data.info.blob,
        key_samples=data.samples,
    )


@dataclass
class BackupRun:
    """The outcome of backing up several tables: one failure does not stop the others."""

    backups: list[Manifest] = field(default_factory=list)
    failures: dict[str, BackupError] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        failed = "; ".join(f"{table}: {error}" for table, error in self.failures.items())
        return f"{len(self.backups)} table(s) backed up, {len(self.failures)} failed" + (
            f" ({failed})" if failed else ""
        )

    def as_json(self) -> dict:
        return {
            "backups": [manifest.summary() for manifest in self.backups],
            "failed": [{"table": table, "error": str(error)} for table, error in self.failures.items()],
        }


def tables_to_back_up(storage: Storage, tables: list[str] | None = None, *, every_table: bool = False) -> list[str]:
    """The tables named, else every table in the account (--all or BACKUP_TABLES=*), else the
    configured BACKUP_TABLES / TABLE_NAME."""
    if tables:
        return _one_per_table(validate_table_name(table) for table in tables)
    configured = None if every_table else storage.settings.scheduled_tables
    if configured is not None:
        return _one_per_table(configured)
    try:
        return sorted(table.name for table in storage.source_tables.list_tables())
    except AzureError as error:
        raise StorageUnavailable(f"listing the account's tables failed: {str(error).splitlines()[0]}") from error


def _one_per_table(tables) -> list[str]:
    """Each table once, however often and in whatever case it was named (names are case-insensitive:
    `Orders` and `orders` are one table, with one backup id)."""
    return list({table_key(table): table for table in reversed(list(tables))}.values())[::-1]


def execute_item(
    storage: Storage, item: WorkItem, attempt: int = 1, on_progress: Progress | None = None
) -> Manifest | PartResult:
    """Run one work item: a whole table gives its manifest, a range gives its part."""
    if item.parts == 1 and item.streams:
        return _read_in_streams(storage, item, attempt, on_progress)
    if item.parts == 1:
        return backup_table(
            storage,
            item.table,
            incremental=item.incremental,
            on_progress=on_progress,
            backup_id=item.backup,
            started=datetime.fromisoformat(item.started_at),
            attempt=attempt,
            reason=item.backup_reason(),
        )
    context = {"table": item.table, "backup": item.backup, "part": item.part}
    with telemetry.operation("backup part", item.table, backup=item.backup):
        part = back_up_part(storage, item, attempt, on_progress)
    log.info(
        "backup part complete: table=%s backup=%s part=%d/%d entities=%d",
        item.table,
        item.backup,
        item.part,
        item.parts,
        part.info.lines,
        extra={**context, "entities": part.info.lines},
    )
    return part


def _read_in_streams(storage: Storage, item: WorkItem, attempt: int, on_progress: Progress | None) -> Manifest:
    """One table read by parallel range streams (one part blob each), then one manifest: the
    service serves two streams about 1.5x as fast as one."""
    parts = stream_items(item)
    with telemetry.operation("backup", item.table, backup=item.backup, kind="full"):
        with telemetry.thread_pool(max_workers=len(parts), thread_name_prefix="stream") as pool:
            results = pool.map(lambda part: back_up_part(storage, part, attempt), parts)
            done = {part.part: result for part, result in zip(parts, results, strict=True)}
        if on_progress:
            on_progress(sum(result.info.lines for result in done.values()))
        return finish_table(storage, parts, done)


def finish_table(storage: Storage, items: list[WorkItem], results: dict[int, Manifest | PartResult]) -> Manifest:
    """The table's manifest once all its items are done (a single item already wrote it)."""
    if len(items) == 1:
        return results[items[0].part]
    manifest = assemble(storage, items, results)
    log.info(
        "backup complete: table=%s backup=%s entities=%d bytes=%d parts=%d",
        manifest.table,
        manifest.backup,
        manifest.entities,
        manifest.bytes,
        len(items),
        extra={"table": manifest.table, "backup": manifest.backup, "entities": manifest.entities},
    )
    telemetry.record_volume("backup", manifest.table, manifest.entities, manifest.bytes)
    return manifest


def _failure(table: str, error: Exception) -> BackupError:
    if isinstance(error, BackupError):
        log.error("backup failed: table=%s: %s", table, error, extra={"table": table, "error": str(error)})
        return error
    log.error("backup failed: table=%s", table, exc_info=error, extra={"table": table})
    return BackupError(f"unexpected {type(error).__name__}: {error}")


def _reporter(item: WorkItem, on_progress: Callable[[str, int], None] | None) -> Progress | None:
    if on_progress is None:
        return None
    name = item.table if item.parts == 1 else f"{item.table} [{item.part}/{item.parts}]"
    return lambda count: on_progress(name, count)


def backup_tables(
    storage: Storage,
    tables: list[str],
    *,
    incremental: bool = False,
    parallel: int = 1,
    on_progress: Callable[[str, int], None] | None = None,
    reason: BackupReason | None = None,
) -> BackupRun:
    """Plan the run as the timer does and run its items on `parallel` threads; a failing table is
    recorded and the rest go on. `reason`: why (default: on demand)."""
    items = plan_run(storage, tables, incremental=incremental, reason=reason or BackupReason.on_demand())
    results: dict[str, dict[int, Manifest | PartResult]] = defaultdict(dict)
    run = BackupRun()

    with telemetry.thread_pool(max_workers=max(1, parallel), thread_name_prefix="backup") as pool:
        futures = {pool.submit(execute_item, storage, item, 1, _reporter(item, on_progress)): item for item in items}
        for future in as_completed(futures):
            item = futures[future]
            try:
                results[item.table][item.part] = future.result()
            except Exception as error:  # isolation: one table failing does not stop the others
                run.failures.setdefault(item.table, _failure(item.table, error))
    for table in dict.fromkeys(item.table for item in items):
        if table in run.failures:
            continue
        try:
            run.backups.append(finish_table(storage, [i for i in items if i.table == table], results[table]))
        except Exception as error:
            run.failures[table] = _failure(table, error)
    return run


def incremental_today(storage: Storage, now: datetime | None = None) -> bool:
    """Whether the scheduled run may take incrementals (BACKUP_MODE=incremental). Which tables
    still take a full backup (none yet, FULL_BACKUP_DAY, a week old) is decided per table when the
    run is planned (tablebackup.backup.fanout.full_backup_due): a weekday decided once per run
    made every run of an hourly schedule on FULL_BACKUP_DAY a full one. `now` is kept for callers."""
    return storage.settings.backup_mode == "incremental"
