"""The protection status of every table (BACKUP_TABLES plus any table with backups), or of the tables
named: the backup a restore of `latest` would use (tablebackup.repository.catalog: never a safety
backup; after a mirror restore in place, the backup restored) and that backup's own verification,
attempts under way and failures, drills, an in-place restore since the newest backup, retention, the
90-day trend, and a verdict with its reason. One JSON-ready document."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import AzureError

from tablebackup.core.clients import Storage
from tablebackup.core.errors import BackupError, StorageUnavailable
from tablebackup.core.names import table_key, validate_table_name
from tablebackup.repository import catalog
from tablebackup.status import records
from tablebackup.status.records import Point, iso
from tablebackup.status.verdicts import (
    AT_RISK,
    DRILL_MAX_AGE_DAYS,
    PROTECTED,
    RPO_WARNING,
    RTO_WARNING,
    UNPROTECTED,
    Finding,
    ago,
    thresholds,
    worst,
)

log = logging.getLogger(__name__)

TREND_DAYS = 90  # the trend: the newest complete backup of each UTC day in this window
FAILURE_DAYS = 30  # failed runs and work items reported from this window
DRILL_HISTORY = 12  # drills of each kind shown against the RTO
OLDEST_PROBES = 3  # manifests read to find the oldest restorable backup
NEWEST_PROBES = 5  # newest manifests tried, when the newest are refused, to find the newest usable backup
CHAIN_READS = 40  # manifests read beyond the trend to follow the newest backup's chain
WORKERS = 8  # tables read at once


def tables_to_report(storage: Storage, backed_up: dict[str, set[str]], tables: list[str] | None = None) -> list[str]:
    """The tables named, else the scheduled ones (every table in the account with BACKUP_TABLES=*)
    plus every table that has backups; one row per table whatever the spellings (names are
    case-insensitive), under the name as given or configured."""
    if tables:
        named = [validate_table_name(table) for table in tables]
        return list({table_key(table): table for table in reversed(named)}.values())[::-1]
    scheduled = storage.settings.scheduled_tables
    if scheduled is None:
        try:
            scheduled = [table.name for table in storage.source_tables.list_tables()]
        except AzureError as error:
            raise StorageUnavailable(f"listing the account's tables failed: {str(error).splitlines()[0]}") from error
    by_key = {key: key for key in backed_up}
    by_key.update({table_key(table): table for table in scheduled})
    return sorted(by_key.values(), key=table_key)


def account_status(storage: Storage, tables: list[str] | None = None, now: datetime | None = None) -> dict:
    """The status document; `now` is the clock every age is measured against."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    settings = storage.settings
    backed_up = records.account_spellings(storage)
    names = tables_to_report(storage, backed_up, tables)
    runs = records.run_record(storage, now - timedelta(days=FAILURE_DAYS))

    def one(table: str) -> dict:
        key = table_key(table)
        return table_status(storage, table, now, runs.get(key, []), backed_up.get(key, set()))

    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="status") as pool:
        rows = list(pool.map(one, names))
    counts = {verdict: sum(row["verdict"] == verdict for row in rows) for verdict in (PROTECTED, AT_RISK, UNPROTECTED)}
    overall = _overall(rows, counts)
    return {
        "ok": overall.verdict == PROTECTED,
        "verdict": overall.verdict,
        "reason": overall.reason,
        "generated_at": iso(now),
        "account": storage.account,
        "container": settings.backup_container,
        "counts": counts,
        "thresholds": thresholds(settings.backup_max_age_hours, settings.rto_minutes),
        "tables": rows,
    }


def _overall(rows: list[dict], counts: dict) -> Finding:
    if not rows:
        return Finding(UNPROTECTED, "no table is scheduled or backed up: set BACKUP_TABLES")
    verdict = worst([row["verdict"] for row in rows])
    if verdict == PROTECTED:
        return Finding(PROTECTED, f"all {len(rows)} table(s) protected")
    first = next(row for row in rows if row["verdict"] == verdict)
    return Finding(
        verdict,
        f"{counts[UNPROTECTED]} unprotected, {counts[AT_RISK]} at risk, {counts[PROTECTED]} protected "
        f"of {len(rows)} table(s); {first['table']}: {first['reason']}",
    )


