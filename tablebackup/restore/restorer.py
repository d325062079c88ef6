"""Restore a backup, or the part a filter selects, into its table or another one.

Modes: replace (InsertOrReplace), merge (InsertOrMerge), missing (insert only what the target
lacks), mirror (the filtered scope of the target becomes exactly the backup's, deletions included).

missing and mirror compare the backup with the target window by window: a window is up to 1,000
backup entities in the order the service listed them, and the target is read only over that
window's key range, so memory stays bounded and key order is always the service's own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from tablebackup.audit.entries import record_operation
from tablebackup.backup.archiver import backup_table
from tablebackup.core import telemetry
from tablebackup.core.clients import Storage
from tablebackup.core.errors import InvalidInput, NotFound
from tablebackup.core.names import BACKUP_ID_RE, table_key, validate_backup_id, validate_table_name
from tablebackup.repository import catalog, erasures
from tablebackup.repository.backupformat import Manifest
from tablebackup.repository.chain import state_entities
from tablebackup.repository.erasures import Erasures
from tablebackup.repository.integrity import check_whole_backup
from tablebackup.repository.legacybackups import LegacyBackup, is_legacy_name, legacy_backups, read_legacy_backup
from tablebackup.restore.legacy import LegacyRead, read_legacy
from tablebackup.storage.odatafilter import ODataFilter, parse_filter
from tablebackup.storage.reconcile import MODES, Tally, plan_operations
from tablebackup.storage.tables import create_table, table_exists
from tablebackup.storage.tablewriter import submit_operations
from tablebackup.storage.targets import resolve_target
from tablebackup.transfer.typerules import TypeRules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestoreRequest:
    table: str
    backup: str | None = None  # a backup id, or "latest"
    as_of: datetime | None = None
    target: str | None = None
    filter: str | None = None
    mode: str = "replace"
    dry_run: bool = False
    force: bool = False
    actor: str = "unknown"  # who asked: the CLI's OS user, or the HTTP caller
    # The target may be one of the app's own tables (tablebackup.storage.targets), in a mode that deletes nothing.
    allow_app_table: bool = False
    # The seed's old daily backups (tablebackup.repository.legacybackups) are candidates too, typed by these rules
    # (tablebackup.transfer.typerules) where their JSON does not say a type. The CLI asks for them.
    include_legacy: bool = False
    types: dict[str, str] = field(default_factory=dict)
    infer_types: bool = False


@dataclass
class RestoreResult:
    backup: str
    target: str
    mode: str
    restored: int = 0
    deleted: int = 0
    skipped: int = 0
    erased: int = 0  # entities left out because their keys were erased (GDPR)
    safety_backup: str | None = None
    seconds: float = 0.0
    dry_run: bool = False
    typed: dict[str, dict[str, int]] = field(default_factory=dict)  # what --infer-types typed (legacy)

    def as_json(self) -> dict:
        return {**asdict(self), "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class _Checked:
    manifest: Manifest | LegacyBackup
    target: str
    predicate: ODataFilter | None
    legacy: LegacyRead | None = None  # an old backup, validated whole before the first write


def check_request(storage: Storage, request: RestoreRequest) -> _Checked:
    """Everything a restore could refuse, checked before anything is written."""
    validate_table_name(request.table)
    if request.mode not in MODES:
        raise InvalidInput(f"unknown mode {request.mode!r}: use one of {', '.join(MODES)}")
    target = resolve_target(
        storage.settings, request.table, request.target, mode=request.mode, allow_app_table=request.allow_app_table
    )
    predicate = parse_filter(request.filter) if request.filter else None
    if request.include_legacy:
        chosen = choose_with_legacy(storage, request.table, request.backup, request.as_of)
    else:
        chosen = choose_backup(storage, request.table, request.backup, request.as_of)
    if isinstance(chosen, LegacyBackup):
        legacy = read_legacy(storage, chosen, request.mode, TypeRules(request.types, request.infer_types))
        return _Checked(manifest=chosen, target=target, predicate=predicate, legacy=legacy)
    return _Checked(manifest=chosen, target=target, predicate=predicate)


def choose_backup(storage: Storage, table: str, backup: str | None, as_of: datetime | None) -> Manifest:
    """The backup named, the latest, or the newest taken at or before `as_of`."""
    if (backup is None) == (as_of is None):
        raise InvalidInput("give exactly one of a backup id, 'latest', or an as-of time")
    if backup == "latest":
        return catalog.latest_backup(storage.backups, table)
    if backup is not None and is_legacy_name(backup):
        raise InvalidInput(f"{backup!r} is one of the seed's old backups: restore it with the CLI's restore --backup")
    if backup is not None:
        manifest = catalog.read_manifest(storage.backups, validate_backup_id(backup))
        if table_key(manifest.table) != table_key(table):
            raise InvalidInput(f"backup {backup!r} is of table {manifest.table!r}, not {table!r}")
        return manifest
    instant = as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
    for backup_id in catalog.backup_ids(storage.backups, table):
        stamp = datetime.strptime(BACKUP_ID_RE.match(backup_id)["stamp"], "%Y%m%dT%H%M%S.%fZ")
        if stamp.replace(tzinfo=UTC) <= instant:
            return catalog.read_manifest(storage.backups, backup_id)
    raise NotFound(f"table {table!r} has no complete backup taken at or before {instant.isoformat()}")


def choose_with_legacy(
    storage: Storage, table: str, backup: str | None, as_of: datetime | None
) -> Manifest | LegacyBackup:
    """As choose_backup, the seed's old backups included: by name, or when one is the newest."""
    if backup is not None and is_legacy_name(backup):
        found = read_legacy_backup(storage.backups, backup)
        if table_key(found.table) != table_key(table):
            raise InvalidInput(f"backup {backup!r} is of table {found.table!r}, not {table!r}")
        return found
    instant = None if as_of is None else (as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC))
    old = [b for b in legacy_backups(storage.backups, table) if instant is None or b.taken_at <= instant]
    if backup not in (None, "latest") or not old:
        return choose_backup(storage, table, backup, as_of)
    try:
        current = choose_backup(storage, table, backup, as_of)
    except NotFound:
        return old[0]
    return current if current.started_at.astimezone(UTC) >= old[0].taken_at else old[0]


