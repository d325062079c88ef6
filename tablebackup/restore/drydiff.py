"""What a dry run of a replace or mirror restore would change: each entity of the backup is created
(the target lacks it), updated (the target holds it otherwise) or unchanged; a mirror also deletes
the target's entities in scope that the backup lacks.

Compared window by window, as restore plans its writes (tablebackup.storage.reconcile): up to WINDOW
backup entities at a time, in the service's key order, against the target read over that window's
key range only, whole entities this time. Memory holds one window whatever the table's size."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from itertools import islice

from tablebackup.core.entities import decode_line, encode_line, writable
from tablebackup.storage.odatafilter import ODataFilter
from tablebackup.storage.reconcile import WINDOW, Tally
from tablebackup.storage.tablequery import iter_pages, key_window

# The modes whose result is exactly the backup's entities: an entity is the same or it changes.
DIFF_MODES = ("replace", "mirror")


@dataclass
class Changes:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0

    def as_json(self) -> dict:
        return asdict(self)


def _key(entity: dict) -> tuple[str, str]:
    return entity["PartitionKey"], entity["RowKey"]


def _target(client, after: dict | None, upto: dict | None) -> Iterator[dict]:
    """The target's entities with keys in (after, upto], in the service's order."""
    for page in iter_pages(client, query_filter=key_window(after, upto)):
        yield from page


def _same(wanted: dict, found: dict) -> bool:
    """Whether the target's entity is the backup's: the same properties, values and types (the
    service's metadata aside), compared as both would be written."""
    return writable(wanted) == writable(decode_line(encode_line(found)))


def dry_run_changes(
    entities: Iterable[dict], mode: str, client, exists: bool, predicate: ODataFilter | None, tally: Tally
) -> Changes:
    """Count what restoring `entities` (the backup's, filtered) in `mode` would change in the target;
    `tally` gets what the restore itself would write and delete."""
    changes = Changes()
    iterator = iter(entities)
    after = None
    while window := list(islice(iterator, WINDOW)):
        wanted = {_key(entity): entity for entity in window}
        tally.restored += len(window)
        found = _target(client, after, window[-1]) if exists else iter(())
        for entity in found:
            backup = wanted.pop(_key(entity), None)
            if backup is not None:
                if _same(backup, entity):
                    changes.unchanged += 1
                else:
                    changes.updated += 1
            elif mode == "mirror" and (predicate is None or predicate.matches(entity)):
                changes.deleted += 1
        changes.created += len(wanted)  # what the target lacks
        after = window[-1]
    if mode == "mirror" and exists:
        for entity in _target(client, after, None):
            if predicate is None or predicate.matches(entity):
                changes.deleted += 1
    tally.deleted = changes.deleted
    return changes
