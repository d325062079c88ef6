"""Point-in-time restore (a backup, then the audit trail replayed up to an instant) and undelete,
against real Azurite: the table is changed and every change audited through the real writer, with
explicit timestamps, and restores to instants between the changes must equal the table's state at
that instant."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import azure.functions as func
import orjson
import pytest
from azure.functions.queue import QueueMessage

from localdev.host import QueueOutput, invoke
from localdev.sample import seed_table
from tablebackup.audit.client import AuditClient
from tablebackup.audit.entries import entry_id, record_operation
from tablebackup.audit.messages import instant_text
from tablebackup.audit.queries import find_entries
from tablebackup.audit.writer import handle_message
from tablebackup.backup.archiver import backup_table
from tablebackup.core.clients import Storage, blob_service
from tablebackup.core.entities import encode_line, writable
from tablebackup.core.errors import InvalidInput, NotFound
from tablebackup.core.settings import get_settings
from tablebackup.repository.erasures import erase
from tablebackup.restore.pointintime import restore_to_instant, tick_before, undelete
from tablebackup.restore.restorer import RestoreRequest
from tablebackup.storage.tablequery import iter_pages, odata_string
from tablebackup.storage.tablewriter import submit_operations
from tests.test_cli import run_cli
from tests.test_restore_functions import _status
from tests.wire import table_state, typed

A = ("CANDIDATE", "0000001")
B = ("CANDIDATE", "0000002")
C = ("CANDIDATE", "zzz-new")
E = ("EMPLOYEE", "0000006")


def _entity(key: tuple[str, str], name: str, salary: int, **extra) -> dict:
    """An entity in backup-line form with typed values, as the application's audit images carry them."""
    return {
        "PartitionKey": key[0],
        "RowKey": key[1],
        "name": name,
        "age": 30,
        "salaryCents": str(salary),
        "salaryCents@odata.type": "Edm.Int64",
        "reviewedAt": "2026-11-25T02:00:00.1234567Z",
        "reviewedAt@odata.type": "Edm.DateTime",
        "score": 2.0,
        "score@odata.type": "Edm.Double",
        **extra,
    }


class Trail:
    """The audited application: changes the table and reports each change to the audit writer."""

    def __init__(self, storage: Storage, table: str):
        self.storage, self.table = storage, table
        self.client = storage.tables.get_table_client(table)

    def current(self, key: tuple[str, str]) -> dict | None:
        query = f"PartitionKey eq {odata_string(key[0])} and RowKey eq {odata_string(key[1])}"
        for page in iter_pages(self.client, query_filter=query):
            if page:
                return writable(orjson.loads(encode_line(page[0])))
        return None

    def send(self, operation: str, key, at: datetime, *, before=None, after=None) -> str:
        timestamp = instant_text(at)
        message = {
            "tableName": self.table,
            "operation": operation,
            "partitionKey": key[0],
            "rowKey": key[1],
            "userId": "app@example.com",
            "timestamp": timestamp,
            "beforeData": before,
            "afterData": after,
        }
        assert handle_message(self.storage, orjson.dumps(message), f"msg-{uuid.uuid4()}") == "written"
        return timestamp

    def write(self, entity: dict, at: datetime, *, audit_after: bool = True) -> str:
        key = (entity["PartitionKey"], entity["RowKey"])
        before = self.current(key)
        submit_operations(self.client, [("replace", entity)], workers=1)
        operation = "UPDATE" if before else "INSERT"
        return self.send(operation, key, at, before=before, after=entity if audit_after else None)

    def delete(self, key, at: datetime, *, audit_before: bool = True) -> str:
        before = self.current(key)
        submit_operations(self.client, [("delete", {"PartitionKey": key[0], "RowKey": key[1]})], workers=1)
        return self.send("DELETE", key, at, before=before if audit_before else None)