def _trend_ids(complete: list[str], now: datetime) -> list[str]:
    """The newest complete backup of each UTC day of the trend window (newest first), and the newest
    backup even when it is older than the window."""
    start = now - timedelta(days=TREND_DAYS)
    daily: dict = {}
    for backup_id in complete:  # newest first
        at = catalog.started_at(backup_id)
        if at < start:
            break
        daily.setdefault(at.date(), backup_id)
    chosen = list(daily.values())
    if complete and complete[0] not in chosen:
        chosen.insert(0, complete[0])
    return chosen


def _chain(
    storage: Storage, newest: Point, known: dict[str, Point], complete: set[str]
) -> tuple[list[str], str | None]:
    """The newest backup's chain (its full backup first) and what breaks it, if anything."""
    links, reads = [newest], 0
    while links[-1].kind == "incremental":
        parent = links[-1].parent
        if not parent or parent not in complete:
            return [link.backup for link in reversed(links)], f"its parent {parent!r} is missing"
        if parent not in known:
            if reads >= CHAIN_READS:
                return [link.backup for link in reversed(links)], None  # longer than we follow: not judged
            reads += 1
            point = records.read_point(storage, parent)
            if point is None:
                return [link.backup for link in reversed(links)], f"its parent {parent!r} is missing"
            known[parent] = point
        links.append(known[parent])
    return [link.backup for link in reversed(links)], None


def _oldest_restorable(storage: Storage, complete: list[str], known: dict[str, Point]) -> Point | None:
    """The oldest complete backup that can be restored: a full one, or an incremental whose parent
    is still kept (the oldest backup's parent is never kept, so an oldest incremental is skipped)."""
    kept = set(complete)
    for backup_id in list(reversed(complete))[:OLDEST_PROBES]:
        point = known.get(backup_id) or records.read_point(storage, backup_id)
        if point is not None and (point.kind != "incremental" or point.parent in kept):
            return point
    return None


def _attempts(listing: records.Listing, runs: list[dict], newest: str | None, now: datetime):
    """Attempts under way, the newest attempt's failure (if it failed), and old debris."""
    under_way = {row["backup"]: row for row in runs if row.get("status") in records.UNDER_WAY and row.get("backup")}
    failed = {row["backup"]: row for row in runs if row.get("status") == "failed" and row.get("backup")}
    in_progress, newest_failure, debris = [], None, 0
    known = {backup_id for backup_id, _ in listing.attempts}
    candidates = [(backup_id, done) for backup_id, done in listing.attempts]
    # Items the run record knows of that wrote nothing yet (queued) or nothing at all (failed early).
    candidates += [(backup_id, False) for backup_id in {*under_way, *failed} if backup_id not in known]
    # By start time, not by id: a table's ids may spell its name in different cases.
    for backup_id, done in sorted(candidates, key=lambda item: catalog.started_at(item[0]), reverse=True):
        if done:
            continue
        started = catalog.started_at(backup_id)
        newer = newest is None or started > catalog.started_at(newest)
        recent = now - started < catalog.INCOMPLETE_GRACE  # as verify tells in progress from debris
        if backup_id in under_way or (backup_id not in failed and newer and recent):
            in_progress.append({"backup": backup_id, "started_at": iso(started)})
        elif newer and newest_failure is None:
            row = failed.get(backup_id)
            error = (row or {}).get("error") or "it has no manifest and nothing is working on it"
            newest_failure = {"backup": backup_id, "error": str(error).splitlines()[0][:300]}
        elif not newer:
            debris += 1
    return in_progress, newest_failure, debris


def _when(value) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    try:
        return datetime.fromisoformat(str(value)).astimezone(UTC)
    except ValueError:
        return None


