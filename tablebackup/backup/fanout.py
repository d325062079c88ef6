"""Fan-out: a backup run planned as work items that Functions instances (or CLI threads) run in
parallel, one per table, or one per PartitionKey range for a large table.

Ranges come from the key samples the table's previous full backup recorded (PartitionKeys at even
intervals of its data), the way AzCopy 7.3's /PKRS split exports, but without guessing. A table
without samples (its first backup) is cut where probing its key space finds keys
(tablebackup.storage.keyspace): spread across the keys, not the data, for that one backup. A part is
written to a blob of its own, named by attempt so a retry never overwrites anything; the manifest,
written last by whoever finishes the last part, lists every part. Until then nothing is listed.
"""

from __future__ import annotations

import itertools
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import orjson
from azure.core.exceptions import AzureError

from tablebackup.core.clients import Storage
from tablebackup.core.entities import encode_line
from tablebackup.core.errors import BackupError, DamagedBackup, NotFound, StorageUnavailable
from tablebackup.core.settings import Settings
from tablebackup.repository import catalog
from tablebackup.repository.attempts import full_planned, record_full_planned
from tablebackup.repository.backupformat import (
    BackupReason,
    BlobInfo,
    DataBlobWriter,
    KeySampler,
    Manifest,
    attempt_leaf,
    new_backup_id,
    parts_digest,
    write_manifest,
)
from tablebackup.storage.keyspace import probe_cuts
from tablebackup.storage.tablequery import iter_pages, partition_range

log = logging.getLogger(__name__)

# A read stream only pays off with a page (1,000 entities) or more to read.
STREAMS_MIN_ENTITIES = 2_000


