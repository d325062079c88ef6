"""What became of one entity across the backups: each complete backup that holds it (newest
first) with a digest of the version it holds and what changed from the version before, the backups
taken while it was absent, and the audit trail's changes of it between backups.

Each backup's state is read in key order only up to the entity's key (state_entities, as restore
resolves a chain): memory holds one entity, and a key early in the table is found early. An erased
key has no history to show: the register exists so that it never comes back."""

from __future__ import annotations

import bisect
from collections import deque
from datetime import UTC, datetime, timedelta

from tablebackup.audit.messages import instant_text
from tablebackup.audit.queries import MAX_RANGE_DAYS, iter_entries
from tablebackup.core.clients import Storage
from tablebackup.core.entities import service_order
from tablebackup.core.errors import BackupError, InvalidInput, NotFound
from tablebackup.core.names import validate_table_name
from tablebackup.inspect.versions import changed_properties, from_wire, version_digest
from tablebackup.repository import catalog, erasures
from tablebackup.repository.backupformat import Manifest
from tablebackup.repository.chain import state_entities
from tablebackup.storage.tablequery import iter_pages, odata_string

# The audited changes listed at most (the newest): an entity rewritten every second would otherwise
# fill the answer; all are counted.
MAX_AUDIT_LISTED = 500


def _held(storage: Storage, manifest: Manifest, key: dict) -> dict | None:
    """The entity's version in this backup's state, or None."""
    wanted = service_order(key)
    for entity in state_entities(storage.backups, manifest):
        order = service_order(entity)
        if order == wanted:
            return entity
        if order > wanted:
            return None
    return None


def _live(storage: Storage, table: str, key: dict) -> dict | None:
    query = f"PartitionKey eq {odata_string(key['PartitionKey'])} and RowKey eq {odata_string(key['RowKey'])}"
    try:
        for page in iter_pages(storage.tables.get_table_client(table), query_filter=query):
            for entity in page:
                return from_wire(entity)
    except NotFound:
        return None  # the table itself is gone
    return None


def _backups(storage: Storage, table: str) -> list[tuple[str, Manifest | BackupError]]:
    """Every complete backup of the table, oldest first; a refused one as its error."""
    found = []
    for backup_id in reversed(catalog.backup_ids(storage.backups, table)):
        try:
            found.append((backup_id, catalog.read_manifest(storage.backups, backup_id)))
        except NotFound:
            continue  # pruned since the listing
        except BackupError as error:
            found.append((backup_id, error))
    return found


def _audit(
    storage: Storage, table: str, key: dict, since: datetime, until: datetime, starts: list[str], ids: list[str]
) -> tuple[list[dict], int]:
    """The audit trail's changes of the entity since the oldest backup (at most the audit query's
    MAX_RANGE_DAYS back), each placed between the backups taken before and after it: the newest
    MAX_AUDIT_LISTED in time order, and how many there were. A table nobody audits has none."""
    since = max(since, until - timedelta(days=MAX_RANGE_DAYS))
    changes: deque[dict] = deque(maxlen=MAX_AUDIT_LISTED)
    total = 0
    entries = iter_entries(
        storage, table=table, partition_key=key["PartitionKey"], row_key=key["RowKey"], since=since, until=until
    )
    for entry in entries:
        if entry["operation"] not in ("INSERT", "UPDATE", "DELETE"):
            continue
        total += 1
        at = entry["timestamp"]
        place = bisect.bisect_right(starts, at)
        before, after = entry.get("beforeData"), entry.get("afterData")
        changes.append(
            {
                "timestamp": at,
                "operation": entry["operation"],
                "user": entry["userId"],
                "after_backup": ids[place - 1] if place else None,
                "before_backup": ids[place] if place < len(ids) else None,
                "changes": changed_properties(before or {}, after or {})
                if isinstance(before, dict) or isinstance(after, dict)
                else {},
            }
        )
    return list(changes), total


def entity_history(
    storage: Storage, table: str, partition_key: str, row_key: str, *, now: datetime | None = None
) -> dict:
    """The JSON of `history`; `now` (default: the clock) ends the audit trail's range."""
    now = now or datetime.now(UTC)
    validate_table_name(table)
    for name, value in (("partition key", partition_key), ("row key", row_key)):
        if not isinstance(value, str):
            raise InvalidInput(f"the {name} must be a string")
    key = {"PartitionKey": partition_key, "RowKey": row_key}
    answer = {"table": table, "PartitionKey": partition_key, "RowKey": row_key}
    if erasures.load(storage, table).covers(key):
        note = "this key is erased (GDPR): its versions are not shown"
        return {**answer, "erased": True, "note": note, "backups": []}
    timeline, previous = [], None
    backups = _backups(storage, table)
    for backup_id, manifest in backups:
        if isinstance(manifest, BackupError):
            timeline.append({"backup": backup_id, "refused": str(manifest)})
            continue
        row = {"backup": backup_id, "taken_at": manifest.summary()["taken_at"], "kind": manifest.kind}
        row["reason"] = manifest.reason_json()["kind"]
        try:
            entity = _held(storage, manifest, key)
        except BackupError as error:
            timeline.append({**row, "refused": str(error)})
            continue
        if entity is None:
            row.update(holds=False, digest=None, changes=None)
            previous = None if previous is None else {**previous, "gone": True}
        else:
            if previous is None:
                changes, since = None, "first seen"
            elif previous.get("gone"):
                changes, since = changed_properties(previous["entity"], entity), "re-created"
            else:
                changes = changed_properties(previous["entity"], entity)
                since = "changed" if changes else "unchanged"
            row.update(holds=True, digest=version_digest(entity), since_previous=since, changes=changes)
            previous = {"entity": entity}
        timeline.append(row)
    live = _live(storage, table, key)
    kept = [(backup_id, manifest) for backup_id, manifest in backups if isinstance(manifest, Manifest)]
    # In the audit's own form, whose text order is time order.
    starts = [instant_text(manifest.started_at) for _, manifest in kept]
    first = kept[0][1].started_at.astimezone(UTC) if kept else now - timedelta(days=1)
    audit, audited = _audit(storage, table, key, first, now, starts, [backup_id for backup_id, _ in kept])
    timeline.reverse()  # newest first
    return {
        **answer,
        "erased": False,
        "live": {"holds": live is not None, "digest": version_digest(live) if live is not None else None},
        "backups": timeline,
        "held_in": [row["backup"] for row in timeline if row.get("holds")],
        "absent_from": [row["backup"] for row in timeline if row.get("holds") is False],
        "audit": audit,
        "audit_total": audited,
        "audit_note": None
        if audited <= len(audit)
        else f"the newest {len(audit)} of {audited} audited changes are listed",
    }
