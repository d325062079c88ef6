"""Backup retention: grandfather-father-son pruning, enforced by the app because blob lifecycle rules
can only count days.

The policy is restic's `forget --keep-daily D --keep-weekly W --keep-monthly M`: walking a table's
complete backups newest first, each rule keeps the newest backup of each of its N newest buckets
(UTC calendar days, ISO weeks, calendar months) that have backups; a backup kept by any rule is kept.
Only regular backups (scheduled or on demand) fill the rules' buckets. Safety backups (taken just
before a restore or an import wrote into the table) have a rule of their own: each is kept
SAFETY_BACKUP_KEEP_DAYS (keep_safety_days) after it was taken, then deleted; it never takes a
bucket from a regular backup, so it never makes one expire.

On top of the policy, the guards: the newest complete regular backup and the backup `latest` means
(tablebackup.repository.catalog.newest_state: after a mirror restore in place, the backup restored)
are always kept; every backup a kept incremental builds on (its `parent` chain) is kept, including
what work in progress needs: the parent of an incremental still being written (it records its parent
before it reads anything) and the backup a restore is reading (its hold), with their chains
(tablebackup.repository.attempts). Those, and `latest`, are read again just before each deletion.
Backups taken after `now` are kept and not counted; incomplete backups (no manifest) are deleted
once they are more than a day old.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

from tablebackup.audit.entries import operation_entries
from tablebackup.core.clients import Storage
from tablebackup.core.errors import BackupError, DamagedBackup, InvalidInput, NotFound, StorageUnavailable
from tablebackup.core.names import BACKUP_ID_RE, table_key, validate_backup_id, validate_table_name
from tablebackup.repository import catalog
from tablebackup.repository.attempts import held_backups, recorded_parents, stale_holds
from tablebackup.repository.backupformat import manifest_blob_name

log = logging.getLogger(__name__)

# Production defaults (RETENTION_DAILY, RETENTION_WEEKLY, RETENTION_MONTHLY, SAFETY_BACKUP_KEEP_DAYS).
KEEP_DAILY, KEEP_WEEKLY, KEEP_MONTHLY = 30, 12, 12
KEEP_SAFETY_DAYS = 30
# A backup still running has no manifest yet; after a day it can only be a crashed attempt.
INCOMPLETE_GRACE = timedelta(days=1)

# Each rule's bucket of a backup's UTC start time.
_RULES: tuple[tuple[str, Callable[[datetime], object]], ...] = (
    ("daily", lambda at: at.date()),
    ("weekly", lambda at: at.isocalendar()[:2]),  # (ISO year, ISO week): a week may span New Year
    ("monthly", lambda at: (at.year, at.month)),
)


@dataclass(frozen=True)
class Plan:
    """What retention does to one table's backups as of `now`; lists are newest first."""

    table: str
    now: datetime
    keep: list[str]
    # Newest first, so an incremental goes before the backup it builds on if a run is interrupted.
    delete: list[str]
    reasons: dict[str, list[str]]  # every backup attempt, newest first: why it is kept or deleted

    def as_json(self) -> dict:
        return {
            "table": self.table,
            "now": _iso(self.now),
            "keep": self.keep,
            "delete": self.delete,
            "reasons": self.reasons,
        }


def policy_from_settings(settings) -> dict[str, int]:
    """keep_daily/keep_weekly/keep_monthly/keep_safety_days from RETENTION_DAILY/_WEEKLY/_MONTHLY and
    SAFETY_BACKUP_KEEP_DAYS."""
    return {
        "keep_daily": settings.retention_daily,
        "keep_weekly": settings.retention_weekly,
        "keep_monthly": settings.retention_monthly,
        "keep_safety_days": settings.safety_backup_keep_days,
    }


