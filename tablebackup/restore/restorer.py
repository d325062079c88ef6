"""Restore a backup, or the part a filter selects, into its table or another one.

Modes: replace (InsertOrReplace), merge (InsertOrMerge), missing (insert only what the target
lacks), mirror (the filtered scope of the target becomes exactly the backup's, deletions included).

missing and mirror compare the backup with the target window by window: a window is up to 1,000
backup entities in the order the service listed them, and the target is read only over that
window's key range, so memory stays bounded and key order is always the service's own.

Which backup: the id named, or what `latest` and --as-of mean (tablebackup.repository.catalog:
never a safety backup). Whatever a request resolved when it was first asked is pinned in
`resolved`, so a retry, a queue redelivery or a rerun restores exactly that backup.

Safety: a restore that can overwrite or delete entities of an existing table (replace, merge,
mirror) first takes a safety backup of it (its manifest says so, and for which restore); the result
names it and the command that undoes the restore. `missing` only adds entities the table lacks: it
overwrites nothing, so it takes none. While it runs, a restore holds its backup against `prune`
(tablebackup.repository.attempts). A completed restore into the table itself is recorded
(catalog.record_restore): an unfiltered mirror makes its backup the table's newest known state.
"""

from __future__ import annotations

import contextvars
import logging
import shlex
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from azure.core.exceptions import AzureError

from tablebackup.audit.entries import OperationEntries, operation_entries
from tablebackup.backup.archiver import backup_table
from tablebackup.core import telemetry
from tablebackup.core.accounts import TargetAccount
from tablebackup.core.clients import Storage
from tablebackup.core.errors import BackupError, InvalidInput, NotFound
from tablebackup.core.names import table_key, validate_backup_id, validate_table_name
from tablebackup.repository import catalog, erasures
from tablebackup.repository.attempts import hold_backup, release_hold
from tablebackup.repository.backupformat import BackupReason, Manifest
from tablebackup.repository.chain import state_entities, state_size
from tablebackup.repository.erasures import Erasures
from tablebackup.repository.integrity import check_whole_backup
from tablebackup.repository.legacybackups import LegacyBackup, is_legacy_name, legacy_backups, read_legacy_backup
from tablebackup.restore.drydiff import DIFF_MODES, dry_run_changes
from tablebackup.restore.legacy import LegacyRead, read_legacy
from tablebackup.restore.ranges import KeyRange, plan_ranges, range_entities
from tablebackup.storage.odatafilter import ODataFilter, parse_filter
from tablebackup.storage.reconcile import MODES, Tally, plan_operations
from tablebackup.storage.tables import addressed, create_table, table_exists
from tablebackup.storage.tablewriter import submit_operations
from tablebackup.storage.targets import in_target_account, resolve_target
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
    # The backup id `backup` or `as_of` resolved to when the restore was first asked: every retry,
    # redelivery or rerun of this request restores exactly it.
    resolved: str | None = None
    # The queued operation this request runs as (named in its safety backup's reason).
    operation: str | None = None
    # Another storage account to write into (tablebackup.core.accounts): a setting's name or a table
    # endpoint, never a connection string. The audit trail and the app's records stay in the app's.
    target_account: str | None = None
    # Range streams written at once (`restore --parallel N`): the backup is cut into PartitionKey
    # ranges (tablebackup.restore.ranges) and N of them run side by side.
    parallel: int = 1