@pytest.fixture
def history(audit_storage, unique_name):
    """A 25-entity table, its backup, then four audited changes a second apart after the backup:
    UPDATE A, DELETE B, INSERT C, UPDATE A again. Returns the trail, the backup, the change times
    and the table's state after each change (states[0]: at the backup)."""
    table = unique_name("pit")
    seed_table(audit_storage.tables, table, 25)
    trail = Trail(audit_storage, table)
    manifest = backup_table(audit_storage, table)
    states = [table_state(trail.client)]
    base = manifest.finished_at + timedelta(seconds=1)
    times = [base + timedelta(seconds=n) for n in range(4)]
    trail.write(_entity(A, "Ada, updated", 2**63 - 1, photo="AP8=", **{"photo@odata.type": "Edm.Binary"}), times[0])
    states.append(table_state(trail.client))
    trail.delete(B, times[1])
    states.append(table_state(trail.client))
    guid = {"id": "c9da6455-213d-42c9-9a79-3e9149a57833", "id@odata.type": "Edm.Guid"}
    trail.write(_entity(C, "Chloé, new", -(2**63), **guid), times[2])
    states.append(table_state(trail.client))
    trail.write(_entity(A, "Ada, again", 42, score="Infinity"), times[3])
    states.append(table_state(trail.client))
    return trail, manifest, times, states


def _pit(storage, table: str, as_of: datetime, **fields):
    return restore_to_instant(storage, RestoreRequest(table=table, as_of=as_of, **fields))


def test_restores_to_instants_between_changes_equal_the_table_at_that_instant(audit_storage, history, unique_name):
    trail, manifest, times, states = history
    half = timedelta(milliseconds=500)
    instants = [times[0] - half, times[0] + half, times[1], times[2] + half, times[3] + half]

    for step, instant in enumerate(instants):
        target = unique_name("at")
        result = _pit(audit_storage, trail.table, instant, target=target)

        assert table_state(audit_storage.tables.get_table_client(target)) == states[step], step
        body = result.as_json()
        assert (body["backup"], body["restored"], body["replayed"]) == (manifest.backup, 25, [0, 1, 2, 3, 3][step])
        assert body["as_of"] == instant_text(instant) and body["replay_from"] == instant_text(manifest.started_at)
        if step < 4:  # a later change exists: the audit trail covers the instant
            assert (body["faithful_until"], body["gaps"], body["gaps_total"]) == (instant_text(instant), [], 0)


def test_a_mirror_in_place_makes_the_table_its_state_at_the_instant(audit_storage, history):
    trail, _manifest, times, states = history

    result = _pit(audit_storage, trail.table, times[1] + timedelta(milliseconds=500), mode="mirror")

    assert table_state(trail.client) == states[2]  # C, inserted later, is gone; B stays deleted
    assert result.base.safety_backup and result.base.deleted == 1 and result.replayed == 2


def test_changes_made_while_the_backup_ran_are_replayed(audit_storage, unique_name):
    table = unique_name("during")
    seed_table(audit_storage.tables, table, 10)
    trail = Trail(audit_storage, table)
    manifest = backup_table(audit_storage, table)
    # The backup had read the entity before it changed: the change is after its start, not in it.
    during = manifest.started_at + (manifest.finished_at - manifest.started_at) / 2
    trail.write(_entity(A, "changed during the backup", 7), during)
    expected = table_state(trail.client)

    result = _pit(audit_storage, table, manifest.finished_at, target=unique_name("during"))

    assert table_state(audit_storage.tables.get_table_client(result.base.target)) == expected
    assert result.replayed == 1 and result.faithful_until == instant_text(manifest.finished_at)


def test_the_backup_must_have_finished_by_the_instant(audit_storage, history):
    trail, manifest, _times, _states = history

    with pytest.raises(NotFound, match="no complete backup finished at or before"):
        _pit(audit_storage, trail.table, manifest.finished_at - timedelta(microseconds=1), dry_run=True)


