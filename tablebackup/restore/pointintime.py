"""Point-in-time restore and undelete from the audit trail.

Azure Tables has no point-in-time restore, but an application that reports its changes to the audit
trail (one INSERT, UPDATE or DELETE entry per change, with the whole entity as afterData) lets us
restore to any instant:

1. the backup: the table's newest known state at the instant (tablebackup.repository.catalog): the
   newest complete regular backup that finished at or before it (one still running at the instant
   may already hold later changes; never a safety backup), or the backup an unfiltered mirror
   restore in place completed by then made the table's state; restored by
   tablebackup.restore.restorer.restore;
2. the replay: the audited changes of the table from the backup's start (or that restore's start)
   up to the instant, in time order, applied to the same target. Changes made while the backup ran
   may or may not be in it; replaying from its start is safe because a replay writes whole entities (InsertOrReplace of
   afterData, exactly as sent, types included) or deletes.

Replay collapses the changes per entity first (the last change wins): an entity group transaction
may not hold one entity twice, and batches run in parallel, so each key gets one final operation,
written in the service's key order. The final images and the gaps go to a private temporary SQLite
file, not memory, so memory does not grow with the number of entities changed in the window.

Scope: with a filter, an entity's replayed change is in scope when any image of it in the window
(before or after, of any of its changes) matches the filter, so an entity that moved out of the
filter's scope after the backup still gets its state at the instant; a DELETE whose entity has no
image in the window is in scope when the entity the target holds (after the backup part) matches.
Erased keys (GDPR) are never replayed.

Gaps are reported, never hidden: an INSERT or UPDATE without a usable afterData (absent, its payload
blob missing, not JSON, not a valid entity); changes of one entity at one instant whose order is
unknown (tablebackup.restore.auditchanges: no distinct sequence or queue insertion time) and that would leave it
in different states; and an instant beyond the table's newest audited change (the writer may not
have caught up, or there were no changes: the audit trail cannot tell).
`faithful_until` is the last instant up to which every audited change is reflected: the instant
itself, one tick (100 ns) before the first gap whose entity no later readable change overwrote, or
the newest audited change when the instant is beyond it. Messages still on the audit queue, or in
its poison queue, are not seen.
"""

from __future__ import annotations

import logging
import pickle
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from dataclasses import replace as replace_fields
from datetime import UTC, datetime, timedelta

import orjson

from tablebackup.audit.entries import operation_entries
from tablebackup.audit.messages import DATA_OPERATIONS, instant_text
from tablebackup.core import telemetry
from tablebackup.core.clients import Storage
from tablebackup.core.errors import BackupError, DamagedBackup, InvalidInput, NotFound
from tablebackup.core.names import table_key, validate_backup_id, validate_table_name
from tablebackup.repository import catalog, erasures
from tablebackup.repository.backupformat import Manifest
from tablebackup.repository.chain import state_entities
from tablebackup.repository.erasures import Erasures
from tablebackup.restore.auditchanges import Change, first_change_after, read_changes
from tablebackup.restore.restorer import RestoreRequest, RestoreResult, restore
from tablebackup.storage.odatafilter import ODataFilter, parse_filter
from tablebackup.storage.tablequery import iter_pages, odata_string
from tablebackup.storage.tables import addressed, create_table, table_exists
from tablebackup.storage.tablewriter import Operation, submit_operations
from tablebackup.storage.targets import REPLAY_INTO_ANOTHER_ACCOUNT, resolve_target

log = logging.getLogger(__name__)

# The modes whose result is the table's state at the instant (merge and missing keep other data).
REPLAY_MODES = ("replace", "mirror")
# Gaps listed in a result (all are counted in gaps_total); a queued restore's result is one property.
MAX_LISTED_GAPS = 50
_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
_TICKS_PER_SECOND = 10**7


def _utc(instant: datetime) -> datetime:
    return instant.astimezone(UTC) if instant.tzinfo else instant.replace(tzinfo=UTC)


def tick_before(text: str) -> str:
    """The canonical instant one tick (100 ns) before a canonical instant."""
    moment = datetime.fromisoformat(text[:19]).replace(tzinfo=UTC)
    ticks = (moment - _EPOCH) // timedelta(seconds=1) * _TICKS_PER_SECOND + int(text[20:27]) - 1
    seconds, fraction = divmod(ticks, _TICKS_PER_SECOND)
    earlier = (_EPOCH + timedelta(seconds=seconds)).replace(tzinfo=None)
    return f"{earlier.isoformat(timespec='seconds')}.{fraction:07d}Z"