# The modes that can overwrite or delete what the table holds: they take a safety backup first.
SAFETY_MODES = ("replace", "merge", "mirror")


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
    # The command that puts the target back as the safety backup found it.
    undo: str | None = None
    # Why this backup: named by its id, or what `latest` / --as-of resolved to.
    chosen: str = ""
    seconds: float = 0.0
    dry_run: bool = False
    # A dry run of replace or mirror: {created, updated, unchanged, deleted} (tablebackup.restore.drydiff).
    changes: dict[str, int] | None = None
    typed: dict[str, dict[str, int]] = field(default_factory=dict)  # what --infer-types typed (legacy)
    warnings: list[str] = field(default_factory=list)
    target_account: str | None = None  # the account written into, when not the data account

    def as_json(self) -> dict:
        return {**asdict(self), "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class _Checked:
    manifest: Manifest | LegacyBackup
    target: str
    predicate: ODataFilter | None
    legacy: LegacyRead | None = None  # an old backup, validated whole before the first write
    chosen: str = ""  # why this backup
    # Where the target table is: the request's target account, or the app's own storage itself.
    data: Storage | None = None
    account: TargetAccount | None = None  # set only when `data` is another account


def check_request(storage: Storage, request: RestoreRequest) -> _Checked:
    """Everything a restore could refuse, checked before anything is written."""
    validate_table_name(request.table)
    if request.mode not in MODES:
        raise InvalidInput(f"unknown mode {request.mode!r}: use one of {', '.join(MODES)}")
    target = resolve_target(
        storage.settings, request.table, request.target, mode=request.mode, allow_app_table=request.allow_app_table
    )
    data, account = in_target_account(storage, request.target_account)
    target = addressed(data, target)  # an existing table under another spelling is that table
    predicate = parse_filter(request.filter) if request.filter else None
    if request.include_legacy and request.resolved is None:
        chosen, why = choose_with_legacy(storage, request.table, request.backup, request.as_of)
    else:
        chosen, why = resolve_backup(storage, request.table, request.backup, request.as_of, request.resolved)
    if isinstance(chosen, LegacyBackup):
        legacy = read_legacy(storage, chosen, request.mode, TypeRules(request.types, request.infer_types))
        return _Checked(chosen, target, predicate, legacy=legacy, chosen=why, data=data, account=account)
    return _Checked(chosen, target, predicate, chosen=why, data=data, account=account)


def _named(storage: Storage, table: str, backup: str) -> Manifest:
    manifest = catalog.read_manifest(storage.backups, validate_backup_id(backup))
    if table_key(manifest.table) != table_key(table):
        raise InvalidInput(f"backup {backup!r} is of table {manifest.table!r}, not {table!r}")
    return manifest


def resolve_backup(
    storage: Storage, table: str, backup: str | None, as_of: datetime | None, resolved: str | None = None
) -> tuple[Manifest, str]:
    """The backup to restore and why: the one `resolved` pins (what the request resolved when first
    asked), the id named, `latest` (the table's newest known state), or the newest known state at
    `as_of`. Neither `latest` nor --as-of ever takes a safety backup (tablebackup.repository.catalog)."""
    if (backup is None) == (as_of is None):
        raise InvalidInput("give exactly one of a backup id, 'latest', or an as-of time")
    if backup is not None and is_legacy_name(backup):
        raise InvalidInput(
            f"{backup!r} is a daily JSON export (<table>-<time>.json): restore it with the CLI's restore --backup"
        )
    if resolved is not None:
        asked = "latest" if backup == "latest" else f"as of {as_of.isoformat()}" if backup is None else "its id"
        return _named(storage, table, resolved), f"{resolved}, as {asked} resolved when the restore was first asked"
    if backup == "latest":
        state = catalog.newest_state(storage.backups, table)
        return state.manifest, f"latest: {state.describe()}"
    if backup is not None:
        manifest = _named(storage, table, backup)
        kind = "a safety backup, " if manifest.safety else ""
        return manifest, f"named by its id ({kind}{manifest.reason_json()['text']})"
    state = catalog.newest_state(storage.backups, table, as_of)
    return state.manifest, f"as of {as_of.isoformat()}: {state.describe()}"


def choose_backup(storage: Storage, table: str, backup: str | None, as_of: datetime | None) -> Manifest:
    """The backup named, the latest, or the newest known state at `as_of` (resolve_backup)."""
    return resolve_backup(storage, table, backup, as_of)[0]


def choose_with_legacy(
    storage: Storage, table: str, backup: str | None, as_of: datetime | None
) -> tuple[Manifest | LegacyBackup, str]:
    """As resolve_backup, the seed's old backups included: by name, or when one is the newest."""
    if backup is not None and is_legacy_name(backup):
        found = read_legacy_backup(storage.backups, backup)
        if table_key(found.table) != table_key(table):
            raise InvalidInput(f"backup {backup!r} is of table {found.table!r}, not {table!r}")
        return found, "named by its name (a daily JSON export, <table>-<time>.json)"
    instant = None if as_of is None else (as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC))
    old = [b for b in legacy_backups(storage.backups, table) if instant is None or b.taken_at <= instant]
    if backup not in (None, "latest") or not old:
        return resolve_backup(storage, table, backup, as_of)
    try:
        current, why = resolve_backup(storage, table, backup, as_of)
    except NotFound:
        return old[0], f"{backup or 'as of'}: the daily JSON export {old[0].backup}; the table has no newer one"
    if current.started_at.astimezone(UTC) >= old[0].taken_at:
        return current, why
    return old[0], f"{backup or 'as of'}: the daily JSON export {old[0].backup} is newer than any backup of the app"