def plan(
    storage: Storage,
    table: str,
    *,
    keep_daily: int = KEEP_DAILY,
    keep_weekly: int = KEEP_WEEKLY,
    keep_monthly: int = KEEP_MONTHLY,
    keep_safety_days: int = KEEP_SAFETY_DAYS,
    now: datetime | None = None,
) -> Plan:
    """Decide which of the table's backups to keep and which to delete as of `now`; reads only."""
    validate_table_name(table)
    counts = _validate_counts(keep_daily, keep_weekly, keep_monthly, keep_safety_days)
    now = _utc(now)
    attempts = [
        (backup_id, complete, _taken_at(backup_id))
        for backup_id, complete in catalog.backup_attempts(storage.backups, table)
    ]
    reasons: dict[str, list[str]] = defaultdict(list)

    complete_now = [(backup_id, at) for backup_id, complete, at in attempts if complete and at <= now]
    safety = {backup_id for backup_id, _ in complete_now if _is_safety(storage.backups, backup_id)}
    for backup_id, at in complete_now:
        if backup_id in safety and now - at <= timedelta(days=keep_safety_days):
            reasons[backup_id].append(f"safety backup (kept {keep_safety_days} days)")
    counted = [(backup_id, at) for backup_id, at in complete_now if backup_id not in safety]
    for rule, bucket in _RULES:
        left, last = counts[rule], None
        for backup_id, at in counted:
            if left == 0:
                break
            if bucket(at) != last:  # newest first: the first backup seen in a bucket is its newest
                reasons[backup_id].append(rule)
                left, last = left - 1, bucket(at)
    if counted:
        reasons[counted[0][0]].append("newest complete")
    latest = _latest(storage.backups, table, now)
    if latest is not None:
        reasons[latest].append("latest (restored in place)")
    existing = {backup_id for backup_id, _, _ in attempts}
    for backup_id in held_backups(storage.backups, table, now):
        if backup_id in existing:
            reasons[backup_id].append("held by a restore in progress")

    for backup_id, complete, at in attempts:
        if at > now:
            reasons[backup_id].append("after now")
        elif not complete and now - at <= INCOMPLETE_GRACE:
            reasons[backup_id].append("in progress")

    _keep_parents(storage.backups, attempts, reasons)
    keep, delete, why = [], [], {}
    for backup_id, complete, _ in attempts:
        if reasons.get(backup_id):
            keep.append(backup_id)
            why[backup_id] = reasons[backup_id]
        else:
            delete.append(backup_id)
            expired = "expired safety backup" if backup_id in safety else "expired"
            why[backup_id] = [expired] if complete else ["incomplete"]
    return Plan(table=table, now=now, keep=keep, delete=delete, reasons=why)


def _is_safety(container: ContainerClient, backup_id: str) -> bool:
    """From the manifest, the authority; a refused or vanished one counts as a regular backup."""
    try:
        return catalog.read_manifest(container, backup_id).safety
    except (NotFound, DamagedBackup):
        return False


def _latest(container: ContainerClient, table: str, now: datetime) -> str | None:
    """The backup `latest` means as of `now` when a mirror restore in place made it so (the newest
    regular backup is kept anyway); None otherwise or when it cannot be told."""
    try:
        state = catalog.newest_state(container, table, now, skip_refused=True)
    except BackupError:
        return None
    return state.backup if state.restore is not None else None


def _builds_on(container: ContainerClient, backup_id: str, complete: bool) -> list[str]:
    """The backups this one builds on: its manifest's parent, or what its attempts recorded."""
    if not complete:
        return recorded_parents(container, backup_id)
    parent = catalog.read_manifest(container, backup_id).parent
    return [parent] if parent else []


def _keep_parents(container: ContainerClient, attempts: list, reasons: dict[str, list[str]]) -> None:
    """Keep the whole parent chain of every kept incremental, complete or still being written. Only
    kept backups are read: a backup being deleted cannot make another one needed."""
    existing = {backup_id: complete for backup_id, complete, _ in attempts}
    pending = [backup_id for backup_id, _, _ in attempts if reasons.get(backup_id)]
    seen = set(pending)
    while pending:
        child = pending.pop()
        for parent in _builds_on(container, child, existing[child]):
            if parent not in existing:
                log.warning("backup %s builds on %s, which does not exist", child, parent, extra={"backup": child})
                continue
            reasons[parent].append(f"parent of {child}")
            if existing[parent] and parent not in seen:
                seen.add(parent)
                pending.append(parent)


def _needed_now(container: ContainerClient, table: str, now: datetime) -> dict[str, str]:
    """backup -> why it is needed right now: the chain of an incremental in progress, of a backup a
    restore in progress reads, or of `latest` after a mirror restore in place. Read again just before
    each deletion: any of them may have started or completed after the plan was made."""
    needed: dict[str, str] = {}
    roots: list[tuple[list[str], str]] = []
    for attempt, complete in catalog.backup_attempts(container, table):
        if not complete and now - _taken_at(attempt) <= INCOMPLETE_GRACE:
            roots.append((recorded_parents(container, attempt), f"parent of {attempt}"))
    for backup_id in held_backups(container, table, now):
        roots.append(([backup_id], "held by a restore in progress"))
    latest = _latest(container, table, now)
    if latest is not None:
        roots.append(([latest], "latest (restored in place)"))
    for chain, why in roots:
        while chain:
            backup_id = chain.pop()
            if backup_id in needed:
                continue
            needed[backup_id] = why
            with contextlib.suppress(NotFound, DamagedBackup):
                chain += _builds_on(container, backup_id, True)
    return needed


def delete_backup(container: ContainerClient, backup_id: str) -> None:
    """Delete one backup: the manifest first, so a half-deleted backup is never listed as complete,
    then every blob under `<id>/`. A blob already gone is fine, so a retried deletion converges."""
    validate_backup_id(backup_id)
    try:
        _delete_blob(container, manifest_blob_name(backup_id))
        for blob in container.list_blobs(name_starts_with=f"{backup_id}/"):
            _delete_blob(container, blob.name)
    except ResourceNotFoundError:
        return  # no container: nothing left to delete
    except AzureError as error:
        raise StorageUnavailable(
            f"deleting backup {backup_id!r} from {container.url.split('?')[0]} failed: {str(error).splitlines()[0]}"
        ) from error


