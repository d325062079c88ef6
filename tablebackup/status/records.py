"""Reading what the product already records, for the status: the backup container's listing, a few
manifests, the newest rows of the verification and drill tables, the run record, the erasure
register and the audit table. Every read is paged and capped, so the number of requests per table
has a fixed bound whatever the table's size."""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.data.tables import TableClient

from tablebackup.audit.messages import DATA_OPERATIONS
from tablebackup.audit.queries import table_clause, table_matches
from tablebackup.core.clients import Storage
from tablebackup.core.errors import DamagedBackup, NotFound, StorageUnavailable
from tablebackup.core.names import BACKUP_ID_RE, table_key
from tablebackup.repository import catalog, erasures
from tablebackup.repository.backupformat import MANIFEST_BLOB
from tablebackup.storage.tablequery import odata_string

log = logging.getLogger(__name__)

# The old daily function's backups: `<table>-2025-01-13T02-00-00-000Z.json` at the container's root.
_LEGACY_RE = re.compile(
    r"^(?P<table>[A-Za-z][A-Za-z0-9]{2,62})-(?P<stamp>\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z)\.json$"
)
# Non-key filters may answer with empty pages and a continuation; a few pages are enough to find a row.
_MAX_EMPTY_PAGES = 3
# The run record's statuses of an item still under way.
UNDER_WAY = ("queued", "running", "retrying")


@dataclass
class Listing:
    """One table's blobs in the backup container: each attempt (complete or not), newest first,
    and the legacy backups' times."""

    attempts: list[tuple[str, bool]] = field(default_factory=list)
    legacy: list[datetime] = field(default_factory=list)
    # Complete backups' summaries from their manifest blobs' metadata (manifests written since it
    # was added carry it); the others are read when needed.
    points: dict[str, Point] = field(default_factory=dict)

    @property
    def complete(self) -> list[str]:
        return [backup_id for backup_id, done in self.attempts if done]


def account_spellings(storage: Storage) -> dict[str, set[str]]:
    """Every table with backups (or legacy backups), by canonical name, with the spellings its
    backup ids use: one walk of the container's top level (one entry per backup), for all tables."""
    found: dict[str, set[str]] = {}
    try:
        for item in storage.backups.walk_blobs(delimiter="/"):
            match = BACKUP_ID_RE.match(item.name.rstrip("/")) or _LEGACY_RE.match(item.name)
            if match:
                found.setdefault(table_key(match["table"]), set()).add(match["table"])
    except ResourceNotFoundError:
        return {}
    except AzureError as error:
        raise StorageUnavailable(f"listing the backup container failed: {str(error).splitlines()[0]}") from error
    return found


def list_table(storage: Storage, table: str, spellings: set[str]) -> Listing:
    """One listing of the `<spelling>-` prefix of each spelling the table's backups use, 5,000 blobs
    a page."""
    seen: dict[str, bool] = {}
    legacy, points = [], {}
    try:
        # Table names are case-insensitive: new ids use the lowercase name, older ones any spelling.
        for spelling in dict.fromkeys([table, *sorted(spellings)]):
            for blob in storage.backups.list_blobs(name_starts_with=f"{spelling}-", include=["metadata"]):
                backup_id, _, leaf = blob.name.partition("/")
                match = BACKUP_ID_RE.match(backup_id)
                if match and match["table"] == spelling:
                    seen[backup_id] = seen.get(backup_id, False) or leaf == MANIFEST_BLOB
                    point = Point.from_metadata(backup_id, blob.metadata) if leaf == MANIFEST_BLOB else None
                    if point is not None:
                        points[backup_id] = point
                    continue
                old = _LEGACY_RE.match(blob.name)
                if old and old["table"] == spelling:
                    legacy.append(datetime.strptime(old["stamp"], "%Y-%m-%dT%H-%M-%S-%fZ").replace(tzinfo=UTC))
    except ResourceNotFoundError:
        return Listing()
    except AzureError as error:
        raise StorageUnavailable(f"listing the backups of {table!r} failed: {str(error).splitlines()[0]}") from error
    newest_first = sorted(seen.items(), key=lambda item: (BACKUP_ID_RE.match(item[0])["stamp"], item[0]), reverse=True)
    return Listing(attempts=newest_first, legacy=sorted(legacy), points=points)