def test_a_filter_applies_to_replayed_changes_and_a_dry_run_writes_nothing(audit_storage, history, unique_name):
    trail, _manifest, times, states = history
    later = times[3] + timedelta(seconds=1)
    trail.write(_entity(E, "an employee", 5), later)  # outside the filter's partition
    moved = _entity(("CANDIDATE", "0000003"), "moves out of scope", 9, age=70)
    trail.write(moved, later + timedelta(seconds=1))
    trail.delete(("CANDIDATE", "0000004"), later + timedelta(seconds=2), audit_before=False)  # judged by the target
    trail.write(_entity(C, "Chloé, another", 1), later + timedelta(seconds=4))  # keeps the audit covering the instant
    as_of = later + timedelta(seconds=3)
    wanted = "PartitionKey eq 'CANDIDATE' and age lt 50"
    before = table_state(trail.client)
    target = unique_name("filtered")

    dry = _pit(audit_storage, trail.table, as_of, target=target, filter=wanted, dry_run=True)

    # A, B, C, 0000003 (its before image matched), 0000004 (no image; not in the never-created target).
    assert (dry.replayed, dry.base.dry_run, dry.faithful_until) == (4, True, instant_text(as_of))
    assert table_state(trail.client) == before
    assert target not in [t.name for t in audit_storage.tables.list_tables()]

    result = _pit(audit_storage, trail.table, as_of, target=target, filter=wanted)

    state_at = {key: value for key, value in before.items() if key != C}
    state_at[C] = states[3][C]
    restored = table_state(audit_storage.tables.get_table_client(target))
    in_scope = {key for key, value in state_at.items() if key[0] == "CANDIDATE" and value["age"][1] < 50}
    assert set(restored) == in_scope | {("CANDIDATE", "0000003")}  # the entity that moved out is at its state
    assert all(restored[key] == state_at[key] for key in restored)
    assert E not in restored and ("CANDIDATE", "0000004") not in restored
    assert result.replayed == 5  # the target now holds 0000004 (from the backup), so its DELETE is in scope


def test_erased_keys_are_never_replayed(audit_storage, history, unique_name):
    trail, _manifest, times, _states = history
    erase(audit_storage, trail.table, *C, reason="GDPR-1", actor="dpo")

    result = _pit(audit_storage, trail.table, times[3] + timedelta(hours=1), target=unique_name("erased"))

    assert C not in table_state(audit_storage.tables.get_table_client(result.base.target))
    assert result.replayed == 2  # A and B


def test_an_update_without_after_data_is_a_gap_and_faithful_until_stops_before_it(audit_storage, history, unique_name):
    trail, _manifest, times, states = history
    gap_at = trail.write(_entity(E, "not reported", 1), times[3] + timedelta(seconds=1), audit_after=False)
    after_gap = times[3] + timedelta(seconds=2)
    trail.write(_entity(A, "after the gap", 3), after_gap)
    expected = table_state(trail.client)
    expected[E] = states[4][E]  # the gap's entity keeps its earlier state

    result = _pit(audit_storage, trail.table, after_gap, target=unique_name("gap"))

    assert table_state(audit_storage.tables.get_table_client(result.base.target)) == expected
    assert result.gaps == [
        {
            "timestamp": gap_at,
            "entityKey": "EMPLOYEE:0000006",
            "reason": "UPDATE without afterData",
            "superseded": False,
        }
    ]
    assert result.faithful_until == tick_before(gap_at)
    assert tick_before("2026-11-25T00:00:00.0000000Z") == "2026-11-24T23:59:59.9999999Z"


def test_a_gap_a_later_change_overwrote_is_listed_but_not_limiting(audit_storage, history, unique_name):
    trail, _manifest, times, _states = history
    trail.write(_entity(E, "not reported", 1), times[3] + timedelta(seconds=1), audit_after=False)
    last = trail.write(_entity(E, "reported", 2), times[3] + timedelta(seconds=2))
    trail.write(_entity(A, "later", 3), times[3] + timedelta(seconds=3))

    result = _pit(audit_storage, trail.table, times[3] + timedelta(seconds=2), target=unique_name("over"))

    assert [gap["superseded"] for gap in result.gaps] == [True]
    assert result.faithful_until == last
    assert table_state(audit_storage.tables.get_table_client(result.base.target))[E]["name"][1] == "reported"


def test_an_unreadable_payload_is_a_gap(audit_storage, history, unique_name):
    trail, _manifest, times, _states = history
    big = _entity(E, "large", 1, **{f"text{i}": "x" * 30_000 for i in range(3)})  # afterData goes to a blob
    gap_at = trail.write(big, times[3] + timedelta(seconds=1))
    trail.write(_entity(A, "later", 3), times[3] + timedelta(seconds=2))
    container = blob_service(audit_storage.settings).get_container_client(
        audit_storage.settings.audit_payload_container
    )
    for blob in container.list_blobs():
        if blob.name.endswith("afterData.json"):
            container.delete_blob(blob.name)

    result = _pit(audit_storage, trail.table, times[3] + timedelta(seconds=2), target=unique_name("lost"))

    [gap] = result.gaps
    assert (gap["timestamp"], gap["entityKey"]) == (gap_at, "EMPLOYEE:0000006")
    assert gap["reason"].startswith("afterData is unreadable: audit payload blob") and "is missing" in gap["reason"]
    assert result.faithful_until == tick_before(gap_at) and result.replayed == 3


