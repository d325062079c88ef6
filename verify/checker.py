"""Verify a backup: one streaming pass over its data blob checks the checksum, every line and the
count, then the live table, the required fields and the age against the RPO."""

from __future__ import annotations

import gzip
import logging
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from azure.core.exceptions import AzureError

from tablebackup import catalog, erasures, telemetry
from tablebackup.backupformat import DataReader, Manifest
from tablebackup.chain import chain_of
from tablebackup.clients import Storage
from tablebackup.entities import decode_line
from tablebackup.errors import BackupError, InvalidInput, NotFound
from tablebackup.names import validate_backup_id, validate_table_name
from tablebackup.tablequery import iter_pages
from verify import results

log = logging.getLogger(__name__)

# Lines reported by name when many are bad; the count covers the rest.
_MAX_REPORTED = 5


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def as_json(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class Verification:
    table: str
    backup: str | None
    checks: list[Check] = field(default_factory=list)
    verified_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, ok, detail))

    def as_json(self) -> dict:
        return {
            "ok": self.ok,
            "backup": self.backup,
            "table": self.table,
            "checks": [check.as_json() for check in self.checks],
        }

    def summary(self) -> str:
        failed = [f"{c.name}: {c.detail}" for c in self.checks if not c.ok]
        verdict = "passed" if self.ok else "FAILED (" + "; ".join(failed) + ")"
        return f"verification of {self.backup or self.table} {verdict}"


def _hours_since(instant: datetime) -> float:
    return (datetime.now(UTC) - instant).total_seconds() / 3600


