"""How two states of a table differ: a backup against another backup or against the live table.

Both sides are read once, in the service's key order (a backup's state as restore resolves it,
incremental links and all: tablebackup.repository.chain.state_entities; the live table page by
page, a few pages read ahead), and merged as two streams: memory holds one entity of each side and
those few pages, whatever the tables' sizes.
Erased entities are left out of both sides. A filter is matched here, on both sides alike, rather
than sent to the service, so that both sides are chosen by exactly the same rules.

Each differing entity is one record: {"change": "added" | "removed" | "changed", "PartitionKey",
"RowKey", "properties": {name: {"old": {"value", "type"} | null, "new": ...}}}; an added entity
lists all its properties as new, a removed one all as old, a changed one only what changed (a
value, or only its EDM type: Int32 2 and Double 2.0 differ)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tablebackup.core import telemetry
from tablebackup.core.clients import Storage
from tablebackup.core.entities import service_order
from tablebackup.core.errors import BackupError
from tablebackup.inspect.show import resolve
from tablebackup.inspect.versions import changed_properties, from_wire, same_version, typed_properties
from tablebackup.repository import erasures
from tablebackup.repository.backupformat import Manifest
from tablebackup.repository.chain import state_entities
from tablebackup.storage.odatafilter import ODataFilter, parse_filter
from tablebackup.storage.tablequery import iter_pages

# The JSON answer lists this many differing entities at most, so it stays small whatever the
# tables' sizes; --output FILE receives every one.
MAX_LISTED = 100
# Pages of the live table read ahead of the comparison by a thread of their own: the service keeps
# sending while the backup side is decoded and compared (one page ahead left both waiting in turn).
READ_AHEAD_PAGES = 3


@dataclass
class Difference:
    added: int = 0
    removed: int = 0
    changed: int = 0
    unchanged: int = 0
    listed: list[dict] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not (self.added or self.removed or self.changed)


def _in_order(entities: Iterator[dict], side: str) -> Iterator[tuple[tuple[bytes, bytes], dict]]:
    """(key order, entity), refusing a stream that is not in strictly ascending key order: merging
    it would report false differences."""
    last = None
    for entity in entities:
        order = service_order(entity)
        if last is not None and order <= last:
            raise BackupError(
                f"{side} is not in the service's key order at PartitionKey {entity['PartitionKey']!r}, "
                f"RowKey {entity['RowKey']!r}: the comparison stopped rather than report false differences"
            )
        last = order
        yield order, entity


def _record(change: str, old: dict | None, new: dict | None, changes: dict | None = None) -> dict:
    entity = new if old is None else old
    if change == "changed":
        properties = changes
    else:
        side = "new" if old is None else "old"
        properties = {
            name: {"old": None, "new": None, side: {"value": value, "type": edm}}
            for name, (value, edm) in sorted(typed_properties(entity).items())
        }
    keys = {"PartitionKey": entity["PartitionKey"], "RowKey": entity["RowKey"]}
    return {"change": change, **keys, "properties": properties}


def compare(
    old: Iterator[dict], new: Iterator[dict], on_difference: Callable[[dict], None] | None = None
) -> Difference:
    """Merge two key-ordered streams of entities; each differing entity's record goes to
    `on_difference` and, up to MAX_LISTED, into the result."""
    result = Difference()

    def differs(change: str, before: dict | None, after: dict | None, changes: dict | None = None) -> None:
        setattr(result, change, getattr(result, change) + 1)
        record = _record(change, before, after, changes)
        if len(result.listed) < MAX_LISTED:
            result.listed.append(record)
        if on_difference is not None:
            on_difference(record)

    olds, news = _in_order(old, "the --from side"), _in_order(new, "the --to side")
    left, right = next(olds, None), next(news, None)
    while left is not None or right is not None:
        if right is None or (left is not None and left[0] < right[0]):
            differs("removed", left[1], None)
            left = next(olds, None)
        elif left is None or right[0] < left[0]:
            differs("added", None, right[1])
            right = next(news, None)
        else:
            # Most entities are unchanged: the cheap test first, property by property only if it fails.
            changes = None if same_version(left[1], right[1]) else changed_properties(left[1], right[1])
            if changes:
                differs("changed", left[1], right[1], changes)
            else:
                result.unchanged += 1
            left, right = next(olds, None), next(news, None)
    return result


def _side_json(manifest: Manifest | None, why: str | None) -> dict:
    if manifest is None:
        return {"live": True, "backup": None}
    summary = manifest.summary()
    return {
        "live": False,
        "backup": manifest.backup,
        "kind": manifest.kind,
        "taken_at": summary["taken_at"],
        "chosen": why,
    }


def _read_ahead(pages: Iterator[list[dict]], depth: int = READ_AHEAD_PAGES) -> Iterator[list[dict]]:
    """The pages in order, read by a thread of their own up to `depth` pages ahead of the caller:
    memory holds at most that many pages more. The reader's error is raised here; a caller that
    stops early stops the reader."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: tuple) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for page in pages:
                if not offer(("page", page)):
                    return
            offer(("end", None))
        except BaseException as error:  # handed to the caller, raised in its thread
            offer(("error", error))
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()  # in the thread that read them: a generator's own clean-up runs here

    with telemetry.thread_pool(max_workers=1, thread_name_prefix="diff-live") as pool:
        pool.submit(read)
        try:
            while True:
                kind, value = ready.get()
                if kind == "error":
                    raise value
                if kind == "end":
                    return
                yield value
        finally:
            stop.set()  # the reader gives up its next page within 0.1 s; the pool waits for it


def _live(storage: Storage, table: str) -> Iterator[dict]:
    for page in _read_ahead(iter_pages(storage.tables.get_table_client(table))):
        for entity in page:
            yield from_wire(entity)


def _matching(entities: Iterator[dict], predicate: ODataFilter | None) -> Iterator[dict]:
    return entities if predicate is None else (entity for entity in entities if predicate.matches(entity))


def diff_table(
    storage: Storage,
    table: str,
    from_backup: str,
    to_backup: str | None = None,
    filter_text: str | None = None,
    on_difference: Callable[[dict], None] | None = None,
) -> dict:
    """Compare backup `from_backup` (an id or `latest`) with `to_backup`, or with the live table.
    InvalidInput (bad ids, a bad filter) is raised before anything is read."""
    predicate = parse_filter(filter_text) if filter_text is not None else None
    old_manifest, old_why = resolve(storage, table, from_backup)
    new_manifest, new_why = resolve(storage, table, to_backup) if to_backup is not None else (None, None)
    erased = erasures.load(storage, table)
    old = erased.without_erased(_matching(state_entities(storage.backups, old_manifest), predicate))
    new_entities = _live(storage, table) if new_manifest is None else state_entities(storage.backups, new_manifest)
    new = erased.without_erased(_matching(new_entities, predicate))
    result = compare(old, new, on_difference)
    return {
        "table": table,
        "from": _side_json(old_manifest, old_why),
        "to": _side_json(new_manifest, new_why),
        "filter": filter_text,
        "identical": result.identical,
        "added": result.added,
        "removed": result.removed,
        "changed": result.changed,
        "unchanged": result.unchanged,
        "erased_left_out": erased.skipped,
        "differences": result.listed,
        "differences_listed": len(result.listed),
        "differences_total": result.added + result.removed + result.changed,
        "listing_note": f"at most {MAX_LISTED} differing entities are listed here; --output FILE writes every one",
    }