def test_an_instant_beyond_the_newest_audit_entry_is_a_gap(audit_storage, history, unique_name):
    trail, _manifest, times, states = history
    # The app's own entries are not changes: they neither replay nor extend the audit's coverage.
    record_operation(audit_storage, "IMPORT", "ops", trail.table, {"imported": 0})
    as_of = times[3] + timedelta(hours=1)

    result = _pit(audit_storage, trail.table, as_of, target=unique_name("beyond"))

    assert table_state(audit_storage.tables.get_table_client(result.base.target)) == states[4]
    newest = instant_text(times[3])
    assert result.gaps == [
        {
            "timestamp": newest,
            "entityKey": None,
            "reason": f"no audited change to {trail.table} after {newest}: changes up to {instant_text(as_of)} "
            "may not be audited yet (or there were none)",
            "superseded": False,
        }
    ]
    assert result.faithful_until == newest


def test_a_point_in_time_restore_is_audited(audit_storage, history, unique_name):
    trail, _manifest, times, _states = history
    target = unique_name("recorded")

    _pit(audit_storage, trail.table, times[1], target=target, actor="alice")

    entries = find_entries(audit_storage, table=target, operation="RESTORE", until=times[3] + timedelta(days=1))
    # One operation, one pair: the backup part and the replay are in it together.
    assert [(e["afterData"]["phase"], e["afterData"]["replay_audit"]) for e in entries] == [
        ("started", True),
        ("ended", True),
    ]
    details = entries[-1]["afterData"]
    assert details["outcome"] == "succeeded"
    assert (entries[-1]["userId"], details["replayed"], details["faithful_until"]) == (
        "alice",
        2,
        instant_text(times[1]),
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mode": "merge"}, "cannot replay the audit trail"),
        ({"backup": "latest"}, "give an as-of instant and no backup id"),
        ({"filter": "age gt"}, "invalid filter"),
        ({"target": "x"}, "invalid table name"),
    ],
)
def test_bad_requests_are_refused_before_anything_is_written(audit_storage, history, fields, message):
    trail, _manifest, times, _states = history
    before = table_state(trail.client)

    with pytest.raises(InvalidInput, match=message):
        _pit(audit_storage, trail.table, times[3], **fields)

    assert table_state(trail.client) == before


# Undelete


@pytest.fixture
def table_with_trail(audit_storage, unique_name):
    table = unique_name("undel")
    seed_table(audit_storage.tables, table, 10)
    trail = Trail(audit_storage, table)
    return trail, table_state(trail.client)


def test_undelete_takes_the_delete_entrys_before_data(audit_storage, table_with_trail):
    trail, original = table_with_trail
    deleted_at = trail.delete(A, datetime.now(UTC) - timedelta(minutes=5))

    result = undelete(audit_storage, trail.table, *A, actor="alice")

    assert table_state(trail.client) == original
    assert (result["source"], result["audit_timestamp"], result["deleted_at"], result["backup"]) == (
        "audit",
        deleted_at,
        deleted_at,
        None,
    )
    [started, entry] = find_entries(audit_storage, table=trail.table, operation="RESTORE")
    assert started["afterData"]["phase"] == "started" and entry["afterData"]["outcome"] == "succeeded"
    assert entry["afterData"]["undelete"] is True and entry["userId"] == "alice"
    with pytest.raises(InvalidInput, match="already holds"):
        undelete(audit_storage, trail.table, *A)


def test_undelete_without_before_data_takes_the_last_update(audit_storage, table_with_trail, unique_name):
    trail, _original = table_with_trail
    now = datetime.now(UTC)
    trail.write(_entity(A, "first", 1), now - timedelta(minutes=9))
    updated_at = trail.write(_entity(A, "last", 2), now - timedelta(minutes=8))
    last = table_state(trail.client)[A]
    trail.delete(A, now - timedelta(minutes=7), audit_before=False)
    target = unique_name("elsewhere")

    dry = undelete(audit_storage, trail.table, *A, target=target, dry_run=True)
    assert (dry["restored"], dry["dry_run"], dry["audit_timestamp"]) == (1, True, updated_at)
    assert target not in [t.name for t in audit_storage.tables.list_tables()]

    result = undelete(audit_storage, trail.table, *A, target=target)

    assert table_state(audit_storage.tables.get_table_client(target)) == {A: last}
    assert (result["source"], result["audit_timestamp"], result["gaps"][0]["reason"]) == (
        "audit",
        updated_at,
        "DELETE without beforeData",
    )