def _backup_entities(
    storage: Storage,
    checked: _Checked,
    predicate: ODataFilter | None,
    erased: Erasures,
    key_range: KeyRange | None = None,
) -> Iterator[dict]:
    """The table's state at the backup (a whole chain for an incremental), filtered, without
    erased keys: all of it, or one key range of it."""
    if checked.legacy is not None:
        state = checked.legacy.entities()
    elif key_range is not None:
        state = range_entities(storage.backups, checked.manifest, key_range)
    else:
        state = state_entities(storage.backups, checked.manifest)
    for entity in erased.without_erased(state):
        if predicate is None or predicate.matches(entity):
            yield entity


def audit_plan(request: RestoreRequest, checked: _Checked) -> dict:
    """What a restore will do, as its `started` audit entry says (and its `ended` one repeats)."""
    return {
        "table": request.table,
        "backup": checked.manifest.backup,
        "target": checked.target,
        "mode": request.mode,
        "filter": request.filter,
        "chosen": checked.chosen,
        **({"target_account": checked.account.name} if checked.account else {}),
    }


def undo_command(
    target: str, safety_backup: str, query_filter: str | None = None, target_account: str | None = None
) -> str:
    """The command that puts the target back as its safety backup found it: within the filter's
    scope when the restore had one, in the account it was in."""
    command = f"tablebackup restore --table {target} --backup {safety_backup} --mode mirror"
    command += f" --target-account {shlex.quote(target_account)}" if target_account else ""
    return command + (f" --filter {shlex.quote(query_filter)}" if query_filter else "")


def take_safety_backup(
    storage: Storage, request: RestoreRequest, manifest, target: str, reuse: str | None
) -> tuple[str, bool]:
    """The target's safety backup: the one an earlier delivery of this very operation took (so the
    undo goes back to before the operation began), else a new one. Returns (id, taken now)."""
    if reuse is not None:
        try:
            earlier = catalog.read_manifest(storage.backups, reuse)
        except BackupError as error:
            log.warning("taking a new safety backup: the earlier one is unusable: %s", error)
        else:
            if earlier.safety and table_key(earlier.table) == table_key(target):
                return earlier.backup, False
    reason = BackupReason.before_restore(target, manifest.backup, request.mode, request.actor, request.operation)
    return backup_table(storage, target, reason=reason).backup, True


def record_completed(
    storage: Storage, request: RestoreRequest, checked: _Checked, result: RestoreResult, begun, whole
) -> None:
    """Record a completed restore into the table itself (catalog.record_restore); if that cannot be
    written, the restore stands and its result says what to do. A restore into another account
    is not one of the table: its `latest` stays what the data account holds."""
    if table_key(checked.target) != table_key(request.table) or checked.legacy is not None or checked.account:
        return
    record = catalog.RestoreRecord(
        table=table_key(request.table),
        backup=result.backup,
        mode=request.mode,
        whole=whole and request.mode == "mirror" and request.filter is None,
        started_at=begun,
        restored_at=datetime.now(UTC),
        filter=request.filter,
        safety_backup=result.safety_backup,
        actor=request.actor,
        operation=request.operation,
    )
    try:
        catalog.record_restore(storage.backups, record)
    except (BackupError, AzureError) as error:
        warning = (
            f"the record of this restore could not be written ({str(error).splitlines()[0]}): `latest` and the "
            "status do not know of it; take a backup of the table now"
        )
        log.error("restore of %s: %s", request.table, warning, extra={"table": request.table})
        result.warnings.append(warning)


