"""Back up tables: stream each table's pages into a gzip NDJSON blob, then write its manifest."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from azure.core.exceptions import AzureError

from backup.incremental import stream_incremental
from tablebackup import catalog, telemetry
from tablebackup.backupformat import DataBlobWriter, Manifest, new_backup_id, write_manifest
from tablebackup.clients import Storage
from tablebackup.entities import encode_line
from tablebackup.errors import BackupError, NotFound, StorageUnavailable
from tablebackup.names import validate_table_name
from tablebackup.tablequery import iter_pages

log = logging.getLogger(__name__)

# Called with the number of entities written so far.
Progress = Callable[[int], None]


def backup_table(
    storage: Storage, table: str, *, incremental: bool = False, on_progress: Progress | None = None
) -> Manifest:
    """Back up one table, in full or (when it has a complete backup) only what changed since its
    newest one. The backup is listed only once its manifest is written, last."""
    validate_table_name(table)
    started = datetime.now(UTC)
    backup_id = new_backup_id(table, started)
    parent = _newest(storage, table) if incremental else None
    context = {"table": table, "backup": backup_id, "kind": "incremental" if parent else "full"}
    log.info("backup started: table=%s backup=%s kind=%s", table, backup_id, context["kind"], extra=context)
    with telemetry.operation("backup", table, backup=backup_id, kind=context["kind"]):
        if parent is None:
            manifest = _stream_table(storage, table, backup_id, started, on_progress)
        else:
            manifest = _stream_changes(storage, table, backup_id, started, parent, on_progress)
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


def _newest(storage: Storage, table: str) -> Manifest | None:
    try:
        return catalog.latest_backup(storage.backups, table)
    except NotFound:
        return None


def _stream_changes(
    storage: Storage, table: str, backup_id: str, started: datetime, parent: Manifest, on_progress: Progress | None
) -> Manifest:
    try:
        storage.ensure_backup_container()
        return stream_incremental(storage, table, backup_id, started, parent, on_progress)
    except AzureError as error:
        raise StorageUnavailable(
            f"writing backup {backup_id!r} to {storage.backups.url} failed: {str(error).splitlines()[0]}"
        ) from error


def _stream_table(
    storage: Storage, table: str, backup_id: str, started: datetime, on_progress: Progress | None
) -> Manifest:
    """Stream the table's pages into the data blob; returns the manifest that describes it."""
    pages = iter_pages(storage.source_tables.get_table_client(table))
    # The first page proves the table exists before any blob is written.
    first = next(pages)
    try:
        storage.ensure_backup_container()
        writer = DataBlobWriter(storage.backups, backup_id)
        for page in _chain(first, pages):
            writer.write_lines([encode_line(entity) for entity in page])
            if on_progress:
                on_progress(writer.entities)
        size, sha256 = writer.finish()
    except AzureError as error:
        raise StorageUnavailable(
            f"writing backup {backup_id!r} to {storage.backups.url} failed: {str(error).splitlines()[0]}"
        ) from error
    return Manifest(
        backup=backup_id,
        table=table,
        source_account=storage.account,
        read_from_secondary=storage.settings.read_from_secondary,
        started_at=started,
        finished_at=datetime.now(UTC),
        entities=writer.entities,
        bytes=size,
        sha256=sha256,
        data_blob=writer.name,
    )


def _chain(first, rest):
    yield first
    yield from rest


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
        return [validate_table_name(table) for table in dict.fromkeys(tables)]
    configured = None if every_table else storage.settings.scheduled_tables
    if configured is not None:
        return configured
    try:
        return sorted(table.name for table in storage.source_tables.list_tables())
    except AzureError as error:
        raise StorageUnavailable(f"listing the account's tables failed: {str(error).splitlines()[0]}") from error


def backup_tables(
    storage: Storage,
    tables: list[str],
    *,
    incremental: bool = False,
    on_progress: Callable[[str, int], None] | None = None,
) -> BackupRun:
    """Back up each table in turn; a failing table is recorded and the rest go on."""
    run = BackupRun()
    for table in tables:
        report = (lambda count, table=table: on_progress(table, count)) if on_progress else None
        try:
            run.backups.append(backup_table(storage, table, incremental=incremental, on_progress=report))
        except BackupError as error:
            log.error("backup failed: table=%s: %s", table, error, extra={"table": table, "error": str(error)})
            run.failures[table] = error
        except Exception as error:  # isolation: a bug on one table must not stop the others
            log.exception("backup failed: table=%s", table, extra={"table": table})
            run.failures[table] = BackupError(f"unexpected {type(error).__name__}: {error}")
    return run


def scheduled_backup(storage: Storage, now: datetime | None = None) -> BackupRun:
    """The daily run: every configured table; with BACKUP_MODE=incremental, a full backup on
    FULL_BACKUP_DAY and incrementals on the other days."""
    now = now or datetime.now(UTC)
    settings = storage.settings
    incremental = settings.backup_mode == "incremental" and now.strftime("%A").lower() != settings.full_backup_day
    return backup_tables(storage, tables_to_back_up(storage), incremental=incremental)