def test_undelete_falls_back_to_the_newest_backup_holding_it(audit_storage, table_with_trail):
    trail, original = table_with_trail
    manifest = backup_table(audit_storage, trail.table)
    trail.write(_entity(A, "changed, not reported", 3), datetime.now(UTC), audit_after=False)
    deleted_at = trail.delete(A, datetime.now(UTC), audit_before=False)
    backup_table(audit_storage, trail.table)  # after the delete: does not hold it

    result = undelete(audit_storage, trail.table, *A)

    assert table_state(trail.client) == original
    assert (result["source"], result["backup"], result["deleted_at"], result["restored"]) == (
        "backup",
        manifest.backup,
        deleted_at,
        1,
    )
    assert [gap["reason"] for gap in result["gaps"]] == ["DELETE without beforeData", "UPDATE without afterData"]


def test_undelete_refuses_what_neither_the_audit_nor_a_backup_has(audit_storage, table_with_trail):
    trail, _ = table_with_trail
    trail.delete(A, datetime.now(UTC) - timedelta(days=10))  # older than AUDIT_QUERY_DAYS
    backup_table(audit_storage, trail.table)  # taken after the delete

    with pytest.raises(NotFound, match=r"no earlier state of .*\(search further back with --since\)$") as refused:
        undelete(audit_storage, trail.table, "CANDIDATE", "never existed")
    assert "\n" not in str(refused.value)
    with pytest.raises(NotFound, match="no backup holds it"):
        undelete(audit_storage, trail.table, *A)

    result = undelete(audit_storage, trail.table, *A, since=datetime.now(UTC) - timedelta(days=11))
    assert result["source"] == "audit"


def test_undelete_refuses_an_erased_key(audit_storage, table_with_trail):
    trail, _ = table_with_trail
    trail.delete(A, datetime.now(UTC) - timedelta(minutes=5))
    erase(audit_storage, trail.table, *A, reason="GDPR-2", actor="dpo")

    with pytest.raises(InvalidInput, match="was erased"):
        undelete(audit_storage, trail.table, *A)
    assert A not in table_state(trail.client)


# Changes at the same instant


def _ids_in_reverse_row_key_order(count: int) -> list[str]:
    """Queue message ids whose entries' RowKeys (the same timestamp, then a uuid from the id) sort in
    the reverse of the order they are sent: RowKey order alone would replay them backwards."""
    ids = [f"msg-{uuid.uuid4()}"]
    while len(ids) < count:
        candidate = f"msg-{uuid.uuid4()}"
        if str(entry_id(candidate)) < str(entry_id(ids[-1])):
            ids.append(candidate)
    return ids


def _deliver_at_one_instant(functions, table: str, changes: list[tuple], at: datetime, **order) -> None:
    """Deliver (operation, key, before, after, fields) messages, all with timestamp `at`, through the
    registered audit writer, in this order, with adversarial message ids. `order` gives per-message
    `sequences` and/or `inserted` (queue insertion times) lists."""
    ids = _ids_in_reverse_row_key_order(len(changes))
    for index, (operation, key, before, after) in enumerate(changes):
        message = {
            "tableName": table,
            "operation": operation,
            "partitionKey": key[0],
            "rowKey": key[1],
            "userId": "app@example.com",
            "timestamp": instant_text(at),
            "beforeData": before,
            "afterData": after,
        }
        if "sequences" in order:
            message["sequence"] = order["sequences"][index]
        inserted = order["inserted"][index] if "inserted" in order else None
        queued = QueueMessage(id=ids[index], body=orjson.dumps(message), dequeue_count=1, insertion_time=inserted)
        assert functions["audit_writer"].get_user_function()(queued) is None


@pytest.fixture
def tick(audit_storage, unique_name):
    """A backed-up 25-entity table and an instant after its backup, plus a later one (so the audit
    trail covers the instant); the application deletes B and inserts it again at that one instant."""
    table = unique_name("tick")
    seed_table(audit_storage.tables, table, 25)
    trail = Trail(audit_storage, table)
    manifest = backup_table(audit_storage, table)
    at = manifest.finished_at + timedelta(seconds=1)
    before = trail.current(B)
    trail.send("UPDATE", A, at + timedelta(seconds=5), before=trail.current(A), after=trail.current(A))
    again = _entity(B, "Bea, back", 7)
    changes = [("DELETE", B, before, None), ("INSERT", B, None, again)]
    return trail, at, changes, again