def _backup_entities(
    storage: Storage, checked: _Checked, predicate: ODataFilter | None, erased: Erasures
) -> Iterator[dict]:
    """The table's state at the backup (a whole chain for an incremental), filtered, without
    erased keys."""
    if checked.legacy is not None:
        state = checked.legacy.entities()
    else:
        state = state_entities(storage.backups, checked.manifest)
    for entity in erased.without_erased(state):
        if predicate is None or predicate.matches(entity):
            yield entity


def restore(
    storage: Storage,
    request: RestoreRequest,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> RestoreResult:
    """Restore as the request asks; with dry_run, count what would change and write nothing."""
    started = time.monotonic()
    checked = check_request(storage, request)
    manifest, target = checked.manifest, checked.target
    if not request.force and checked.legacy is None:  # an old backup has no checksums to check
        # The whole chain is read once before the first write: a damaged backup changes nothing.
        check_whole_backup(storage.backups, manifest)
    context = {"table": request.table, "backup": manifest.backup, "target": target, "mode": request.mode}
    log.info("restore started: %s", " ".join(f"{k}={v}" for k, v in context.items()), extra=context)

    with telemetry.operation("restore", target, backup=manifest.backup, mode=request.mode):
        result = RestoreResult(backup=manifest.backup, target=target, mode=request.mode, dry_run=request.dry_run)
        result.typed = checked.legacy.scan.rules.typed_report() if checked.legacy else {}
        exists = table_exists(storage, target)
        if request.mode == "mirror" and exists and not request.dry_run:
            # The seed's pre-restore backup: mirror deletes, so keep what it replaces.
            result.safety_backup = backup_table(storage, target).backup
        if not exists and not request.dry_run:
            create_table(storage, target)

        client = storage.tables.get_table_client(target)
        tally = Tally()
        erased = erasures.load(storage, request.table)
        operations = plan_operations(
            _backup_entities(storage, checked, checked.predicate, erased),
            request.mode,
            client,
            exists,
            checked.predicate,
            tally,
        )
        if request.dry_run:
            for _ in operations:
                pass
        else:
            workers = storage.settings.restore_workers
            outcome = submit_operations(client, operations, workers=workers, on_progress=on_progress)
            # What this run wrote, not what it planned: an insert whose entity another writer put
            # there meanwhile is skipped; a delete of an entity already gone is not counted.
            tally.restored, tally.deleted = outcome.written, outcome.deleted
            tally.skipped += outcome.existing
        telemetry.record_volume("restore", target, tally.restored + tally.deleted)
    result.restored, result.deleted, result.skipped = tally.restored, tally.deleted, tally.skipped
    result.erased = erased.skipped
    result.seconds = time.monotonic() - started
    if not request.dry_run:
        record_operation(
            storage,
            "RESTORE",
            request.actor,
            target,
            {"table": request.table, "filter": request.filter, **result.as_json()},
        )
    log.info(
        "restore %s: table=%s backup=%s target=%s mode=%s restored=%d deleted=%d skipped=%d actor=%s",
        "planned (dry run)" if request.dry_run else "complete",
        request.table,
        manifest.backup,
        target,
        request.mode,
        result.restored,
        result.deleted,
        result.skipped,
        request.actor,
        extra={**context, **result.as_json(), "actor": request.actor},
    )
    return result
