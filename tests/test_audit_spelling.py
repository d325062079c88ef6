"""Audit lookups by any spelling of a table's name, against real Azurite: the application sends
`Orders`, the operator types `orders` or `ORDERS` (Azure's table names are case-insensitive), and
`audit`, GET /api/audit, point-in-time replay, undelete and the status all find the entries, while a
table whose name merely sorts between the spellings is left out. And `audit` lists changes in the
order they happened, the order replay uses, not by RowKey."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import azure.functions as func
import orjson
import pytest
from azure.functions.queue import QueueMessage

from localdev.sample import seed_table
from tablebackup.audit.entries import entry_id
from tablebackup.audit.messages import instant_text
from tablebackup.audit.queries import entries_page, find_entries
from tablebackup.backup.archiver import backup_table
from tablebackup.restore.pointintime import restore_to_instant, undelete
from tablebackup.restore.restorer import RestoreRequest
from tablebackup.status.records import newest_audit_event
from tests.test_cli import run_cli
from tests.test_pointintime import Trail
from tests.wire import table_state

KEY = ("CANDIDATE", "0000001")


def _sent_as(table: str) -> str:
    """The spelling the application uses: `Orders...` for the table `orders...`."""
    return table[0].upper() + table[1:]


def _decoys(table: str) -> list[str]:
    """Other tables: one the service's spelling range holds (dropped client-side), one outside it."""
    return [table.upper() + "Z", "P" + table[1:]]


def _deliver(functions, table: str, key, at: datetime, *, operation="UPDATE", after=None, before=None, **fields):
    """One message through the registered audit writer; returns its message id."""
    message_id = fields.pop("message_id", f"msg-{uuid.uuid4()}")
    body = {
        "tableName": table,
        "operation": operation,
        "partitionKey": key[0],
        "rowKey": key[1],
        "userId": "app@example.com",
        "timestamp": instant_text(at),
        "beforeData": before,
        "afterData": after,
        **fields,
    }
    queued = QueueMessage(id=message_id, body=orjson.dumps(body), dequeue_count=1)
    assert functions["audit_writer"].get_user_function()(queued) is None
    return message_id


@pytest.fixture
def spelled(functions, audit_storage, unique_name):
    """A backed-up table `orders...`; after the backup the application updates KEY, audited as
    `Orders...`, and decoy tables get changes of the same key at the same time."""
    table = unique_name("orders")
    seed_table(audit_storage.tables, table, 10)
    manifest = backup_table(audit_storage, table)
    at = manifest.finished_at + timedelta(seconds=1)
    trail = Trail(audit_storage, table)
    trail.table = _sent_as(table)  # the application's spelling, in its audit messages
    after = {**trail.current(KEY), "name": "audited value"}
    trail.write(after, at)
    trail.write(after, at + timedelta(seconds=5))
    for decoy in _decoys(table):
        _deliver(functions, decoy, KEY, at, after={**after, "name": "decoy"})
    mine = find_entries(audit_storage, table=_sent_as(table), since=at, until=at + timedelta(seconds=5))
    assert [entry["tableName"] for entry in mine] == [_sent_as(table)] * 2
    return table, at, _ids(mine), after


def _ids(entries: list[dict]) -> list[str]:
    return [entry["messageId"] for entry in entries]


def test_audit_finds_entries_sent_under_another_spelling_and_nothing_else(audit_storage, spelled):
    table, at, mine, _after = spelled
    window = {"since": at - timedelta(minutes=1), "until": at + timedelta(minutes=1)}

    for typed in (table, table.upper(), _sent_as(table)):
        entries = find_entries(audit_storage, table=typed, **window)
        assert _ids(entries) == mine, typed
        assert {entry["tableName"] for entry in entries} == {_sent_as(table)}  # kept as sent
    for decoy in _decoys(table):
        assert [entry["tableName"] for entry in find_entries(audit_storage, table=decoy, **window)] == [decoy]


def test_cli_audit_table_matches_any_spelling(audit_storage, spelled):
    table, at, mine, _after = spelled
    window = ("--since", instant_text(at - timedelta(minutes=1)), "--until", instant_text(at + timedelta(minutes=1)))

    result = run_cli("audit", "--table", table, *window, "--json")

    assert result.returncode == 0, result.stderr
    assert _ids(orjson.loads(result.stdout)["entries"]) == mine