def _order(key: tuple[str, str]) -> tuple[bytes, bytes]:
    """The service's key order (tablebackup.core.entities.service_order) of a key pair."""
    return key[0].encode("utf-16-be", "surrogatepass"), key[1].encode("utf-16-be", "surrogatepass")


def _key_filter(partition_key: str, row_key: str) -> str:
    return f"PartitionKey eq {odata_string(partition_key)} and RowKey eq {odata_string(row_key)}"


def _current(client, key: tuple[str, str]) -> dict | None:
    """The entity with this key in the table, as wire JSON; None if it or the table does not exist."""
    try:
        for page in iter_pages(client, query_filter=_key_filter(*key)):
            if page:
                return page[0]
    except NotFound:
        return None
    return None


def _gap(timestamp: str, entity_key: str | None, reason: str) -> dict:
    return {"timestamp": timestamp, "entityKey": entity_key, "reason": reason, "superseded": False}


# Choosing the backup


def state_for_instant(
    storage: Storage, table: str, instant: datetime, resolved: str | None = None
) -> catalog.KnownState:
    """The table's newest known state finished at or before `instant` (catalog.newest_state); with
    `resolved`, the backup it resolved to when the restore was first asked, and from when to replay."""
    instant = _utc(instant)
    try:
        state = catalog.newest_state(storage.backups, table, instant, finished_by=True)
    except NotFound:
        if resolved is None:
            raise
        state = None
    if resolved is None or (state is not None and state.backup == resolved):
        return state
    manifest = catalog.read_manifest(storage.backups, validate_backup_id(resolved))
    if table_key(manifest.table) != table_key(table) or _utc(manifest.finished_at) > instant:
        raise InvalidInput(
            f"backup {resolved!r} is no backup of {table!r} finished at or before {instant_text(instant)}"
        )
    return catalog.KnownState(manifest, manifest.started_at, manifest.finished_at)


def backup_for_instant(storage: Storage, table: str, instant: datetime) -> Manifest:
    """The backup of the table's newest known state finished at or before `instant`."""
    return state_for_instant(storage, table, instant).manifest


@dataclass(frozen=True)
class Checked:
    manifest: Manifest
    target: str
    predicate: ODataFilter | None
    as_of: datetime
    replay_from: datetime  # the state's start: the backup's, or that of the restore that made it
    known_at: datetime  # the state's end: the backup's finish, or the restore's
    chosen: str = ""


def check_point_in_time(storage: Storage, request: RestoreRequest) -> Checked:
    """Everything a point-in-time restore could refuse, checked before anything is read or written."""
    validate_table_name(request.table)
    if request.target_account is not None:
        raise InvalidInput(f"replaying the audit trail into another account: {REPLAY_INTO_ANOTHER_ACCOUNT}")
    target = resolve_target(
        storage.settings, request.table, request.target, mode=request.mode, allow_app_table=request.allow_app_table
    )
    target = addressed(storage, target)  # an existing table under another spelling is that table
    if request.as_of is None or request.backup is not None:
        raise InvalidInput("replaying the audit trail restores to an instant: give an as-of instant and no backup id")
    if request.mode not in REPLAY_MODES:
        raise InvalidInput(
            f"mode {request.mode!r} cannot replay the audit trail: use {' or '.join(REPLAY_MODES)} "
            "(the table's state at the instant)"
        )
    predicate = parse_filter(request.filter) if request.filter else None
    as_of = _utc(request.as_of)
    state = state_for_instant(storage, request.table, as_of, request.resolved)
    chosen = f"as of {instant_text(as_of)}: {state.describe()}"
    return Checked(state.manifest, target, predicate, as_of, _utc(state.since), _utc(state.known_at), chosen)


# Collapsing the changes


def _outcome(change: Change) -> tuple:
    """The state one change leaves its entity in, comparable with another change's."""
    if change.operation == "DELETE":
        return ("delete",)
    after, _ = change.entity("afterData")
    if after is None:
        return ("unknown", id(change))
    return ("replace", orjson.dumps(after, option=orjson.OPT_SORT_KEYS))


def _key_bytes(key: tuple[str, str]) -> tuple[bytes, bytes]:
    """_order, lone surrogates included: SQLite compares BLOBs bytewise, which is the service's order."""
    return key[0].encode("utf-16-be", "surrogatepass"), key[1].encode("utf-16-be", "surrogatepass")