@dataclass
class Findings:
    """A count of problems and the first few of them: a typo in REQUIRED_FIELDS flags every entity,
    so memory must not grow with the table."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, finding: str) -> None:
        self.count += 1
        if len(self.examples) < _MAX_REPORTED:
            self.examples.append(finding)

    def merge(self, other: Findings) -> None:
        self.count += other.count
        self.examples += other.examples[: _MAX_REPORTED - len(self.examples)]

    def describe(self, label: str) -> str:
        return f"{self.count} {label}: " + "; ".join(self.examples)


@dataclass
class _Scan:
    """What one pass over one blob found."""

    label: str
    lines: int = 0
    bad: Findings = field(default_factory=Findings)
    missing_fields: Findings = field(default_factory=Findings)


def _scan(storage: Storage, link: Manifest, blob: str, expected: tuple[int, str], required: list[str]) -> tuple:
    reader = DataReader(storage.backups, link, blob)
    scan = _Scan(label=blob)
    try:
        for number, line in enumerate(reader.lines(), start=1):
            scan.lines += 1
            try:
                entity = decode_line(line)
            except InvalidInput as error:
                scan.bad.add(f"{blob} line {number}: {error}")
                continue
            for name in required:
                if entity.get(name) in (None, ""):
                    key = f"({entity['PartitionKey']!r}, {entity['RowKey']!r})"
                    scan.missing_fields.add(f"{blob} line {number} {key}: {name}")
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        scan.bad.add(f"{blob} is not a complete gzip stream after {scan.lines} lines: {error}")
    except BackupError as error:
        scan.bad.add(str(error))
    mismatch = None
    if (reader.bytes, reader.sha256) != expected:
        mismatch = (
            f"{blob}: {reader.bytes} bytes, SHA-256 {reader.sha256}; "
            f"the manifest says {expected[0]} bytes, SHA-256 {expected[1]}"
        )
    return scan, mismatch


def _check_chain(storage: Storage, manifest: Manifest, required: list[str], result: Verification) -> None:
    """Every blob of the backup, and of every backup an incremental builds on, in one pass each."""
    try:
        links = chain_of(storage.backups, manifest)
    except BackupError as error:
        result.add("chain", False, str(error))
        return
    if len(links) > 1:
        result.add(
            "chain",
            True,
            f"a full backup and {len(links) - 1} incremental(s): " + " <- ".join(link.backup for link in links),
        )
    mismatches, miscounts, blobs = [], [], 0
    bad, missing_fields = Findings(), Findings()
    data_blobs = set()
    for link in links:
        data_blobs |= {part.blob for part in link.data_parts()}
        if sum(part.lines for part in link.data_parts()) != link.entities:
            miscounts.append(f"{link.backup}: its parts hold a different number of entities than {link.entities}")
        for info in link.blobs():
            blobs += 1
            is_data = info.blob in data_blobs
            scan, mismatch = _scan(storage, link, info.blob, (info.bytes, info.sha256), required if is_data else [])
            mismatches += [mismatch] if mismatch else []
            bad.merge(scan.bad)
            missing_fields.merge(scan.missing_fields)
            if scan.lines != info.lines:
                miscounts.append(f"{info.blob}: {scan.lines} lines, the manifest says {info.lines}")
    result.add(
        "checksum",
        not mismatches,
        f"{manifest.bytes} bytes, SHA-256 {manifest.sha256}" + (f" ({blobs} blobs match)" if blobs > 1 else "")
        if not mismatches
        else "; ".join(mismatches),
    )
    result.add(
        "entities decode",
        not bad.count,
        "every line is an entity with valid keys and types" if not bad.count else bad.describe("bad"),
    )
    result.add(
        "entity count",
        not miscounts,
        f"{manifest.entities} lines" if not miscounts else "; ".join(miscounts),
    )
    if required:
        result.add(
            "required fields",
            not missing_fields.count,
            f"{', '.join(required)} present and non-empty on every entity"
            if not missing_fields.count
            else missing_fields.describe("missing or empty"),
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


def verify_backup(storage: Storage, table: str, backup: str | None = None) -> Verification:
    """Verify the named backup, or the newest backup attempt of the table."""
    with telemetry.operation("verify", table):
        return _verify(storage, table, backup)


def _verify(storage: Storage, table: str, backup: str | None) -> Verification:
    validate_table_name(table)
    if backup is not None:
        validate_backup_id(backup)
        if not backup.startswith(f"{table}-"):
            raise InvalidInput(f"backup {backup!r} is not a backup of table {table!r}")
    max_age = storage.settings.backup_max_age_hours
    attempts = catalog.backup_attempts(storage.backups, table)
    result = Verification(table=table, backup=backup)
    if backup is None:
        if not attempts:
            result.add("manifest", False, f"table {table!r} has no backup at all")
            result.add("recovery point", False, f"no backup within {max_age:g} hours")
            return result
        result.backup = attempts[0][0]
    manifest = None
    try:
        manifest = catalog.read_manifest(storage.backups, result.backup)
    except NotFound:
        result.add("manifest", False, f"backup {result.backup!r} has no manifest: it is incomplete")
    except BackupError as error:
        result.add("manifest", False, str(error))
    else:
        result.add("manifest", True, f"{manifest.format} v{manifest.format_version}, {manifest.entities} entities")
        _check_chain(storage, manifest, storage.settings.required_fields_by_table.get(table, []), result)
        _check_live_count(storage, manifest, result)
    newest = next((backup_id for backup_id, complete in attempts if complete), None)
    if newest is None:
        result.add("recovery point", False, f"table {table!r} has no complete backup")
    else:
        newest_manifest = manifest if manifest and manifest.backup == newest else None
        age = _hours_since((newest_manifest or catalog.read_manifest(storage.backups, newest)).finished_at)
        result.add(
            "recovery point",
            age <= max_age,
            f"the newest complete backup {newest} is {age:.1f} hours old (limit {max_age:g})",
        )
    return result


def verify_all(storage: Storage) -> list[Verification]:
    """The newest backup of every table that has backups, plus every scheduled table (so a table
    that was never backed up fails)."""
    tables = set(catalog.backed_up_tables(storage.backups))
    tables |= set(storage.settings.scheduled_tables or [])
    return [verify_backup(storage, table) for table in sorted(tables)]


def verify_and_record(
    storage: Storage, table: str | None = None, backup: str | None = None, *, every_table: bool = False
) -> list[Verification]:
    """Verify, then record each outcome (a row, a log record, a metric) and notify on failure."""
    outcomes = verify_all(storage) if every_table else [verify_backup(storage, table, backup)]
    for outcome in outcomes:
        results.save_row(
            storage,
            storage.settings.verifications_table,
            outcome.table,
            outcome.verified_at,
            {"ok": outcome.ok, "backup": outcome.backup or "", "checks": outcome.as_json()["checks"]},
        )
        context = {"table": outcome.table, "backup": outcome.backup, "ok": outcome.ok}
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
