"""Plan the writes and deletes that bring a table to what a stream of entities asks for.

replace and merge write every entity. missing inserts only entities the target lacks; mirror also
deletes target entities in scope that the stream lacks. Both compare window by window: a window is
up to 1,000 entities in the order the service listed them, and the target is read only over that
window's key range, so memory stays bounded and key order is always the service's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

from tablebackup.storage.odatafilter import ODataFilter
from tablebackup.storage.tablequery import iter_pages, key_window

MODES = ("replace", "merge", "missing", "mirror")
WINDOW = 1000


def _target_entities(
    client, after: dict | None, upto: dict | None, keys_only: bool, bounds: str | None = None
) -> Iterator[dict]:
    select = ["PartitionKey", "RowKey"] if keys_only else None
    query = " and ".join(f"({clause})" for clause in (key_window(after, upto), bounds) if clause) or None
    for page in iter_pages(client, query_filter=query, select=select):
        yield from page


def _key(entity: dict) -> tuple[str, str]:
    return entity["PartitionKey"], entity["RowKey"]


@dataclass
class Tally:
    restored: int = 0
    deleted: int = 0
    skipped: int = 0


def plan_operations(
    entities: Iterable[dict],
    mode: str,
    target_client,
    target_exists: bool,
    predicate: ODataFilter | None,
    tally: Tally,
    bounds: str | None = None,
) -> Iterator[tuple[str, dict]]:
    """The writes and deletes that make the target what the mode asks, counted as they are made.
    bounds: an OData filter that limits the target's reads to one key range (the stream holds only
    entities of that range): a mirror then deletes only within it."""
    if mode in ("replace", "merge") or not target_exists:
        action = "merge" if mode == "merge" else ("insert" if mode == "missing" else "replace")
        for entity in entities:
            tally.restored += 1
            yield action, entity
        return
    iterator = iter(entities)
    after = None
    while window := list(islice(iterator, WINDOW)):
        keys = {_key(entity) for entity in window}
        present = set()
        for found in _target_entities(target_client, after, window[-1], predicate is None, bounds):
            key = _key(found)
            if key in keys:
                present.add(key)
            elif mode == "mirror" and (predicate is None or predicate.matches(found)):
                tally.deleted += 1
                yield "delete", found
        for entity in window:
            if mode == "missing" and _key(entity) in present:
                tally.skipped += 1
                continue
            tally.restored += 1
            yield ("insert" if mode == "missing" else "replace"), entity
        after = window[-1]
    if mode == "mirror":
        for found in _target_entities(target_client, after, None, predicate is None, bounds):
            if predicate is None or predicate.matches(found):
                tally.deleted += 1
                yield "delete", found