def _delete_blob(container: ContainerClient, name: str) -> None:
    with contextlib.suppress(ResourceNotFoundError):  # already deleted
        container.delete_blob(name, delete_snapshots="include")


def prune(
    storage: Storage,
    tables: list[str] | None = None,
    *,
    keep_daily: int = KEEP_DAILY,
    keep_weekly: int = KEEP_WEEKLY,
    keep_monthly: int = KEEP_MONTHLY,
    keep_safety_days: int = KEEP_SAFETY_DAYS,
    now: datetime | None = None,
    dry_run: bool = False,
    actor: str = "prune_daily",
) -> dict:
    """Plan and (unless dry_run) delete, for the named tables or every table with backups. A failing
    table is reported under `failed` and the others still run. Each table's deletions are audited."""
    # Refuse bad input before anything is read.
    _validate_counts(keep_daily, keep_weekly, keep_monthly, keep_safety_days)
    if not dry_run:
        storage.refuse_backup_writes("prune backups")
    # One plan per table, however its name is spelled: plan() finds every spelling's backups.
    names = list({table_key(validate_table_name(t)): t for t in tables}.values()) if tables else None
    now = _utc(now)
    if names is None:
        names = catalog.backed_up_tables(storage.backups)
    counts = {
        "keep_daily": keep_daily,
        "keep_weekly": keep_weekly,
        "keep_monthly": keep_monthly,
        "keep_safety_days": keep_safety_days,
    }
    result: dict = {
        "now": _iso(now),
        "dry_run": dry_run,
        "tables": names,
        "keep": [],
        "delete": [],
        "deleted": [],
        "reasons": {},
        "failed": [],
    }
    for table in names:
        try:
            planned = plan(storage, table, **counts, now=now)
            result["keep"] += planned.keep
            result["delete"] += planned.delete
            result["reasons"].update(planned.reasons)
            summary = f"table={table} keep={len(planned.keep)} delete={len(planned.delete)} dry_run={dry_run}"
            log.info("retention planned: %s", summary, extra={"table": table})
            if dry_run:
                continue
            deleted: list[str] = []
            with contextlib.ExitStack() as audit:
                entries = None
                for backup_id in planned.delete:
                    why = _needed_now(storage.backups, table, now).get(backup_id)
                    if why is not None:
                        log.info("backup kept: table=%s backup=%s (%s)", table, backup_id, why)
                        result["delete"].remove(backup_id)
                        result["keep"].append(backup_id)
                        result["reasons"][backup_id] = [why]
                        continue
                    if entries is None:  # opened at the first delete: a prune that deletes nothing changes nothing
                        intent = {"delete": [b for b in planned.delete if b in result["delete"]], **counts}
                        entries = audit.enter_context(operation_entries(storage, "PRUNE", actor, table, intent))
                        entries.partial["deleted"] = deleted
                    delete_backup(storage.backups, backup_id)
                    deleted.append(backup_id)
                    result["deleted"].append(backup_id)
                    reason = ", ".join(planned.reasons[backup_id])
                    log.info(
                        "backup deleted: table=%s backup=%s (%s)",
                        table,
                        backup_id,
                        reason,
                        extra={"table": table, "backup": backup_id},
                    )
                if entries is not None:
                    entries.result = {"deleted": deleted, **counts}
            for name in stale_holds(storage.backups, table, now):
                # A restore's hold that ran out; one an immutability policy still protects stays.
                with contextlib.suppress(AzureError):
                    _delete_blob(storage.backups, name)
        except BackupError as error:
            log.error("pruning failed: table=%s: %s", table, error, extra={"table": table, "error": str(error)})
            result["failed"].append({"table": table, "error": str(error)})
        except Exception as error:  # isolation: a bug on one table must not stop the others
            log.exception("pruning failed: table=%s", table, extra={"table": table})
            result["failed"].append({"table": table, "error": f"unexpected {type(error).__name__}: {error}"})
    return result


def _validate_counts(keep_daily: int, keep_weekly: int, keep_monthly: int, keep_safety_days: int = 0) -> dict:
    counts = {"daily": keep_daily, "weekly": keep_weekly, "monthly": keep_monthly, "safety_days": keep_safety_days}
    for rule, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise InvalidInput(f"invalid keep_{rule} {count!r}: a count of 0 or more")
    return counts


def _taken_at(backup_id: str) -> datetime:
    # The id's stamp is the backup's UTC start, so planning needs no manifest read per backup.
    stamp = BACKUP_ID_RE.match(backup_id)["stamp"]
    return datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")