def restore(
    storage: Storage,
    request: RestoreRequest,
    *,
    on_progress: Callable[[int], None] | None = None,
    reuse_safety: str | None = None,
    on_safety_backup: Callable[[str], None] | None = None,
    whole_state: bool = True,
    within: OperationEntries | None = None,
) -> RestoreResult:
    """Restore as the request asks; with dry_run, count what would change and write nothing.

    reuse_safety: the safety backup an earlier delivery of the same operation took. on_safety_backup
    is called with the safety backup's id as soon as it is complete. whole_state=False: the table
    will not be the backup's state when this returns (a point-in-time restore replays on top).
    The restore is one pair of RESTORE audit entries (started, ended); within: it is part of a
    larger operation that has its pair (a point-in-time restore, an undelete) and reports to it."""
    started = time.monotonic()
    begun = datetime.now(UTC)
    checked = check_request(storage, request)
    manifest, target = checked.manifest, checked.target
    plan = audit_plan(request, checked)
    audit = (
        operation_entries(storage, "RESTORE", request.actor, target, plan, record=not request.dry_run)
        if within is None
        else nullcontext(within)
    )
    hold = None
    if checked.legacy is None:
        try:  # before the chain is read: prune keeps what this restore reads
            hold = hold_backup(storage.backups, manifest.backup)
        except AzureError as error:  # e.g. the backups' read-only secondary: nothing prunes there either
            log.warning("restore of %s: no hold on %s: %s", request.table, manifest.backup, str(error).splitlines()[0])
    try:
        if not request.force and checked.legacy is None:  # an old backup has no checksums to check
            # The whole chain is read once before the first write: a damaged backup changes nothing
            # (and, refused before it began, leaves nothing in the audit trail either).
            check_whole_backup(storage.backups, manifest)
        with audit as entries:

            def safety_taken(backup: str) -> None:
                entries.partial["safety_backup"] = backup  # an interrupted restore still names its undo
                if on_safety_backup is not None:
                    on_safety_backup(backup)

            progress = entries.counting(on_progress)
            result = _restore(storage, request, checked, progress, reuse_safety, safety_taken)
            if not request.dry_run:
                record_completed(storage, request, checked, result, begun, whole_state)
            result.seconds = time.monotonic() - started
            entries.result = {"table": request.table, "filter": request.filter, **result.as_json()}
    finally:
        if hold is not None:
            release_hold(storage.backups, hold)
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
        extra={
            "table": request.table,
            "target": target,
            "mode": request.mode,
            **result.as_json(),
            "actor": request.actor,
        },
    )
    return result


def _restore(
    storage: Storage,
    request: RestoreRequest,
    checked: _Checked,
    on_progress: Callable[[int], None] | None,
    reuse_safety: str | None,
    on_safety_backup: Callable[[str], None] | None,
) -> RestoreResult:
    manifest, target = checked.manifest, checked.target
    # The target side (its table, its safety backup) in the target account; audit, erasure register
    # and records in the app's own (`storage`).
    data = checked.data or storage
    context = {"table": request.table, "backup": manifest.backup, "target": target, "mode": request.mode}
    log.info(
        "restore started: %s (%s)", " ".join(f"{k}={v}" for k, v in context.items()), checked.chosen, extra=context
    )

    with telemetry.operation("restore", target, backup=manifest.backup, mode=request.mode):
        result = RestoreResult(
            backup=manifest.backup, target=target, mode=request.mode, dry_run=request.dry_run, chosen=checked.chosen
        )
        result.target_account = checked.account.name if checked.account else None
        result.typed = checked.legacy.scan.rules.typed_report() if checked.legacy else {}
        exists = table_exists(data, target)
        if request.mode in SAFETY_MODES and exists and not request.dry_run:
            # What this restore overwrites or deletes stays restorable, by the safety backup's id.
            result.safety_backup, taken = take_safety_backup(data, request, manifest, target, reuse_safety)
            result.undo = undo_command(target, result.safety_backup, request.filter, result.target_account)
            if on_safety_backup is not None and taken:
                on_safety_backup(result.safety_backup)
        if not exists and not request.dry_run:
            create_table(data, target)

        client = data.tables.get_table_client(target)
        tally = Tally()
        erased = erasures.load(storage, request.table)
        if request.dry_run and request.mode in DIFF_MODES:
            # What would change, not only what would be written (a mirror writes every entity).
            entities = _backup_entities(storage, checked, checked.predicate, erased)
            changes = dry_run_changes(entities, request.mode, client, exists, checked.predicate, tally)
            result.changes = changes.as_json()
        elif request.dry_run:
            entities = _backup_entities(storage, checked, checked.predicate, erased)
            for _ in plan_operations(entities, request.mode, client, exists, checked.predicate, tally):
                pass
        else:
            tally, erased.skipped = _write_in_ranges(storage, request, checked, client, exists, erased, on_progress)
        telemetry.record_volume("restore", target, tally.restored + tally.deleted)
    result.restored, result.deleted, result.skipped = tally.restored, tally.deleted, tally.skipped
    result.erased = erased.skipped
    return result