def _key_text(partition: bytes, row: bytes) -> tuple[str, str]:
    return partition.decode("utf-16-be", "surrogatepass"), row.decode("utf-16-be", "surrogatepass")


# One row per entity changed in the window: its last readable change (action None while only gaps
# were seen, entity pickled: any string, any JSON value), whether an image of it matched the filter,
# and whether any image of it was seen. Gaps in time order; open ones no later change overwrote.
_SCHEMA = """
CREATE TABLE finals (
    partition BLOB, row BLOB, action TEXT, entity BLOB, in_scope INTEGER, imaged INTEGER,
    PRIMARY KEY (partition, row)
) WITHOUT ROWID;
CREATE TABLE gaps (id INTEGER PRIMARY KEY, partition BLOB, row BLOB, timestamp TEXT, gap BLOB, superseded INTEGER);
CREATE INDEX open_gaps ON gaps (partition, row) WHERE superseded = 0;
"""
_UPSERT = """
INSERT INTO finals VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (partition, row) DO UPDATE SET
    action = coalesce(excluded.action, action),
    entity = CASE WHEN excluded.action IS NULL THEN entity ELSE excluded.entity END,
    in_scope = in_scope OR excluded.in_scope,
    imaged = imaged OR excluded.imaged
"""


class Replay:
    """The changes of a window collapsed per entity; gaps in time order. Held in a private SQLite
    file (deleted on close), not in memory: a window can change millions of entities."""

    def __init__(self, predicate: ODataFilter | None, erased: Erasures):
        self.predicate = predicate
        self.erased = erased
        self.newest: str | None = None  # the newest audited change seen
        # "": a temporary on-disk database; memory is SQLite's page cache (about 2 MiB) whatever its size.
        self._db = sqlite3.connect("", check_same_thread=False, isolation_level=None)
        self._db.executescript(_SCHEMA)
        self._db.execute("BEGIN")  # one transaction: nothing here needs to survive a crash
        # The entity and instant of the current run of tied changes, the states they would leave,
        # and the id of the gap they make once those differ.
        self._tie: tuple[tuple, set, int | None] | None = None

    def close(self) -> None:
        self._db.close()

    def _matches(self, entity: dict) -> bool:
        return self.predicate is None or self.predicate.matches(entity)

    def add(self, change: Change) -> None:
        self._add(change)
        keys = {"PartitionKey": change.partition_key, "RowKey": change.row_key}
        if change.tied and change.operation in DATA_OPERATIONS and not self.erased.covers(keys):
            self._unordered(change)

    def _unordered(self, change: Change) -> None:
        """One of several changes of an entity at one instant whose order is unknown: when they would
        leave it in different states, its state from then on is a gap until a later change settles it."""
        group = (change.key, change.timestamp)
        if self._tie is None or self._tie[0] != group:
            self._tie = (group, set(), None)
        _, outcomes, gap = self._tie
        outcomes.add(_outcome(change))
        if len(outcomes) == 1:
            return
        if gap is not None:  # a later change of the same run settled it: only a later instant does
            self._db.execute("UPDATE gaps SET superseded = 0 WHERE id = ?", (gap,))
            return
        reason = "changes at the same instant in an unknown order (no distinct sequence or queue insertion time)"
        row = (
            *_key_bytes(change.key),
            change.timestamp,
            pickle.dumps(_gap(change.timestamp, change.entity_key, reason)),
        )
        self._tie = (group, outcomes, self._db.execute("INSERT INTO gaps VALUES (NULL, ?, ?, ?, ?, 0)", row).lastrowid)

    def _add(self, change: Change) -> None:
        if change.operation not in DATA_OPERATIONS:
            return  # the app's own entries (RESTORE, IMPORT, ...) are not entity changes
        self.newest = change.timestamp
        keys = {"PartitionKey": change.partition_key, "RowKey": change.row_key}
        if self.erased.covers(keys):
            return
        key = _key_bytes(change.key)
        in_scope, imaged = False, False
        before, _ = change.entity("beforeData")
        if before is not None:
            imaged, in_scope = True, self._matches(before)
        if change.operation == "DELETE":
            self._settle(key, "delete", keys, in_scope, imaged)
            return
        after, problem = change.entity("afterData")
        if after is None:
            gap = _gap(change.timestamp, change.entity_key, problem)
            self._db.execute(
                "INSERT INTO gaps VALUES (NULL, ?, ?, ?, ?, 0)", (*key, change.timestamp, pickle.dumps(gap))
            )
            self._db.execute(_UPSERT, (*key, None, None, in_scope, imaged))
            return
        self._settle(key, "replace", after, in_scope or self._matches(after), True)

    def _settle(self, key: tuple[bytes, bytes], action: str, entity: dict, in_scope: bool, imaged: bool) -> None:
        # A later whole-entity change overwrote the entity's open gaps.
        self._db.execute("UPDATE gaps SET superseded = 1 WHERE partition = ? AND row = ? AND superseded = 0", key)
        self._db.execute(_UPSERT, (*key, action, pickle.dumps(entity), in_scope, imaged))

    def first_open_gap(self) -> str | None:
        """The timestamp of the earliest gap no later change of its entity overwrote."""
        return self._db.execute("SELECT min(timestamp) FROM gaps WHERE superseded = 0").fetchone()[0]

    def gaps(self, limit: int) -> tuple[list[dict], int]:
        """The first `limit` gaps in time order, and how many there are."""
        rows = self._db.execute("SELECT gap, superseded FROM gaps ORDER BY id LIMIT ?", (limit,))
        listed = [{**pickle.loads(gap), "superseded": bool(superseded)} for gap, superseded in rows]
        return listed, self._db.execute("SELECT count(*) FROM gaps").fetchone()[0]

    def operations(self, client) -> Iterator[Operation]:
        """The final operation per entity in scope, in the service's key order, streamed."""
        rows = self._db.execute(
            "SELECT partition, row, action, entity, in_scope, imaged FROM finals "
            "WHERE action IS NOT NULL ORDER BY partition, row"  # only gaps: the entity keeps its earlier state
        )
        for partition, row, action, entity, in_scope, imaged in rows:
            if not in_scope and self.predicate is not None:
                if imaged:
                    continue
                current = _current(client, _key_text(partition, row))  # a DELETE with no image: judge by the target
                if current is None or not self.predicate.matches(current):
                    continue
            yield action, pickle.loads(entity)


