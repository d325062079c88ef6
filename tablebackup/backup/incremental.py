"""Incremental backups: the entities changed since the parent backup (the service's Timestamp, with
a safety overlap), and the keys deleted since then, found by listing only the live keys and merging
them with the parent's key set. Both key streams are in the service's order, so one pass does it.

Cosmos DB's Table API does not filter on Timestamp: incrementals are for Azure Storage tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice

import orjson

from tablebackup.core.clients import Storage
from tablebackup.core.entities import KEYS, encode_line, service_order
from tablebackup.repository.backupformat import (
    DATA_BLOB,
    DELETED_BLOB,
    KEYS_BLOB,
    DataBlobWriter,
    Manifest,
    attempt_leaf,
)
from tablebackup.repository.chain import key_lines
from tablebackup.storage.tablequery import iter_pages

# Deleted keys are written this many at a time: memory stays bounded however many are gone.
_DELETED_CHUNK = 1000


def _key_line(entity: dict) -> bytes:
    return orjson.dumps({name: entity[name] for name in KEYS}) + b"\n"


def _live_keys(client, keys: DataBlobWriter) -> Iterator[dict]:
    """The table's live keys in service order, written to the keys blob as they are read."""
    for page in iter_pages(client, select=list(KEYS)):
        keys.write_lines([_key_line(live) for live in page])
        yield from page


def _gone_keys(earlier: Iterator[dict], live_keys: Iterator[dict]) -> Iterator[dict]:
    """The parent's keys that are no longer live: one merge pass over two streams in service order."""
    before = next(earlier, None)
    for live in live_keys:
        while before is not None and service_order(before) < service_order(live):
            yield before
            before = next(earlier, None)
        if before is not None and service_order(before) == service_order(live):
            before = next(earlier, None)
    while before is not None:  # keys after the last live one: all deleted
        yield before
        before = next(earlier, None)


def changed_since(instant: datetime) -> str:
    return f"Timestamp ge datetime'{instant.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%f}0Z'"


def stream_incremental(
    storage: Storage,
    table: str,
    backup_id: str,
    started: datetime,
    parent: Manifest,
    on_progress: Callable[[int], None] | None,
    attempt: int = 1,
) -> Manifest:
    client = storage.source_tables.get_table_client(table)
    data = DataBlobWriter(storage.backups, backup_id, attempt_leaf(DATA_BLOB, attempt))
    # Changes first, keys second: an entity changed and then deleted during the run ends deleted.
    overlap = timedelta(minutes=storage.settings.incremental_overlap_minutes)
    for page in iter_pages(client, query_filter=changed_since(parent.started_at - overlap)):
        data.write_lines([encode_line(entity) for entity in page])
        if on_progress:
            on_progress(data.entities)
    keys = DataBlobWriter(storage.backups, backup_id, attempt_leaf(KEYS_BLOB, attempt))
    deleted = DataBlobWriter(storage.backups, backup_id, attempt_leaf(DELETED_BLOB, attempt))
    gone = _gone_keys(key_lines(storage.backups, parent), _live_keys(client, keys))
    while batch := list(islice(gone, _DELETED_CHUNK)):  # a purged range may hold millions of keys
        deleted.write_lines([_key_line(key) for key in batch])
    size, sha256 = data.finish()
    return Manifest(
        backup=backup_id,
        table=table,
        source_account=storage.account,
        read_from_secondary=storage.settings.read_from_secondary,
        kind="incremental",
        parent=parent.backup,
        started_at=started,
        finished_at=datetime.now(UTC),
        entities=data.entities,
        bytes=size,
        sha256=sha256,
        data_blob=data.name,
        deleted=deleted.finish_info(),
        keys=keys.finish_info(),
    )