def _verification(row: dict | None) -> dict | None:
    if row is None:
        return None
    checks = [check for check in row.get("checks") or [] if isinstance(check, dict)]
    return {
        "ok": bool(row.get("ok")),
        "backup": row.get("backup") or None,
        "at": iso(_when(row.get("at"))),
        "failed_checks": [check for check in checks if not check.get("ok")],
        "warnings": [
            check for check in checks if check.get("ok") and (check.get("warning") or check.get("level") == "warning")
        ],
    }


def _drill(row: dict) -> dict:
    checks = [check for check in row.get("checks") or [] if isinstance(check, dict)]
    return {
        "ok": bool(row.get("ok")),
        "kind": row.get("kind"),
        "backup": row.get("backup") or None,
        "at": iso(_when(row.get("at"))),
        "restore_seconds": row.get("restore_seconds"),
        "failed_checks": [check for check in checks if not check.get("ok")],
    }


def _growth(points: list[Point]) -> dict:
    """Growth over the trend: per day, from the oldest to the newest point."""
    if len(points) < 2:
        return {"entities_per_day": None, "bytes_per_day": None, "entities_percent": None}
    first, last = points[0], points[-1]
    days = max((last.started_at - first.started_at).total_seconds() / 86400, 1 / 24)
    return {
        "entities_per_day": round((last.entities - first.entities) / days, 1),
        "bytes_per_day": round((last.bytes - first.bytes) / days, 1),
        "entities_percent": round(100 * (last.entities - first.entities) / first.entities, 1)
        if first.entities
        else None,
        "days": round(days, 1),
    }


def table_status(storage: Storage, table: str, now: datetime, runs: list[dict], spellings: set[str]) -> dict:
    """One table's row: what it has, and its verdict. `runs`: its rows of the run record;
    `spellings`: the spellings its backup ids use."""
    settings = storage.settings
    listing = records.list_table(storage, table, spellings)
    complete = listing.complete
    # What a restore of `latest` would use, which the verdict rests on, always from its manifest
    # (newer refused manifests are passed over and reported); the trend from the listing's metadata
    # where the manifests carry it.
    state, problem, refused = None, None, []
    try:
        state = catalog.newest_state(storage.backups, table, skip_refused=True, max_refused=NEWEST_PROBES)
        refused = state.refused
    except BackupError as error:  # nothing usable, or the restore record's backup is refused or gone
        problem, refused = str(error), list(getattr(error, "refused", []))
    newest = records.point_of(state.manifest) if state else None
    complete = [backup_id for backup_id in complete if backup_id not in refused]
    known = {backup_id: point for backup_id, point in listing.points.items() if backup_id not in refused}
    if newest is not None:
        known[newest.backup] = newest
    trend_ids = _trend_ids(complete, now)
    for backup_id in trend_ids:
        if backup_id not in known:
            point = records.read_point(storage, backup_id)
            if point is not None:
                known[backup_id] = point
    chain, broken = _chain(storage, newest, known, set(complete)) if newest else ([], None)
    oldest = _oldest_restorable(storage, complete, known) if complete else None
    in_progress, newest_failure, debris = _attempts(listing, runs, complete[0] if complete else None, now)
    # The verification of the very backup `latest` uses: verifying an older one hides nothing.
    verification = _verification(records.last_verification(storage, table, newest.backup)) if newest else None
    restored = _restored_in_place(storage, table, state)
    drills = {
        kind: [_drill(row) for row in records.recent_drills(storage, table, kind, DRILL_HISTORY)]
        for kind in ("entity", "full")
    }
    start = now - timedelta(days=TREND_DAYS)
    trend = sorted(
        (known[b] for b in trend_ids if b in known and known[b].started_at >= start), key=lambda p: p.started_at
    )
    failures = [
        {
            "run": row["run"],
            "item": row["RowKey"],
            "backup": row.get("backup"),
            "at": iso(_when(row.get("updated_at"))),
            "error": str(row.get("error") or "")[:300],
        }
        for row in runs
        if row.get("status") == "failed"
    ]
    audit_newest = records.newest_audit_event(storage, table, now)
    # The recovery point: when the state `latest` restores was last whole (a restore's end, or a backup's).
    age_hours = round((now - state.known_at).total_seconds() / 3600, 2) if state else None
    newest_json = None
    if newest is not None:
        newest_json = {
            **newest.as_json(),
            "age_hours": age_hours,
            "reason_text": state.manifest.reason_json()["text"],
            "latest": state.as_json(),
        }
    row = {
        "table": table,
        "newest_backup": newest_json,
        "latest_problem": problem,
        "restored_in_place": restored,
        "refused_backups": refused,
        "in_progress": in_progress,
        "newest_attempt_failed": newest_failure,
        "failures": sorted(failures, key=lambda failure: failure["at"] or "", reverse=True),
        "verification": verification,
        "drills": {kind: (rows[0] if rows else None) for kind, rows in drills.items()},
        "drill_history": sorted((d for rows in drills.values() for d in rows), key=lambda d: d["at"] or ""),
        "retention": {
            "complete_backups": len(complete),
            "oldest_restorable": oldest.as_json() if oldest else None,
            "incomplete_debris": debris,
            "newest_chain": chain,
            "incrementals_in_trend": sum(point.kind == "incremental" for point in trend),
        },
        "trend": {"days": TREND_DAYS, "points": [point.as_json() for point in trend], "growth": _growth(trend)},
        "legacy_backups": {
            "count": len(listing.legacy),
            "oldest": iso(listing.legacy[0]) if listing.legacy else None,
            "newest": iso(listing.legacy[-1]) if listing.legacy else None,
        },
        "erasures": records.erasure_count(storage, table),
        "audit": {"newest_event": iso(audit_newest), "lookback_days": records.AUDIT_LOOKBACK_DAYS},
    }
    findings = _findings(row, now, settings.backup_max_age_hours, settings.rto_minutes, broken)
    verdict = worst([finding.verdict for finding in findings]) if findings else PROTECTED
    reasons = [finding.reason for finding in findings if finding.verdict == verdict]
    if verdict == PROTECTED:
        reasons = [_all_good(row, now, settings.backup_max_age_hours)]
    log.info("status: table=%s verdict=%s", table, verdict, extra={"table": table, "verdict": verdict})
    return {"table": table, "verdict": verdict, "reason": reasons[0], "reasons": [f.reason for f in findings], **row}