def test_a_delete_then_insert_at_one_instant_replays_in_the_order_sent(functions, audit_storage, tick, unique_name):
    trail, at, changes, again = tick
    _deliver_at_one_instant(functions, trail.table, changes, at, sequences=[1, 2])
    target = unique_name("seq")

    body = _pit(audit_storage, trail.table, at + timedelta(seconds=1), target=target).as_json()

    assert table_state(audit_storage.tables.get_table_client(target))[B] == typed(again)
    assert (body["gaps"], body["faithful_until"]) == ([], instant_text(at + timedelta(seconds=1)))


def test_without_a_sequence_the_queue_insertion_time_orders_them(functions, audit_storage, tick, unique_name):
    trail, at, changes, again = tick
    sent = datetime(2026, 11, 25, 2, 0, 0, tzinfo=UTC)
    _deliver_at_one_instant(functions, trail.table, changes, at, inserted=[sent, sent + timedelta(seconds=1)])
    target = unique_name("inserted")

    body = _pit(audit_storage, trail.table, at + timedelta(seconds=1), target=target).as_json()

    assert table_state(audit_storage.tables.get_table_client(target))[B] == typed(again)
    assert body["gaps"] == []


def test_changes_at_one_instant_in_an_unknown_order_are_a_gap(functions, audit_storage, tick, unique_name):
    """Same timestamp, no sequence, the same insertion second: the order can't be established, so
    the result says so instead of claiming the instant."""
    trail, at, changes, _ = tick
    sent = datetime(2026, 11, 25, 2, 0, 0, tzinfo=UTC)
    _deliver_at_one_instant(functions, trail.table, changes, at, inserted=[sent, sent])
    as_of = at + timedelta(seconds=1)

    body = _pit(audit_storage, trail.table, as_of, target=unique_name("unknown")).as_json()

    [gap] = body["gaps"]
    assert (gap["timestamp"], gap["entityKey"], gap["superseded"]) == (instant_text(at), f"{B[0]}:{B[1]}", False)
    assert "unknown order" in gap["reason"]
    assert body["faithful_until"] == tick_before(instant_text(at))

    # A later change of the entity settles its state: the gap no longer limits faithfulness.
    later = at + timedelta(seconds=2)
    trail.send("UPDATE", B, later, before=None, after=_entity(B, "Bea, settled", 8))
    settled = _pit(audit_storage, trail.table, later, target=unique_name("settled")).as_json()
    assert [gap["superseded"] for gap in settled["gaps"]] == [True]
    assert settled["faithful_until"] == instant_text(later)


def test_tied_changes_that_leave_the_same_state_are_no_gap(functions, audit_storage, tick, unique_name):
    trail, at, _, _ = tick
    same = [("UPDATE", A, None, _entity(A, "Ada", 1)), ("UPDATE", A, None, _entity(A, "Ada", 1))]
    _deliver_at_one_instant(functions, trail.table, same, at)
    target = unique_name("same")

    body = _pit(audit_storage, trail.table, at + timedelta(seconds=1), target=target).as_json()

    assert body["gaps"] == [] and body["faithful_until"] == instant_text(at + timedelta(seconds=1))
    assert table_state(audit_storage.tables.get_table_client(target))[A] == typed(_entity(A, "Ada", 1))


def test_the_audit_client_sends_a_sequence_that_orders_one_instant(
    functions, audit_storage, azurite_connection_string, tick, unique_name
):
    """End to end: the application's AuditClient on the real queue, the writer fed what the queue
    delivers; the client's sequence alone orders a DELETE and an INSERT sent with one timestamp."""
    trail, at, changes, again = tick
    queue_name = f"audit-{uuid.uuid4().hex[:12]}"
    with AuditClient.from_connection_string(azurite_connection_string, queue_name) as producer:
        for operation, key, before, after in changes:
            producer.send(
                table=trail.table,
                operation=operation,
                partition_key=key[0],
                row_key=key[1],
                user_id="app@example.com",
                before=before,
                after=after,
                timestamp=at,
            )
        received = list(producer.queue.receive_messages(max_messages=32, visibility_timeout=60))
    assert len(received) == 2
    for message in reversed(received):  # delivered in the reverse order: the sequence must still tell
        body = base64.b64decode(message.content, validate=True)  # the host decodes, as host.json says
        queued = QueueMessage(id=message.id, body=body, dequeue_count=1, insertion_time=message.inserted_on)
        assert functions["audit_writer"].get_user_function()(queued) is None
    target = unique_name("client")

    body = _pit(audit_storage, trail.table, at + timedelta(seconds=1), target=target).as_json()

    assert table_state(audit_storage.tables.get_table_client(target))[B] == typed(again)
    assert body["gaps"] == []