# Point-in-time restore


@dataclass
class PointInTimeResult:
    base: RestoreResult
    as_of: str
    replay_from: str
    replayed: int = 0
    faithful_until: str = ""
    gaps: list[dict] = field(default_factory=list)  # the first MAX_LISTED_GAPS
    gaps_total: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict:
        return {
            **self.base.as_json(),
            "as_of": self.as_of,
            "replay_from": self.replay_from,
            "replayed": self.replayed,
            "faithful_until": self.faithful_until,
            "gaps": self.gaps,
            "gaps_total": self.gaps_total,
            "seconds": round(self.seconds, 3),
        }


def _coverage(storage: Storage, table: str, known_at: datetime, as_of: datetime, replay: Replay) -> str | None:
    """None when the audit trail covers the whole window, else the instant its evidence ends."""
    as_of_text = instant_text(as_of)
    covered = max(instant_text(known_at), replay.newest or "")
    if covered >= as_of_text or first_change_after(storage, table, as_of) is not None:
        return None
    return covered


def restore_to_instant(
    storage: Storage,
    request: RestoreRequest,
    *,
    on_progress: Callable[[int], None] | None = None,
    reuse_safety: str | None = None,
    on_safety_backup: Callable[[str], None] | None = None,
) -> PointInTimeResult:
    """Restore the newest known state finished by request.as_of, then replay the audited changes from
    that state's start up to as_of into the same target. With dry_run, count and write nothing."""
    started = time.monotonic()
    checked = check_point_in_time(storage, request)
    manifest, target, as_of = checked.manifest, checked.target, checked.as_of
    plan = {
        "table": request.table,
        "backup": manifest.backup,
        "target": target,
        "mode": request.mode,
        "filter": request.filter,
        "replay_audit": True,
        "as_of": instant_text(as_of),
    }
    # The audit trail is read before anything is written: a failure here leaves the target untouched.
    with closing(Replay(checked.predicate, erasures.load(storage, request.table))) as replay:
        for change in read_changes(storage, request.table, checked.replay_from, as_of):
            replay.add(change)
        covered = _coverage(storage, request.table, checked.known_at, as_of, replay)

        # One operation, one pair of entries, begun once the trail is read: the backup part and the
        # replay are reported together.
        audit = operation_entries(storage, "RESTORE", request.actor, target, plan, record=not request.dry_run)
        with audit as entries:
            base_request = replace_fields(request, backup=manifest.backup, as_of=None, target=target, resolved=None)
            base = restore(
                storage,
                base_request,
                on_progress=on_progress,
                reuse_safety=reuse_safety,
                on_safety_backup=on_safety_backup,
                whole_state=False,  # the replay goes on top: the table will not be the backup's state
                within=entries,
            )
            base.chosen = checked.chosen
            replay_from = instant_text(checked.replay_from)
            result = PointInTimeResult(base=base, as_of=instant_text(as_of), replay_from=replay_from)
            client = storage.tables.get_table_client(target)
            with telemetry.operation("replay", target, backup=manifest.backup):
                operations = replay.operations(client)
                if request.dry_run:
                    result.replayed = sum(1 for _ in operations)
                else:
                    done = base.restored + base.deleted
                    report = (lambda count: on_progress(done + count)) if on_progress else None
                    workers = storage.settings.restore_workers
                    counted = entries.counting(report, offset=done)
                    outcome = submit_operations(client, operations, workers=workers, on_progress=counted)
                    result.replayed = outcome.handled
                telemetry.record_volume("replay", target, result.replayed)

            gaps, result.gaps_total = replay.gaps(MAX_LISTED_GAPS)
            if covered is not None:
                reason = (
                    f"no audited change to {request.table} after {covered}: changes up to {result.as_of} "
                    "may not be audited yet (or there were none)"
                )
                gaps, result.gaps_total = [*gaps, _gap(covered, None, reason)][:MAX_LISTED_GAPS], result.gaps_total + 1
            open_gap = replay.first_open_gap()
            result.faithful_until = min(
                [result.as_of, *([covered] if covered else []), *([tick_before(open_gap)] if open_gap else [])]
            )
            result.gaps = gaps
            result.seconds = time.monotonic() - started
            entries.result = {
                "table": request.table,
                "filter": request.filter,
                "replay_audit": True,
                **result.as_json(),
            }
    log.info(
        "point-in-time restore %s: table=%s backup=%s target=%s as_of=%s replayed=%d faithful_until=%s gaps=%d "
        "actor=%s",
        "planned (dry run)" if request.dry_run else "complete",
        request.table,
        manifest.backup,
        target,
        result.as_of,
        result.replayed,
        result.faithful_until,
        result.gaps_total,
        request.actor,
        extra={"table": request.table, "backup": manifest.backup, "target": target, "actor": request.actor},
    )
    return result


