"""Backup chains: an incremental holds what changed since its parent and the keys deleted since
then, so the table's state at an incremental is its full backup with every later link applied.

All streams here are in the service's key order, so links merge in one streaming pass.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from azure.storage.blob import ContainerClient

from tablebackup.core.entities import decode_line, service_order
from tablebackup.core.errors import DamagedBackup, InvalidInput
from tablebackup.core.names import BACKUP_ID_RE, table_key
from tablebackup.repository import catalog
from tablebackup.repository.backupformat import Manifest, read_data_lines

# Chains longer than this point at a loop or a damaged catalog.
MAX_CHAIN = 1000


def chain_of(container: ContainerClient, manifest: Manifest) -> list[Manifest]:
    """The full backup and every incremental up to this one, oldest first."""
    links = [manifest]
    while links[-1].kind == "incremental":
        child, parent = links[-1].backup, links[-1].parent
        if not parent or len(links) > MAX_CHAIN:
            raise DamagedBackup(f"backup {child!r} is an incremental without a usable parent")
        # A parent is an older backup of the same table: never another table's data, never a loop.
        parent_id, child_id = BACKUP_ID_RE.fullmatch(parent), BACKUP_ID_RE.fullmatch(child)
        same_table = parent_id and table_key(parent_id["table"]) == table_key(child_id["table"])
        if not same_table or parent_id["stamp"] >= child_id["stamp"]:
            raise DamagedBackup(f"backup {child!r} is refused: its parent {parent!r} is no older backup of its table")
        links.append(catalog.read_manifest(container, parent))
    return links[::-1]


def _entities(container: ContainerClient, manifest: Manifest, blob: str | None = None) -> Iterator[dict]:
    for number, line in enumerate(read_data_lines(container, manifest, blob), start=1):
        try:
            yield decode_line(line)
        except InvalidInput as error:
            raise DamagedBackup(f"backup {manifest.backup!r} line {number}: {error}") from None


def key_lines(container: ContainerClient, manifest: Manifest) -> Iterator[dict]:
    """Every key of the table at this backup, in service order."""
    if manifest.kind == "incremental":
        if manifest.keys is None:
            raise DamagedBackup(f"backup {manifest.backup!r} is an incremental without its key index")
        return _entities(container, manifest, manifest.keys.blob)
    return ({"PartitionKey": e["PartitionKey"], "RowKey": e["RowKey"]} for e in _entities(container, manifest))


def _events(entities: Iterator[dict], age: int, *, deleted: bool) -> Iterator[tuple]:
    """(order key, link age, deleted?, entity): for one key, later links sort after earlier ones."""
    for entity in entities:
        yield service_order(entity), age, deleted, entity


def state_size(manifest: Manifest) -> int:
    """How many entities the table held at this backup: an incremental's `entities` counts only
    what changed, its key set counts the whole table."""
    if manifest.kind == "incremental" and manifest.keys is not None:
        return manifest.keys.lines
    return manifest.entities


def _newest_versions(container: ContainerClient, chain: list[Manifest]) -> Iterator[dict]:
    """For each key of the chain, the newest link's version, unless a later link deleted it."""
    streams = []
    for age, link in enumerate(chain):
        streams.append(_events(_entities(container, link), age, deleted=False))
        if link.deleted is not None:
            streams.append(_events(_entities(container, link, link.deleted.blob), age, deleted=True))
    current_key, newest = None, None
    for key, _age, deleted, entity in heapq.merge(*streams, key=lambda event: event[:3]):
        if key != current_key:
            if newest is not None and not newest[0]:
                yield newest[1]
            current_key = key
        newest = (deleted, entity)
    if newest is not None and not newest[0]:
        yield newest[1]


def _within(entities: Iterator[dict], keys: Iterator[dict]) -> Iterator[dict]:
    """The entities whose key is in the key set (both streams in service order)."""
    key = next(keys, None)
    for entity in entities:
        order = service_order(entity)
        while key is not None and service_order(key) < order:
            key = next(keys, None)
        if key is None:
            return
        if service_order(key) == order:
            yield entity


def state_entities(container: ContainerClient, manifest: Manifest) -> Iterator[dict]:
    """The table's entities at this backup, in service order: for each key of the backup's key set,
    the newest link's version, unless a later link deleted it.

    The key set bounds the state: an entity created after the parent and deleted while the
    incremental ran (after its changes scan, before its key scan) is in the incremental's data but
    in no key set, so no later link could ever record it as deleted."""
    chain = chain_of(container, manifest)
    if len(chain) == 1:
        yield from _entities(container, manifest)
        return
    yield from _within(_newest_versions(container, chain), key_lines(container, manifest))