# HTTP


def _post(body: dict) -> func.HttpRequest:
    return func.HttpRequest("POST", "http://localhost/api/restore", body=json.dumps(body).encode())


def test_post_restore_with_replay_audit(functions, audit_storage, history, unique_name):
    trail, _manifest, times, states = history
    target = unique_name("http")
    jobs = QueueOutput()

    response = functions["restore_table"].get_user_function()(
        _post({"table": trail.table, "asOf": times[2].isoformat(), "replayAudit": True, "target": target}), jobs
    )

    assert response.status_code == 200, response.get_body()
    body = orjson.loads(response.get_body())
    assert (body["replayed"], body["faithful_until"], body["gaps"]) == (3, instant_text(times[2]), [])
    assert jobs.value is None
    assert table_state(audit_storage.tables.get_table_client(target)) == states[3]


def test_a_large_point_in_time_restore_is_queued_with_its_replay(
    functions, audit_storage, history, monkeypatch, unique_name
):
    trail, _manifest, times, states = history
    monkeypatch.setenv("RESTORE_HTTP_MAX_ENTITIES", "10")
    get_settings.cache_clear()
    target = unique_name("queuedpit")
    jobs = QueueOutput()

    response = functions["restore_table"].get_user_function()(
        _post({"table": trail.table, "asOf": times[1].isoformat(), "replayAudit": True, "target": target}), jobs
    )

    assert response.status_code == 202
    operation = orjson.loads(response.get_body())["operation"]
    assert orjson.loads(_status(functions, operation).get_body())["request"]["replay_audit"] is True
    invoke(functions["restore_worker"].get_user_function(), func.QueueMessage(id="pit", body=jobs.value.encode()))
    status = orjson.loads(_status(functions, operation).get_body())
    assert status["status"] == "succeeded", status
    assert (status["result"]["replayed"], status["result"]["faithful_until"]) == (2, instant_text(times[1]))
    assert table_state(audit_storage.tables.get_table_client(target)) == states[2]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "give an as-of instant and no backup id"),
        ({"backup": "latest"}, "give an as-of instant and no backup id"),
        ({"asOf": "2026-11-25T00:00:00Z", "mode": "missing"}, "cannot replay the audit trail"),
        ({"asOf": "2026-11-25T00:00:00Z", "replayAudit": [1]}, "replayAudit"),
    ],
)
def test_post_restore_refuses_bad_replay_requests(functions, audit_storage, history, fields, message):
    trail, _manifest, _times, _states = history
    before = table_state(trail.client)

    response = functions["restore_table"].get_user_function()(
        _post({"table": trail.table, "replayAudit": True, **fields}), QueueOutput()
    )

    assert response.status_code == 400
    assert message in orjson.loads(response.get_body())["error"]
    assert table_state(trail.client) == before


# CLI


def test_cli_restore_replay_audit(audit_storage, history, unique_name):
    trail, manifest, times, states = history
    target = unique_name("cli")

    result = run_cli(
        "restore", "-t", trail.table, "--as-of", instant_text(times[1]), "--replay-audit", "--target", target, "--json"
    )

    assert result.returncode == 0, result.stderr
    body = orjson.loads(result.stdout)
    assert (body["backup"], body["replayed"], body["faithful_until"]) == (manifest.backup, 2, instant_text(times[1]))
    assert table_state(audit_storage.tables.get_table_client(target)) == states[2]
    human = run_cli("restore", "-t", trail.table, "--as-of", instant_text(times[3] + timedelta(hours=1)),
                    "--replay-audit", "--dry-run")  # fmt: skip
    assert human.returncode == 0, human.stderr
    assert "would replay 3 audited changes" in human.stdout and "gap at" in human.stdout