# Undelete


def _audited_state(changes: list[Change]) -> tuple[dict | None, Change | None, Change | None, list[dict]]:
    """(state, the change it comes from, the last DELETE, gaps): the entity's last state before its
    last DELETE (or, without one, its last state) from the changes of one entity in time order."""
    gaps = []
    deletes = [index for index, change in enumerate(changes) if change.operation == "DELETE"]
    end = deletes[-1] if deletes else len(changes)
    deleted = changes[end] if deletes else None
    if deleted is not None:
        state, problem = deleted.entity("beforeData")
        if state is not None:
            return state, deleted, deleted, gaps
        gaps.append(_gap(deleted.timestamp, deleted.entity_key, problem))
    for change in reversed(changes[:end]):
        if change.operation == "DELETE":
            break  # deleted before as well: the audit trail holds no state in between
        state, problem = change.entity("afterData")
        if state is not None:
            return state, change, deleted, gaps
        gaps.append(_gap(change.timestamp, change.entity_key, problem))
        break  # the last change is unknown: an earlier image would be stale
    return None, None, deleted, gaps


def _backup_holding(storage: Storage, table: str, key: tuple[str, str], before: str | None) -> Manifest | None:
    """The newest complete backup of `table` taken before `before` (canonical instant) that holds `key`.
    A backup's entities are in key order, so each is read only up to where the key would be. Never a
    safety backup (an implicit choice: tablebackup.repository.catalog)."""
    wanted = _order(key)
    for backup_id, manifest in catalog.regular_manifests(storage.backups, table):
        try:
            if isinstance(manifest, DamagedBackup):
                raise manifest
            if before is not None and instant_text(manifest.started_at) >= before:
                continue
            if _holds(storage, manifest, wanted):
                return manifest
        except DamagedBackup as error:  # a backup restore would refuse: look at the older ones
            log.warning("undelete skips backup %s: %s", backup_id, error, extra={"table": table, "backup": backup_id})
    return None


