"""Verify a backup: one streaming pass over every blob of its chain checks the checksums, every line
and the counts (tablebackup.repository.integrity), then the live table, the required fields and the age against
the RPO.

Without a backup id, verification judges what a restore of `latest` would use: the table's newest
known state (tablebackup.repository.catalog; never a safety backup), whose age is the recovery
point. An attempt without a manifest is reported as in progress while it is younger than a day (a
backup still being written is no failure), and as debris, a warning naming it, once it is older. A
backup id that does not exist is refused (NotFound): nothing is verified, recorded or alerted on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from azure.core.exceptions import AzureError

from tablebackup.core import telemetry
from tablebackup.core.clients import Storage
from tablebackup.core.errors import BackupError, DamagedBackup, InvalidInput, NotFound
from tablebackup.core.names import table_key, validate_backup_id, validate_table_name
from tablebackup.repository import catalog, erasures
from tablebackup.repository.backupformat import Manifest
from tablebackup.repository.integrity import Findings, inspect_chain
from tablebackup.storage.tablequery import iter_pages
from tablebackup.verify import results

log = logging.getLogger(__name__)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    warning: bool = False  # passed, but something needs a look

    def as_json(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "warning": self.warning}


@dataclass
class Verification:
    table: str
    backup: str | None
    verified_at: datetime
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def warnings(self) -> list[str]:
        return [f"{c.name}: {c.detail}" for c in self.checks if c.warning]

    def add(self, name: str, ok: bool, detail: str, *, warning: bool = False) -> None:
        self.checks.append(Check(name, ok, detail, warning))

    def as_json(self) -> dict:
        return {
            "ok": self.ok,
            "backup": self.backup,
            "table": self.table,
            "checks": [check.as_json() for check in self.checks],
            "warnings": self.warnings,
        }

    def summary(self) -> str:
        failed = [f"{c.name}: {c.detail}" for c in self.checks if not c.ok]
        verdict = "passed" if self.ok else "FAILED (" + "; ".join(failed) + ")"
        if self.ok and self.warnings:
            verdict += " with warnings (" + "; ".join(self.warnings) + ")"
        return f"verification of {self.backup or self.table} {verdict}"


def _hours_between(earlier: datetime, later: datetime) -> float:
    return (later - earlier).total_seconds() / 3600


def _check_chain(storage: Storage, manifest: Manifest, required: list[str], result: Verification) -> None:
    """Every blob of the backup, and of every backup an incremental builds on, in one pass each."""
    try:
        report = inspect_chain(storage.backups, manifest, required)
    except (DamagedBackup, NotFound) as error:
        result.add("chain", False, str(error))
        return
    links = report.links
    if len(links) > 1:
        result.add(
            "chain",
            True,
            f"a full backup and {len(links) - 1} incremental(s): " + " <- ".join(link.backup for link in links),
        )
    result.add(
        "checksum",
        not report.mismatches,
        report.mismatches.describe()
        if report.mismatches
        else f"{manifest.bytes} bytes, SHA-256 {manifest.sha256}"
        + (f" ({report.blobs} blobs match)" if report.blobs > 1 else ""),
    )
    result.add(
        "entities decode",
        not report.bad_lines,
        f"{report.bad_lines.total} bad: {report.bad_lines.describe()}"
        if report.bad_lines
        else "every line is an entity with valid keys and types",
    )
    result.add(
        "entity count",
        not report.miscounts,
        report.miscounts.describe() if report.miscounts else f"{manifest.entities} lines",
    )
    result.add(
        "key order",
        not report.disorder,
        report.disorder.describe() if report.disorder else "keys strictly increase in the service's order",
    )
    if required:
        missing = report.missing_fields
        result.add(
            "required fields",
            not missing,
            f"{missing.total} missing or empty: {missing.describe()}"
            if missing
            else f"{', '.join(required)} present and non-empty on every entity",
        )


def _check_live_count(storage: Storage, manifest: Manifest, result: Verification) -> None:
    """Drift against the live table is information: the table keeps changing after the backup."""
    try:
        client = storage.source_tables.get_table_client(manifest.table)
        live = sum(len(page) for page in iter_pages(client, select=["PartitionKey", "RowKey"]))
        held = manifest.keys.lines if manifest.keys else manifest.entities
        detail = f"the live table has {live} entities, the backup {held} (drift {live - held:+d})"
        erased = len(erasures.load(storage, manifest.table).digests)
        if erased:
            detail += f"; {erased} erased key(s) are expected absences"
    except NotFound:
        detail = "the live table does not exist"
    except (BackupError, AzureError) as error:
        detail = f"the live table could not be counted: {str(error).splitlines()[0]}"
    result.add("live table count", True, detail)


def verify_backup(
    storage: Storage, table: str, backup: str | None = None, *, now: datetime | None = None
) -> Verification:
    """Verify the named backup, or the table's newest complete backup, as of `now` (default: the
    clock), reporting attempts still in progress and old debris."""
    with telemetry.operation("verify", table):
        return _verify(storage, table, backup, now or datetime.now(UTC))


def _verify(storage: Storage, table: str, backup: str | None, now: datetime) -> Verification:
    validate_table_name(table)
    if backup is not None:
        validate_backup_id(backup)
        if not table_key(backup).startswith(f"{table_key(table)}-"):
            raise InvalidInput(f"backup {backup!r} is not a backup of table {table!r}")
    max_age = storage.settings.backup_max_age_hours
    attempts = catalog.backup_attempts(storage.backups, table)
    if backup is not None and backup not in dict(attempts):
        # Nothing to judge: said, and not recorded (no failed verification, no alert).
        raise NotFound(f"backup {backup!r} does not exist (list-backups --table {table} lists the backups)")
    # What a restore of `latest` would use, and the problem that stops it if any.
    state, problem, refused = None, None, None
    try:
        state = catalog.newest_state(storage.backups, table)
    except DamagedBackup as error:  # refused: it names the backup whose manifest is refused
        problem, refused = str(error), getattr(error, "backup", None)
    except NotFound as error:
        problem = str(error)
    newest = state.backup if state else refused
    result = Verification(table=table, backup=backup or newest, verified_at=now)
    if backup is None:
        in_progress = _report_unfinished(attempts, now, result)
        if newest is None:
            if any(complete for _, complete in attempts):
                missing = problem
            else:
                missing = (
                    f"table {table!r} has no complete backup" if attempts else f"table {table!r} has no backup at all"
                )
                missing += " yet (one is in progress)" if in_progress else ""
            result.add("manifest", False, missing)
            result.add("recovery point", False, f"no complete backup within {max_age:g} hours")
            return result
    manifest = None
    try:
        manifest = catalog.read_manifest(storage.backups, result.backup)
    except NotFound:
        state_word = (
            "in progress" if now - catalog.started_at(result.backup) < catalog.INCOMPLETE_GRACE else "incomplete"
        )
        result.add("manifest", False, f"backup {result.backup!r} has no manifest: it is {state_word}")
    except BackupError as error:
        result.add("manifest", False, str(error))
    else:
        why = f"; {manifest.reason_json()['text']}" if manifest.safety else ""
        result.add("manifest", True, f"{manifest.format} v{manifest.format_version}, {manifest.entities} entities{why}")
        _check_chain(storage, manifest, storage.settings.required_fields_by_table.get(table_key(table), []), result)
        _check_live_count(storage, manifest, result)
    if state is None:
        result.add("recovery point", False, problem or f"table {table!r} has no complete backup")
    else:
        age = _hours_between(state.known_at, now)
        since = f" (restored in place at {state.known_at:%Y-%m-%d %H:%M}Z)" if state.restore else ""
        result.add(
            "recovery point",
            age <= max_age,
            f"latest, {state.backup}{since}, is {age:.1f} hours old (limit {max_age:g})",
        )
    return result


def _report_unfinished(attempts: list[tuple[str, bool]], now: datetime, result: Verification) -> bool:
    """Attempts without a manifest: younger than a day, in progress; older, debris (a warning).
    Returns whether any is in progress."""
    running, debris = Findings(), Findings()
    for backup_id, complete in attempts:
        if complete:
            continue
        started = catalog.started_at(backup_id)
        hours = _hours_between(started, now)
        if now - started < catalog.INCOMPLETE_GRACE:
            running.add(f"{backup_id} started {hours:.1f} hours ago and has no manifest yet")
        else:
            debris.add(f"{backup_id} started {hours:.1f} hours ago and never finished")
    if running:
        result.add("in progress", True, running.describe())
    if debris:
        detail = f"{debris.total} attempt(s) without a manifest: {debris.describe()}; `prune` deletes them"
        result.add("debris", True, detail, warning=True)
    return bool(running)


def verify_all(storage: Storage, *, now: datetime | None = None) -> list[Verification]:
    """The newest complete backup of every table that has backups, plus every scheduled table (so a
    table that was never backed up fails)."""
    # One verification per table, however its name is spelled; the setting's spelling wins.
    tables = {table_key(table): table for table in catalog.backed_up_tables(storage.backups)}
    tables |= {table_key(table): table for table in storage.settings.scheduled_tables or []}
    return [verify_backup(storage, tables[key], now=now) for key in sorted(tables)]


def verify_and_record(
    storage: Storage,
    table: str | None = None,
    backup: str | None = None,
    *,
    every_table: bool = False,
    now: datetime | None = None,
) -> list[Verification]:
    """Verify, then record each outcome (a row, a log record, a metric) and notify on failure."""
    outcomes = verify_all(storage, now=now) if every_table else [verify_backup(storage, table, backup, now=now)]
    for outcome in outcomes:
        results.save_row(
            storage,
            storage.settings.verifications_table,
            table_key(outcome.table),
            outcome.verified_at,
            {"ok": outcome.ok, "backup": outcome.backup or "", "checks": outcome.as_json()["checks"]},
        )
        context = {"table": outcome.table, "backup": outcome.backup, "ok": outcome.ok}
        for warning in outcome.warnings:
            log.warning("verification warning: table=%s %s", outcome.table, warning, extra=context)
        if outcome.ok:
            log.info("verification passed: table=%s backup=%s", outcome.table, outcome.backup, extra=context)
        else:
            log.error("verification failed: %s", outcome.summary(), extra=context)
        telemetry.record_outcome("verify", outcome.table, outcome.ok)
    failed = [outcome for outcome in outcomes if not outcome.ok]
    if failed:
        results.notify(
            storage.settings.notify_webhook_url,
            "Backup verification FAILED: " + " | ".join(outcome.summary() for outcome in failed),
            {"ok": False, "results": [outcome.as_json() for outcome in outcomes]},
        )
    return outcomes