@dataclass(frozen=True)
class Point:
    """What the status keeps of one manifest (not its key samples: memory stays small)."""

    backup: str
    kind: str
    parent: str | None
    started_at: datetime
    finished_at: datetime
    entities: int  # the table's size at this backup (an incremental's key index counts it)
    changed: int  # the entities this backup holds
    bytes: int
    reason: str | None = None  # why it was taken (BackupReason.kind); None: not recorded (a regular backup)

    @classmethod
    def from_metadata(cls, backup_id: str, metadata: dict | None) -> Point | None:
        """The summary a manifest blob carries as metadata (Manifest.listing_metadata), if whole."""
        try:
            return cls(
                backup=backup_id,
                kind=metadata["kind"],
                parent=metadata.get("parent"),
                started_at=datetime.fromisoformat(metadata["startedat"]).astimezone(UTC),
                finished_at=datetime.fromisoformat(metadata["finishedat"]).astimezone(UTC),
                entities=int(metadata["tableentities"]),
                changed=int(metadata["entities"]),
                bytes=int(metadata["bytes"]),
                reason=metadata.get("reason"),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def as_json(self) -> dict:
        return {
            "backup": self.backup,
            "kind": self.kind,
            "parent": self.parent,
            "taken_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "entities": self.entities,
            "changed_entities": self.changed,
            "bytes": self.bytes,
            "reason": self.reason or "unrecorded",
        }


def read_point(storage: Storage, backup_id: str) -> Point | None:
    """The manifest's summary; None if it vanished since the listing (pruned meanwhile)."""
    try:
        manifest = catalog.read_manifest(storage.backups, backup_id)
    except NotFound:
        return None
    except DamagedBackup as error:  # no restorable point; verify reports why
        log.warning("status skips backup %s: %s", backup_id, error, extra={"backup": backup_id})
        return None
    return point_of(manifest)


def point_of(manifest) -> Point:
    table_size = manifest.keys.lines if manifest.kind == "incremental" and manifest.keys else manifest.entities
    return Point(
        backup=manifest.backup,
        kind=manifest.kind,
        parent=manifest.parent,
        started_at=manifest.started_at.astimezone(UTC),
        finished_at=manifest.finished_at.astimezone(UTC),
        entities=table_size,
        changed=manifest.entities,
        bytes=manifest.bytes,
        reason=manifest.reason.kind if manifest.reason else None,
    )


def _table_missing(error: AzureError) -> bool:
    return isinstance(error, ResourceNotFoundError) or "TableNotFound" in str(error)


def _parsed(row: dict) -> dict:
    """A history row with its JSON-text fields (checks) decoded."""
    parsed = {}
    for name, value in row.items():
        if isinstance(value, str) and value[:1] in "[{":
            with contextlib.suppress(orjson.JSONDecodeError):
                value = orjson.loads(value)
        parsed[name] = value
    return parsed


def newest_rows(client: TableClient, query: str, count: int, select: list[str] | None = None) -> list[dict]:
    """The first `count` rows in key order (history tables key their rows newest first), in as few
    requests as the service allows; [] if the table does not exist."""
    found: list[dict] = []
    try:
        pages = client.query_entities(query, results_per_page=count, select=select).by_page()
        for number, page in enumerate(pages, start=1):
            found += [_parsed(dict(row)) for row in page]
            if found or number >= _MAX_EMPTY_PAGES:
                break
    except AzureError as error:
        if _table_missing(error):
            return []
        raise StorageUnavailable(f"reading table {client.table_name!r} failed: {str(error).splitlines()[0]}") from error
    return found[:count]


def _table_partitions(table: str) -> list[str]:
    """Rows keyed by the table: under its canonical (lowercase) name, or as typed by older versions.
    One query each: a point range per PartitionKey, where an `or` of them may scan the table."""
    return [f"PartitionKey eq {odata_string(name)}" for name in dict.fromkeys([table_key(table), table])]


def _newest_of(client: TableClient, table: str, extra: str, count: int) -> list[dict]:
    """The newest `count` rows of the table's partitions (rows are keyed newest first)."""
    rows = [row for partition in _table_partitions(table) for row in newest_rows(client, partition + extra, count)]
    return sorted(rows, key=lambda row: row["RowKey"])[:count]


def last_verification(storage: Storage, table: str, backup: str | None = None) -> dict | None:
    """The table's newest verification row; with `backup`, the newest one of that backup."""
    client = storage.tables.get_table_client(storage.settings.verifications_table)
    extra = f" and backup eq {odata_string(backup)}" if backup else ""
    rows = _newest_of(client, table, extra, 1)
    return rows[0] if rows else None


def recent_drills(storage: Storage, table: str, kind: str, count: int) -> list[dict]:
    """The newest drills of one kind (entity or full), newest first."""
    client = storage.tables.get_table_client(storage.settings.drills_table)
    return _newest_of(client, table, f" and kind eq {odata_string(kind)}", count)


def run_record(storage: Storage, since: datetime) -> dict[str, list[dict]]:
    """Work items of the run record that failed or are under way, updated since `since`, by table
    (canonical name):
    one filtered query over the whole record, paged."""
    client = storage.tables.get_table_client(storage.settings.backup_runs_table)
    statuses = " or ".join(f"status eq {odata_string(status)}" for status in ("failed", *UNDER_WAY))
    query = f"updated_at ge {odata_string(since.astimezone(UTC).isoformat())} and ({statuses})"
    by_table: dict[str, list[dict]] = {}
    try:
        for row in client.query_entities(
            query, select=["PartitionKey", "RowKey", "table", "backup", "status", "error", "updated_at"]
        ):
            if row.get("table"):
                by_table.setdefault(table_key(row["table"]), []).append({**dict(row), "run": row["PartitionKey"]})
    except AzureError as error:
        if _table_missing(error):
            return {}
        raise StorageUnavailable(f"reading the backup run record failed: {str(error).splitlines()[0]}") from error
    return by_table


def erasure_count(storage: Storage, table: str) -> int:
    """Keys registered as erased for the table (tablebackup.repository.erasures)."""
    return erasures.count(storage, table)


# How far back the status looks for a table's audit events: today and yesterday (UTC).
AUDIT_LOOKBACK_DAYS = 2
_SECONDS_A_DAY = 86_400
# The application's own changes: the product's entries (RESTORE, ERASE, PRUNE, ...) are no reach.
_APPLICATION_CHANGES = "(" + " or ".join(f"operation eq {odata_string(op)}" for op in DATA_OPERATIONS) + ")"


# A probe reads at most this many pages of keys to pass other tables' entries in the spelling range.
_MAX_PROBE_PAGES = 5
_PROBE_PAGE_ROWS = 1000


def _first_entry_of(client: TableClient, query: str, table: str) -> str | None:
    """The RowKey of the first entry of `table` (any spelling) the query finds, reading at most
    _MAX_PROBE_PAGES pages; None if there is none (or other tables' entries fill those pages)."""
    try:
        pages = client.query_entities(query, results_per_page=_PROBE_PAGE_ROWS, select=["RowKey", "tableName"])
        for number, page in enumerate(pages.by_page(), start=1):
            for row in page:
                if table_matches(row, table):
                    return row["RowKey"]
            if number >= _MAX_PROBE_PAGES:
                break
    except AzureError as error:
        if _table_missing(error):
            return None
        raise StorageUnavailable(f"reading table {client.table_name!r} failed: {str(error).splitlines()[0]}") from error
    return None


def newest_audit_event(storage: Storage, table: str, now: datetime) -> datetime | None:
    """The time of the table's newest audited application change (INSERT, UPDATE, DELETE), sent under
    any spelling of its name, in the last AUDIT_LOOKBACK_DAYS UTC days, to the second: one probe per
    day, then a binary search on the RowKey's time prefix (17 probes at most). None if there is none."""
    client = storage.tables.get_table_client(storage.settings.audit_table)
    until = f"{now.astimezone(UTC):%Y%m%dT%H%M%S}~"  # nothing after the clock ("~" sorts after the fraction)
    for back in range(AUDIT_LOOKBACK_DAYS):
        day = (now.astimezone(UTC) - timedelta(days=back)).date()
        partition = (
            f"PartitionKey eq {odata_string('AUDIT_' + day.isoformat())} and {table_clause(table)}"
            f" and {_APPLICATION_CHANGES}"
        )

        def first_at_or_after(second: int, partition=partition, day=day) -> str | None:
            stamp = f"{day:%Y%m%d}T{second // 3600:02d}{second // 60 % 60:02d}{second % 60:02d}"
            window = f"RowKey ge {odata_string(stamp)} and RowKey lt {odata_string(until)}"
            return _first_entry_of(client, f"{partition} and {window}", table)

        newest = first_at_or_after(0)
        if newest is None:
            continue
        low, high = 0, _SECONDS_A_DAY - 1  # an entry exists at or after `low`
        while low < high:
            middle = (low + high + 1) // 2
            found = first_at_or_after(middle)
            if found is None:
                high = middle - 1
            else:
                low, newest = middle, found
        return datetime.strptime(newest[:15], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    return None


def iso(at: datetime | None) -> str | None:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z") if at else None