def test_get_audit_matches_any_spelling_and_pages_exactly(functions, spelled):
    table, at, mine, _after = spelled
    params = {"table": table.upper(), "since": instant_text(at - timedelta(minutes=1))}
    params["until"] = instant_text(at + timedelta(minutes=1))

    def get(extra: dict) -> dict:
        request = func.HttpRequest("GET", "http://localhost/api/audit", params={**params, **extra}, body=b"")
        response = functions["list_audit_entries"].get_user_function()(request)
        assert response.status_code == 200, response.get_body()
        return orjson.loads(response.get_body())

    assert _ids(get({})["entries"]) == mine
    first = get({"limit": "1"})
    second = get({"limit": "1", "continuation": first["continuation"]})
    assert (_ids(first["entries"]), _ids(second["entries"]), second["continuation"]) == ([mine[0]], [mine[1]], None)


def test_replay_applies_changes_sent_under_another_spelling(audit_storage, spelled, unique_name):
    table, at, _mine, after = spelled
    target = unique_name("at")

    result = restore_to_instant(
        audit_storage, RestoreRequest(table=table.upper(), as_of=at + timedelta(seconds=1), target=target)
    )

    assert result.replayed == 1 and result.gaps == []
    restored = table_state(audit_storage.tables.get_table_client(target))
    assert restored == table_state(Trail(audit_storage, table).client)  # the audited value, not the backup's
    assert restored[KEY]["name"] == ("Edm.String", after["name"])


def test_undelete_finds_the_delete_sent_under_another_spelling(functions, audit_storage, unique_name):
    table = unique_name("orders")
    seed_table(audit_storage.tables, table, 10)
    trail = Trail(audit_storage, table)
    trail.table = _sent_as(table)
    trail.write({**trail.current(KEY), "name": "only in the audit trail"}, datetime.now(UTC) - timedelta(minutes=6))
    deleted_at = datetime.now(UTC) - timedelta(minutes=5)
    trail.delete(KEY, deleted_at)

    result = undelete(audit_storage, table, *KEY)

    assert (result["source"], result["deleted_at"]) == ("audit", instant_text(deleted_at))
    assert trail.current(KEY)["name"] == "only in the audit trail"


def test_the_status_probe_sees_changes_sent_under_another_spelling(functions, audit_storage, unique_name):
    table = unique_name("orders")
    at = datetime(2026, 3, 4, 13, 14, 15, 250_000, tzinfo=UTC)
    _deliver(functions, _sent_as(table), KEY, at, after={"n": 1})
    _deliver(functions, table.upper() + "Z", KEY, at + timedelta(minutes=5), after={"n": 2})  # in range, not it
    now = at + timedelta(hours=1)

    assert newest_audit_event(audit_storage, table, now) == at.replace(microsecond=0)
    assert newest_audit_event(audit_storage, table.upper(), now) == at.replace(microsecond=0)
    assert newest_audit_event(audit_storage, "P" + table[1:], now) is None


def _ids_in_reverse_row_key_order(count: int) -> list[str]:
    """Message ids whose entries' RowKeys (one timestamp, then a uuid from the id) sort in the
    reverse of the order they are sent."""
    ids = [f"msg-{uuid.uuid4()}"]
    while len(ids) < count:
        candidate = f"msg-{uuid.uuid4()}"
        if str(entry_id(candidate)) < str(entry_id(ids[-1])):
            ids.append(candidate)
    return ids


def test_audit_lists_changes_of_one_instant_in_sequence_order_and_pages_exactly(functions, audit_storage, unique_name):
    table = unique_name("orders")
    at = datetime(2026, 3, 4, 8, 0, tzinfo=UTC)
    ids = _ids_in_reverse_row_key_order(3)
    for sequence, message_id in enumerate(ids, start=1):
        _deliver(functions, _sent_as(table), KEY, at, after={"n": sequence}, sequence=sequence, message_id=message_id)
    window = {"since": at - timedelta(minutes=1), "until": at + timedelta(minutes=1)}

    assert _ids(find_entries(audit_storage, table=table, **window)) == ids
    result = run_cli("audit", "--table", table, "--since", instant_text(window["since"]),
                     "--until", instant_text(window["until"]), "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert _ids(orjson.loads(result.stdout)["entries"]) == ids
    pages, token = [], None
    while True:  # a page may end between changes of one instant: the next starts right after it
        entries, token = entries_page(audit_storage, table=table.upper(), continuation=token, limit=1, **window)
        pages.append(_ids(entries))
        if token is None:
            break
    assert pages == [[ids[0]], [ids[1]], [ids[2]]]