class _Stopped(Exception):
    """Another range stream failed or was interrupted: this one stops too."""


def write_range(
    storage: Storage,
    request: RestoreRequest,
    checked: _Checked,
    client,
    exists: bool,
    key_range: KeyRange | None,
    on_progress: Callable[[int], None] | None,
    stop: threading.Event | None = None,
    register: Erasures | None = None,
) -> tuple[Tally, int]:
    """Write one key range of the backup (None: all of it) into the target: what this run really
    wrote, and how many entities it left out because their keys were erased. register: the
    table's erasure register, if it was read already."""
    tally = Tally()
    digests = (register or erasures.load(storage, request.table)).digests
    erased = Erasures(digests=digests)  # its own count: ranges run side by side
    entities = _backup_entities(storage, checked, checked.predicate, erased, key_range)
    if stop is not None:
        entities = _until(stop, entities)
    bounds = key_range.odata() if key_range is not None else None
    operations = plan_operations(entities, request.mode, client, exists, checked.predicate, tally, bounds)
    outcome = submit_operations(client, operations, workers=storage.settings.restore_workers, on_progress=on_progress)
    # What this run wrote, not what it planned: an insert whose entity another writer put there
    # meanwhile is skipped; a delete of an entity already gone is not counted.
    tally.restored, tally.deleted = outcome.written, outcome.deleted
    tally.skipped += outcome.existing
    return tally, erased.skipped


def _until(stop: threading.Event, entities: Iterator[dict]) -> Iterator[dict]:
    for entity in entities:
        if stop.is_set():
            raise _Stopped()
        yield entity


def _write_in_ranges(
    storage: Storage,
    request: RestoreRequest,
    checked: _Checked,
    client,
    exists: bool,
    register: Erasures,
    on_progress: Callable[[int], None] | None,
) -> tuple[Tally, int]:
    """The whole write, in one stream or, with request.parallel > 1, in key ranges N at a time:
    what it wrote, and how many erased entities it left out."""
    ranges: list[KeyRange] = []
    if request.parallel > 1 and checked.legacy is None:
        # At least one range per stream, and none larger than RESTORE_PART_ENTITIES.
        per_range = -(-state_size(checked.manifest) // request.parallel)
        per_range = max(1, min(storage.settings.restore_part_entities, per_range))
        ranges = plan_ranges(storage.backups, checked.manifest, per_range)
    if len(ranges) < 2:
        return write_range(storage, request, checked, client, exists, None, on_progress, register=register)
    log.info("restore of %s: %d key ranges, %d at a time", request.table, len(ranges), request.parallel)
    counts: dict[int, int] = {}
    lock, stop = threading.Lock(), threading.Event()

    def run(key_range: KeyRange) -> tuple[Tally, int]:
        def report(count: int) -> None:
            with lock:  # the sum of every stream's count, reported in order
                counts[key_range.index] = count
                if on_progress is not None:
                    on_progress(sum(counts.values()))

        return write_range(storage, request, checked, client, exists, key_range, report, stop, register)

    with ThreadPoolExecutor(request.parallel, thread_name_prefix="restore-range") as pool:
        # Each thread in this context: what it writes is added to the operation's write ledger.
        futures = [pool.submit(contextvars.copy_context().run, run, key_range) for key_range in ranges]
        try:
            results = [future.result() for future in futures]
        except BaseException:
            # Ctrl-C or a failed range: the other streams stop at their next entity, and what they
            # wrote until then is in the progress counts before this re-raises.
            stop.set()
            for future in futures:
                future.cancel()
            wait(futures)
            raise
    total = Tally()
    for tally, _ in results:
        total.restored += tally.restored
        total.deleted += tally.deleted
        total.skipped += tally.skipped
    return total, sum(erased for _, erased in results)