def test_cli_undelete_and_refusals(audit_storage, table_with_trail):
    trail, original = table_with_trail
    deleted_at = trail.delete(A, datetime.now(UTC) - timedelta(minutes=1))

    result = run_cli("undelete", "-t", trail.table, "--partition-key", A[0], "--row-key", A[1], "--json")

    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["audit_timestamp"] == deleted_at
    assert table_state(trail.client) == original
    for args, code, message in [
        (["restore", "-t", trail.table, "--backup", "latest", "--replay-audit"], 2, "--replay-audit requires --as-of"),
        (["restore", "-t", trail.table, "--replay-audit"], 2, "--replay-audit requires --as-of"),
        (["restore", "-t", trail.table, "--as-of", deleted_at, "--replay-audit", "--mode", "merge"], 2, "use --mode"),
        (["undelete", "-t", trail.table, "--partition-key", "P", "--row-key", "none"], 1, "no earlier state"),
        (["undelete", "-t", trail.table, "--partition-key", A[0], "--row-key", A[1]], 1, "already holds"),
        (["undelete", "-t", trail.table, "--partition-key", "P"], 2, "--row-key"),
    ]:
        refused = run_cli(*args)
        assert refused.returncode == code, (args, refused.stderr)
        [line] = refused.stderr.strip().splitlines()
        assert line.startswith("error: ") and message in line, line


def test_the_replay_state_is_kept_out_of_memory_and_streamed_in_the_service_key_order():
    """Final images live in a temporary SQLite file, keyed by UTF-16 code units: an astral key sorts
    before U+FFFD there (not in code point order), and a lone surrogate survives the round trip."""
    from tablebackup.repository.erasures import Erasures
    from tablebackup.restore.auditchanges import Change
    from tablebackup.restore.pointintime import MAX_LISTED_GAPS, Replay

    row_keys = ["\ufffd", "\U0001f600", "a", "lone \udc00"]
    replay = Replay(None, Erasures())
    for second, row_key in enumerate(row_keys):
        after = {"PartitionKey": "p", "RowKey": row_key, "n": second}
        replay.add(Change(f"2026-11-25T00:00:{second:02d}.0000000Z", "INSERT", "p", row_key, None, after))
    replay.add(Change("2026-11-25T00:00:10.0000000Z", "DELETE", "p", "a", {"PartitionKey": "p", "RowKey": "a"}, None))
    for index in range(MAX_LISTED_GAPS + 2):
        replay.add(Change(f"2026-11-25T00:01:{index:02d}.0000000Z", "UPDATE", "gap", f"{index:03d}", None, None))
    # Nothing per entity in memory (_tie: only the current run of changes tied at one instant).
    assert set(vars(replay)) == {"predicate", "erased", "newest", "_db", "_tie"} and replay._tie is None

    operations = list(replay.operations(None))
    listed, total = replay.gaps(MAX_LISTED_GAPS)
    first_open = replay.first_open_gap()
    replay.close()

    assert [(action, entity["RowKey"]) for action, entity in operations] == [
        ("delete", "a"),
        ("replace", "lone \udc00"),
        ("replace", "\U0001f600"),
        ("replace", "\ufffd"),
    ]
    assert operations[2][1]["n"] == 1
    assert (len(listed), total, first_open) == (MAX_LISTED_GAPS, MAX_LISTED_GAPS + 2, "2026-11-25T00:01:00.0000000Z")
    assert listed[0] == {
        "timestamp": "2026-11-25T00:01:00.0000000Z",
        "entityKey": "gap:000",
        "reason": "UPDATE without afterData",
        "superseded": False,
    }


def test_a_replay_with_more_gaps_than_listed_counts_them_all(audit_storage, history, unique_name):
    from tablebackup.restore.pointintime import MAX_LISTED_GAPS

    trail, _manifest, times, _states = history
    at = times[3]
    for index in range(MAX_LISTED_GAPS + 3):
        at = times[3] + timedelta(milliseconds=10 * (index + 1))
        trail.send("UPDATE", ("GAP", f"{index:03d}"), at, after=None)

    result = _pit(audit_storage, trail.table, at, target=unique_name("gaps"), dry_run=True)
    body = result.as_json()

    assert (len(body["gaps"]), body["gaps_total"], body["replayed"]) == (MAX_LISTED_GAPS, MAX_LISTED_GAPS + 3, 3)
    assert body["gaps"][0]["entityKey"] == "GAP:000" and body["faithful_until"] == tick_before(
        body["gaps"][0]["timestamp"]
    )