def _restored_in_place(storage: Storage, table: str, state) -> dict | None:
    """The newest restore into the table itself if no regular backup has started since it completed:
    the table then holds a state no backup took (a backup now captures it)."""
    try:
        record = catalog.newest_restore(storage.backups, table)
    except BackupError as error:  # an unreadable record: `latest` refuses it too, and says so
        log.warning("status of %s: %s", table, error, extra={"table": table})
        return None
    if record is None:
        return None
    if state is not None and state.restore is None and state.since >= record.restored_at:
        return None
    return record.as_json()


def _all_good(row: dict, now: datetime, rpo: float) -> str:
    newest = row["newest_backup"]
    text = f"newest backup {newest['age_hours']:.1f} h old (RPO {rpo:g} h), verified, drills passed"
    if row["in_progress"]:
        text += f"; a backup is in progress since {row['in_progress'][0]['started_at']}"
    return text


def _ago(now: datetime, when: datetime | None) -> str:
    return ago(now, when) if when else "undated"


def _short(text, limit: int = 140) -> str:
    """A check's detail cut to fit a one-line reason (the whole detail is in the row's checks)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _findings(row: dict, now: datetime, rpo: float, rto_minutes: float, broken: str | None) -> list[Finding]:
    """Every rule that fires, worst first."""
    found: list[Finding] = []
    newest = row["newest_backup"]
    refused = row["refused_backups"]
    if newest is None:
        extra = "; the first backup is in progress" if row["in_progress"] else ""
        if refused:
            extra = f"; the manifest of {refused[0]} is refused (run verify)" + extra
        elif row["latest_problem"] and "has no complete backup" not in row["latest_problem"]:
            extra = f": {_short(row['latest_problem'])}" + extra
        elif row["latest_problem"] and "safety backup" in row["latest_problem"]:
            extra = " other than safety backups, which `latest` never restores" + extra
        found.append(Finding(UNPROTECTED, f"no complete backup{extra}"))
    elif newest["age_hours"] > rpo:
        found.append(
            Finding(
                UNPROTECTED,
                f"the newest complete backup is {newest['age_hours']:.1f} h old, beyond the RPO of {rpo:g} h",
            )
        )
    if broken:
        found.append(Finding(UNPROTECTED, f"the newest backup {newest['backup']} cannot be restored: {broken}"))
    verification = row["verification"]
    outcomes = [("verification", verification)] + [(f"{kind} drill", drill) for kind, drill in row["drills"].items()]
    for label, outcome in outcomes:
        if outcome and not outcome["ok"]:
            first = (outcome["failed_checks"] or [{"name": label, "detail": "failed"}])[0]
            when = _ago(now, _when(outcome["at"]))
            detail = f"{first.get('name')}: {_short(first.get('detail'))}"
            found.append(Finding(UNPROTECTED, f"the last {label} ({when}) failed: {detail}"))
    if newest is not None and rpo * RPO_WARNING < newest["age_hours"] <= rpo:
        found.append(
            Finding(
                AT_RISK,
                f"the newest complete backup is {newest['age_hours']:.1f} h old, "
                f"over {RPO_WARNING:.0%} of the RPO of {rpo:g} h",
            )
        )
    if refused and newest is not None:
        found.append(
            Finding(
                AT_RISK,
                f"the manifest of the newest backup {refused[0]} is refused (run verify); "
                f"the newest usable one is {newest['backup']}",
            )
        )
    if row["newest_attempt_failed"]:
        failure = row["newest_attempt_failed"]
        found.append(
            Finding(AT_RISK, f"the newest backup attempt {failure['backup']} failed: {_short(failure['error'])}")
        )
    if row["restored_in_place"]:
        restored = row["restored_in_place"]
        scope = "" if restored["whole"] else f" (mode {restored['mode']}{', filtered' if restored['filter'] else ''})"
        found.append(
            Finding(
                AT_RISK,
                f"restored in place from {restored['backup']}{scope} {_ago(now, _when(restored['restored_at']))}, "
                "after its newest backup: take a backup",
            )
        )
    if verification is None and newest is not None:
        found.append(Finding(AT_RISK, f"no verification recorded of {newest['backup']}, the backup `latest` restores"))
    if verification is not None:
        when = _when(verification["at"])
        if verification["ok"] and (when is None or (now - when).total_seconds() > rpo * 3600):
            found.append(
                Finding(
                    AT_RISK,
                    f"no verification within the RPO of {rpo:g} h (last {_ago(now, when)})",
                )
            )
        if verification["warnings"]:
            warning = verification["warnings"][0]
            found.append(
                Finding(AT_RISK, f"the last verification warns: {warning.get('name')}: {_short(warning.get('detail'))}")
            )
    latest = max((d for d in row["drills"].values() if d), key=lambda d: d["at"] or "", default=None)
    if latest is None:
        found.append(Finding(AT_RISK, "no drill recorded"))
    else:
        when = _when(latest["at"])
        if when is None or now - when > timedelta(days=DRILL_MAX_AGE_DAYS):
            found.append(Finding(AT_RISK, f"no drill in {DRILL_MAX_AGE_DAYS} days (last {_ago(now, when)})"))
        seconds = latest["restore_seconds"]
        if latest["ok"] and isinstance(seconds, int | float) and seconds > rto_minutes * 60 * RTO_WARNING:
            found.append(
                Finding(
                    AT_RISK,
                    f"the last drill restored in {seconds / 60:.1f} min, "
                    f"over {RTO_WARNING:.0%} of the RTO of {rto_minutes:g} min",
                )
            )
    order = {UNPROTECTED: 0, AT_RISK: 1}
    return sorted(found, key=lambda finding: order[finding.verdict])