@dataclass(frozen=True)
class WorkItem:
    """One unit of a backup run: a whole table, or one PartitionKey range of it."""

    run: str
    table: str
    backup: str
    started_at: str
    part: int = 1
    parts: int = 1
    low: str | None = None  # PartitionKey ge low
    high: str | None = None  # PartitionKey lt high
    incremental: bool = False
    # Cut points at which this one item reads its table in parallel streams (READ_STREAMS).
    streams: list[str] | None = None
    # Why the backup is taken (BackupReason as JSON); a message queued before it was recorded has
    # none and came from the schedule.
    reason: dict | None = None

    def backup_reason(self) -> BackupReason:
        return BackupReason.model_validate(self.reason) if self.reason else BackupReason.scheduled()

    @property
    def key(self) -> str:
        return f"{self.table}~{self.part:04d}"

    def message(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_message(cls, body: str | bytes) -> WorkItem:
        return cls(**orjson.loads(body))


def split_points(samples: list[str], parts: int) -> list[str]:
    """Up to parts-1 increasing PartitionKeys that cut the samples into about equal runs. A single
    huge partition can't be cut: it stays in one part. No samples (a manifest written before they
    were recorded) means no cut: one part."""
    points: list[str] = []
    if not samples:
        return points
    for index in range(1, parts):
        candidate = samples[min(len(samples) - 1, index * len(samples) // parts)]
        if (not points or candidate > points[-1]) and candidate > samples[0]:
            points.append(candidate)
    return points


@dataclass(frozen=True)
class FullBackups:
    """What a table's plan needs from its backups: the newest full one with key samples to cut at
    (any full backup, a safety backup too), and the newest full one an incremental can build on
    (never a safety backup: tablebackup.repository.catalog.implicit_candidate)."""

    sampled: Manifest | None = None
    regular: Manifest | None = None


def _full_backups(storage: Storage, table: str) -> FullBackups:
    sampled = regular = None
    try:
        for backup_id in catalog.backup_ids(storage.backups, table):
            try:
                manifest = catalog.read_manifest(storage.backups, backup_id)
            except DamagedBackup as error:
                # Neither its key samples nor its data are to be trusted: an older one will do, and
                # an incremental never builds on it (the run takes a full backup instead).
                log.warning("planning the backup of %s: %s", table, error, extra={"table": table})
                continue
            if manifest.kind != "full":
                continue
            sampled = sampled or manifest
            if catalog.implicit_candidate(manifest):
                regular = manifest
                break
    except (NotFound, BackupError):
        pass
    return FullBackups(sampled=sampled, regular=regular)


# With BACKUP_MODE=incremental, a chain never grows older than this without a new full backup.
FULL_BACKUP_MAX_AGE = timedelta(days=7)


def full_backup_due(
    settings: Settings, newest_full: Manifest | None, now: datetime, planned_today: bool = False
) -> bool:
    """With BACKUP_MODE=incremental, whether this run takes a full backup of a table: when it has
    none yet, when it is FULL_BACKUP_DAY (UTC) and none of its full backups started that day, nor
    was planned by an earlier run that day and is still running (planned_today), so an hourly
    schedule takes one full that day, not 24; or when its newest one is older than a week (the full
    day's run failed or was missed). Otherwise an incremental."""
    if newest_full is None:
        return True
    if planned_today:
        return False  # still running, or it failed: tomorrow's runs plan the next one
    now = now.astimezone(UTC)
    started = newest_full.started_at
    started = (started if started.tzinfo else started.replace(tzinfo=UTC)).astimezone(UTC)
    if now - started > FULL_BACKUP_MAX_AGE:
        return True
    return now.strftime("%A").lower() == settings.full_backup_day and started.date() < now.date()


# Point queries a first backup may spend finding where to cut a table (tablebackup.storage.keyspace):
# about a second on Azure, against a backup that would otherwise run past the function timeout.
PROBE_QUERIES = 64


def _probed_bounds(storage: Storage, table: str, wanted: int) -> list[str]:
    """Cut points for a table without key samples, found by probing its key space: spread across
    the keys, not the data (no count to go by), so parts are uneven; the backup records samples,
    and the next full backup is cut evenly."""
    try:
        probe = probe_cuts(storage.source_tables.get_table_client(table), wanted, PROBE_QUERIES)
    except NotFound:
        return []  # the item itself reports the missing table, as for any other backup
    except BackupError as error:  # unreachable, or a probe the service refused
        # Splitting is an optimisation: the table is still backed up, in one item.
        log.warning("backing %s up in one item: probing its keys failed: %s", table, error, extra={"table": table})
        return []
    # A table that fits in one page took one query: not worth a line in the log.
    log.log(
        logging.DEBUG if probe.small else logging.INFO,
        "key space probed for a first split: table=%s queries=%d parts=%d",
        table,
        probe.queries,
        len(probe.cuts) + 1,
        extra={"table": table, "queries": probe.queries, "parts": len(probe.cuts) + 1},
    )
    return probe.cuts


def plan_run(
    storage: Storage,
    tables: list[str],
    *,
    incremental: bool = False,
    now: datetime | None = None,
    reason: BackupReason | None = None,
    weekly_full: bool = False,
) -> list[WorkItem]:
    """The work items of one run: incrementals and small tables are one item; a full backup of a
    table whose last full backup had FANOUT_THRESHOLD_ENTITIES or more is cut into ranges at its
    key samples; a table without samples (its first backup) is cut where probing its key space
    finds keys. `incremental`: incrementals where a table has a full backup to build on; with
    `weekly_full` (the timer), each table takes a full backup when one is due (full_backup_due).
    `reason` (default: the schedule) goes into every item, and from there into the manifest."""
    settings = storage.settings
    why = (reason or BackupReason.scheduled()).model_dump(exclude_none=True)
    now = now or datetime.now(UTC)
    run = uuid.uuid4().hex
    items: list[WorkItem] = []
    for table in tables:
        started = now.isoformat()
        backup_id = new_backup_id(table, now)
        fulls = _full_backups(storage, table)
        chained = incremental and fulls.regular is not None
        if chained and weekly_full:
            planned = full_planned(storage.backups, table, now.astimezone(UTC).date())
            chained = not full_backup_due(settings, fulls.regular, now, planned)
            if not chained:
                record_full_planned(storage.backups, table, now.astimezone(UTC).date())
        previous = None if chained else fulls.sampled
        bounds: list[str] = []
        streams = None
        if chained:
            pass  # an incremental reads only what changed: one item
        elif previous and previous.entities >= settings.fanout_threshold_entities and previous.key_samples:
            wanted = min(settings.max_parts, math.ceil(previous.entities / settings.part_target_entities))
            bounds = split_points(previous.key_samples, wanted)
        elif previous and previous.key_samples:
            if previous.entities >= STREAMS_MIN_ENTITIES and settings.read_streams > 1:
                streams = split_points(previous.key_samples, settings.read_streams) or None
        elif previous is None or previous.entities >= settings.fanout_threshold_entities:
            # No samples to cut at: a first backup, or one after a manifest written before samples
            # were recorded. Its size is unknown (or known large): probe.
            wanted = settings.max_parts
            if previous is not None:
                wanted = min(wanted, math.ceil(previous.entities / settings.part_target_entities))
            bounds = _probed_bounds(storage, table, wanted) if wanted > 1 else []
        edges = [None, *bounds, None]
        for index in range(len(edges) - 1):
            items.append(
                WorkItem(
                    run=run,
                    table=table,
                    backup=backup_id,
                    started_at=started,
                    part=index + 1,
                    parts=len(edges) - 1,
                    low=edges[index],
                    high=edges[index + 1],
                    incremental=chained,
                    streams=streams if len(edges) == 2 else None,
                    reason=why,
                )
            )
    return items


def stream_items(item: WorkItem) -> list[WorkItem]:
    """The parts one item reads in parallel streams: one part per range between its cut points."""
    edges = [None, *(item.streams or []), None]
    return [
        WorkItem(
            **{**asdict(item), "part": index + 1, "parts": len(edges) - 1, "low": low, "high": high, "streams": None}
        )
        for index, (low, high) in enumerate(itertools.pairwise(edges))
    ]


@dataclass(frozen=True)
class PartResult:
    info: BlobInfo
    samples: list[str]


def stream_to_blob(
    storage: Storage,
    table: str,
    backup_id: str,
    leaf: str,
    query_filter: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> PartResult:
    """Stream the table's pages (those the filter selects) into one gzip NDJSON blob of the backup,
    sampling PartitionKeys on the way. Memory holds about two pages and one block."""
    pages = iter_pages(storage.source_tables.get_table_client(table), query_filter=query_filter)
    first = next(pages)  # proves the table exists before any blob is written
    pages = itertools.chain([first], pages)
    del first  # the loop below must be the only holder of a page
    sampler = KeySampler()
    try:
        storage.ensure_backup_container()
        writer = DataBlobWriter(storage.backups, backup_id, leaf)
        for page in pages:
            writer.write_lines([encode_line(entity) for entity in page])
            sampler.add(page)
            del page  # see iter_pages: two pages at most
            if on_progress:
                on_progress(writer.entities)
        return PartResult(info=writer.finish_info(), samples=sampler.samples)
    except AzureError as error:
        raise StorageUnavailable(
            f"writing {leaf} of backup {backup_id!r} to {storage.backups.url} failed: {str(error).splitlines()[0]}"
        ) from error


def back_up_part(
    storage: Storage, item: WorkItem, attempt: int = 1, on_progress: Callable[[int], None] | None = None
) -> PartResult:
    """Stream one range of the table into a part blob of its own for this attempt."""
    leaf = attempt_leaf(f"part-{item.part:04d}.ndjson.gz", attempt)
    return stream_to_blob(storage, item.table, item.backup, leaf, partition_range(item.low, item.high), on_progress)


def merge_samples(parts: list[PartResult]) -> list[str]:
    """The parts' key samples as one list at even intervals of the whole data: each part sampled
    at its own interval, so each contributes in proportion to its entities."""
    total = sum(part.info.lines for part in parts)
    merged: list[str] = []
    for part in parts:
        if not part.samples or not total:
            continue
        count = max(1, round(KeySampler.MAX * part.info.lines / total))
        merged += [part.samples[index * len(part.samples) // count] for index in range(count)]
    return merged


def assemble(storage: Storage, items: list[WorkItem], results: dict[int, PartResult]) -> Manifest:
    """Write the manifest of a multi-part backup once every part is done: last, and only once."""
    head = items[0]
    parts = [results[item.part].info for item in sorted(items, key=lambda i: i.part)]
    samples = merge_samples([results[item.part] for item in sorted(items, key=lambda i: i.part)])
    manifest = Manifest(
        backup=head.backup,
        table=head.table,
        source_account=storage.account,
        read_from_secondary=storage.settings.read_from_secondary,
        started_at=datetime.fromisoformat(head.started_at),
        finished_at=datetime.now(UTC),
        entities=sum(part.lines for part in parts),
        bytes=sum(part.bytes for part in parts),
        sha256=parts_digest(parts),
        data_blob=parts[0].blob,
        parts=parts,
        key_samples=samples,
        reason=head.backup_reason(),
    )
    write_manifest(storage.backups, manifest)
    return manifest