def _holds(storage: Storage, manifest: Manifest, wanted: tuple[bytes, bytes]) -> bool:
    with closing(state_entities(storage.backups, manifest)) as entities:
        for entity in entities:
            found = _order((entity["PartitionKey"], entity["RowKey"]))
            if found >= wanted:
                return found == wanted
    return False


def undelete(
    storage: Storage,
    table: str,
    partition_key: str,
    row_key: str,
    *,
    target: str | None = None,
    since: datetime | None = None,
    dry_run: bool = False,
    actor: str = "unknown",
    allow_app_table: bool = False,
) -> dict:
    """Bring back one deleted entity: its DELETE entry's beforeData, else the afterData of its last
    INSERT/UPDATE before the DELETE, else the newest backup (taken before the DELETE) that holds it.
    The audit trail is searched from `since` (default: AUDIT_QUERY_DAYS ago) to now. Refuses an
    erased key, an entity the target holds, and an entity neither source has."""
    validate_table_name(table)
    target = addressed(
        storage, resolve_target(storage.settings, table, target, mode="missing", allow_app_table=allow_app_table)
    )
    for name, value in (("partition key", partition_key), ("row key", row_key)):
        if not isinstance(value, str):
            raise InvalidInput(f"the {name} must be a string")
    key = (partition_key, row_key)
    described = f"PartitionKey={partition_key!r} RowKey={row_key!r}"
    if erasures.load(storage, table).covers({"PartitionKey": partition_key, "RowKey": row_key}):
        raise InvalidInput(f"the entity {described} of table {table!r} was erased (GDPR): it is never restored")
    client = storage.tables.get_table_client(target)
    if _current(client, key) is not None:
        raise InvalidInput(
            f"table {target!r} already holds {described}: undelete only brings back a deleted entity "
            "(use restore to overwrite it)"
        )
    since = _utc(since) if since else datetime.now(UTC) - timedelta(days=storage.settings.audit_query_days)
    changes = list(read_changes(storage, table, since, None, partition_key=partition_key, row_key=row_key))
    state, source_change, deleted, gaps = _audited_state(changes)
    result = {
        "table": table,
        "target": target,
        "partitionKey": partition_key,
        "rowKey": row_key,
        "source": "audit",
        "backup": None,
        "audit_timestamp": None,
        "deleted_at": deleted.timestamp if deleted else None,
        "restored": 0,
        "dry_run": dry_run,
        "gaps": gaps,
    }
    manifest = None
    if state is None:
        manifest = _backup_holding(storage, table, key, deleted.timestamp if deleted else None)
    if state is None and manifest is None:
        raise NotFound(
            f"no earlier state of {described} of table {table!r}: the audit trail since "
            f"{instant_text(since)} has none and no backup{' taken before its DELETE' if deleted else ''} "
            "holds it (search further back with --since)"
        )
    plan = {
        "undelete": True,
        "table": table,
        "target": target,
        "partitionKey": partition_key,
        "rowKey": row_key,
        "source": "audit" if state is not None else "backup",
        "backup": manifest.backup if manifest is not None else None,
    }
    # One entity, one pair of entries: a restore from a backup reports into this pair, not its own.
    with operation_entries(storage, "RESTORE", actor, target, plan, record=not dry_run) as entries:
        if state is not None:
            result["audit_timestamp"] = source_change.timestamp
            if not dry_run:
                if not table_exists(storage, target):
                    create_table(storage, target)
                outcome = submit_operations(client, [("insert", state)], workers=1)  # insert: never overwrites
                if not outcome.written:
                    raise BackupError(
                        f"table {target!r} got {described} from another writer while undelete ran: nothing was written"
                    )
            result["restored"] = 1
        else:
            request = RestoreRequest(
                table=table,
                backup=manifest.backup,
                target=target,
                filter=_key_filter(partition_key, row_key),
                mode="missing",
                dry_run=dry_run,
                actor=actor,
            )
            restored = restore(storage, request, within=entries)
            result.update(source="backup", backup=manifest.backup, restored=restored.restored)
        entries.result = {"undelete": True, **result}
    log.info(
        "undelete %s: table=%s target=%s source=%s backup=%s audit_timestamp=%s actor=%s",
        "planned (dry run)" if dry_run else "complete",
        table,
        target,
        result["source"],
        result["backup"],
        result["audit_timestamp"],
        actor,
        extra={"table": table, "target": target, "actor": actor},
    )
    return result
