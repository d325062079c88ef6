"""The audit trail against real Azurite: the entry schema, one entry per message however often it is
delivered, large images in blobs, rejected messages, queries that read only the days asked for, the
app's own operations, the producer's base64 round trip through a real queue, and the registered
functions run with real azure.functions objects."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import azure.functions as func
import orjson
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient

from localdev.azurite import connection_string, free_port
from localdev.sample import seed_table
from tablebackup.audit.client import AuditClient, audit_message
from tablebackup.audit.entries import entry_id, record_operation
from tablebackup.audit.queries import find_entries
from tablebackup.audit.writer import handle_message
from tablebackup.core.clients import Storage, blob_service
from tablebackup.core.errors import InvalidInput, StorageUnavailable
from tablebackup.core.settings import get_settings
from tests.faultproxy import FaultProxy
from tests.wire import keyed, typed, wire_entities

DROP = object()
BEFORE = {
    "PartitionKey": "CANDIDATE",
    "RowKey": "0000042",
    "name": "Zoë",
    "age": 30,
    "active": True,
    "salaryCents": "9223372036854775807",
    "salaryCents@odata.type": "Edm.Int64",
    "appliedAt": "2026-01-02T03:04:05.1234567Z",
    "appliedAt@odata.type": "Edm.DateTime",
    "score": 2.0,
    "score@odata.type": "Edm.Double",
}
AFTER = {**BEFORE, "name": "Zoë O'Neil", "age": 31}


def _message(**changes) -> dict:
    message = {
        "tableName": "candidates",
        "operation": "UPDATE",
        "partitionKey": "CANDIDATE",
        "rowKey": "0000042",
        "userId": "alice@example.com",
        "timestamp": "2026-11-25T02:00:00.1234567Z",
        "beforeData": BEFORE,
        "afterData": AFTER,
        **changes,
    }
    return {name: value for name, value in message.items() if value is not DROP}


def _deliver(functions, body, message_id: str, delivery: int = 1, inserted_at: datetime | None = None) -> None:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    # The worker's own class: its base, func.QueueMessage, takes no dequeue_count or insertion_time.
    message = QueueMessage(id=message_id, body=data, dequeue_count=delivery, insertion_time=inserted_at)
    assert functions["audit_writer"].get_user_function()(message) is None


def _rows(storage: Storage, table: str) -> list[dict]:
    if not list(storage.tables.query_tables(f"TableName eq '{table}'")):
        return []
    return wire_entities(storage.tables.get_table_client(table))


def _entries(storage: Storage) -> list[dict]:
    return _rows(storage, storage.settings.audit_table)


def _rejected(storage: Storage) -> list[dict]:
    return _rows(storage, storage.settings.audit_rejected_table)


def _payloads(storage: Storage):
    return blob_service(storage.settings).get_container_client(storage.settings.audit_payload_container)


def _utc(*parts) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def _port(connection: str, service: str) -> int:
    return int(re.search(rf"{service}Endpoint=http://127\.0\.0\.1:(\d+)/", connection).group(1))


# The registered functions


def test_the_audit_functions_are_registered_with_their_bindings(functions):
    writer = functions["audit_writer"].get_trigger().get_dict_repr()
    assert (writer["type"], writer["queueName"], writer["connection"]) == (
        "queueTrigger",
        "%AUDIT_QUEUE%",
        "AzureWebJobsStorage",
    )
    query = functions["list_audit_entries"].get_trigger()
    assert query.route == "audit"
    assert [str(m.value if hasattr(m, "value") else m) for m in query.methods] == ["GET"]
    assert query.auth_level == func.AuthLevel.FUNCTION


# Writing entries


def test_an_entry_has_the_exact_schema_and_reads_back_as_sent(functions, audit_storage):
    _deliver(functions, _message(), "msg-schema")

    [row] = _entries(audit_storage)
    assert typed(row, with_timestamp=False) == {
        "PartitionKey": ("Edm.String", "AUDIT_2026-11-25"),
        "RowKey": ("Edm.String", f"20261125T020000.1234567Z_{entry_id('msg-schema')}"),
        "tableName": ("Edm.String", "candidates"),
        "operation": ("Edm.String", "UPDATE"),
        "entityKey": ("Edm.String", "CANDIDATE:0000042"),
        "partitionKey": ("Edm.String", "CANDIDATE"),
        "rowKey": ("Edm.String", "0000042"),
        "userId": ("Edm.String", "alice@example.com"),
        "timestamp": ("Edm.DateTime", "2026-11-25T02:00:00.1234567Z"),
        "beforeData": ("Edm.String", orjson.dumps(BEFORE).decode()),
        "afterData": ("Edm.String", orjson.dumps(AFTER).decode()),
        "messageId": ("Edm.String", "msg-schema"),
    }
    assert find_entries(audit_storage, since=_utc(2026, 11, 25), until=_utc(2026, 11, 26)) == [
        {
            "id": row["RowKey"],
            "timestamp": "2026-11-25T02:00:00.1234567Z",
            "operation": "UPDATE",
            "tableName": "candidates",
            "entityKey": "CANDIDATE:0000042",
            "partitionKey": "CANDIDATE",
            "rowKey": "0000042",
            "userId": "alice@example.com",
            "messageId": "msg-schema",
            "beforeData": BEFORE,
            "afterData": AFTER,
        }
    ]


def test_row_keys_sort_by_time_and_partitions_are_utc_days(functions, audit_storage):
    sent = [
        "2026-11-25T02:00:00.1234568Z",
        "2026-11-25T02:00:00Z",
        "2026-11-25T03:59:59.9999999+02:00",  # 01:59:59.9999999 UTC
        "2026-11-25T02:00:00.12345Z",
        "2026-11-25T10:00:00",  # no offset: UTC
        "2026-11-26T00:30:00+01:00",  # still the 25th in UTC
    ]
    for index, timestamp in enumerate(sent):
        _deliver(functions, _message(timestamp=timestamp, beforeData=None), f"msg-{index}")

    rows = _entries(audit_storage)  # as the service orders them: by PartitionKey, then RowKey
    assert [row["timestamp"] for row in rows] == [
        "2026-11-25T01:59:59.9999999Z",
        "2026-11-25T02:00:00.0000000Z",
        "2026-11-25T02:00:00.1234500Z",
        "2026-11-25T02:00:00.1234568Z",
        "2026-11-25T10:00:00.0000000Z",
        "2026-11-25T23:30:00.0000000Z",
    ]
    assert {row["PartitionKey"] for row in rows} == {"AUDIT_2026-11-25"}
    assert all(re.fullmatch(r"\d{8}T\d{6}\.\d{7}Z_[0-9a-f-]{36}", row["RowKey"]) for row in rows)
    assert [row["beforeData"] for row in rows] == ["null"] * len(sent)


def test_a_redelivered_message_writes_exactly_one_entry(functions, audit_storage):
    body = orjson.dumps(_message())

    outcomes = [handle_message(audit_storage, body, "msg-again", delivery=delivery) for delivery in (1, 2)]
    _deliver(functions, body, "msg-again", delivery=3)

    assert outcomes == ["written", "duplicate"]
    assert len(_entries(audit_storage)) == 1
    _deliver(functions, body, "msg-another")  # the same change sent again is another message
    assert len(_entries(audit_storage)) == 2


def test_explicit_keys_may_contain_colons_and_entity_key_splits_on_the_first(functions, audit_storage):
    _deliver(functions, _message(partitionKey="a:b", rowKey="c:d", timestamp="2026-11-25T01:00:00Z"), "msg-explicit")
    seed = _message(
        timestamp="2026-11-25T02:00:00Z", partitionKey=DROP, rowKey=DROP, entityKey="TENANT:2026-11-25T02:00"
    )
    _deliver(functions, seed, "msg-seed")

    explicit, split = _entries(audit_storage)
    assert (explicit["partitionKey"], explicit["rowKey"], explicit["entityKey"]) == ("a:b", "c:d", "a:b:c:d")
    assert (split["partitionKey"], split["rowKey"], split["entityKey"]) == (
        "TENANT",
        "2026-11-25T02:00",
        "TENANT:2026-11-25T02:00",
    )


def test_a_large_image_goes_to_a_blob_once_and_reads_back_exactly(functions, audit_storage):
    after = {"PartitionKey": "P", "RowKey": "R", **{f"text{i:02d}": chr(ord("a") + i) * 32_000 for i in range(15)}}
    before = {"PartitionKey": "P", "RowKey": "R", "emoji": "😀" * 20_000}  # 20,000 characters, 80,000 bytes as UTF-16
    message = _message(partitionKey="P", rowKey="R", beforeData=before, afterData=after)

    for delivery in (1, 2):
        _deliver(functions, message, "msg-large", delivery=delivery)

    [row] = _entries(audit_storage)
    assert "beforeData" not in row and "afterData" not in row
    prefix = f"{row['PartitionKey']}/{row['RowKey']}"
    assert (row["beforeDataBlob"], row["afterDataBlob"]) == (f"{prefix}/beforeData.json", f"{prefix}/afterData.json")
    assert typed(row)["afterDataBlob"][0] == "Edm.String"
    container = _payloads(audit_storage)
    assert sorted(blob.name for blob in container.list_blobs()) == [
        f"{prefix}/afterData.json",
        f"{prefix}/beforeData.json",
    ]
    assert orjson.loads(container.download_blob(row["afterDataBlob"]).readall()) == after
    [entry] = find_entries(audit_storage, table="candidates", since=_utc(2026, 11, 25), until=_utc(2026, 11, 25, 3))
    assert entry["afterData"] == after and entry["beforeData"] == before


def test_an_entry_whose_payload_blob_is_gone_is_reported_and_the_others_still_read(functions, audit_storage):
    large = {"PartitionKey": "P", "RowKey": "R", "text": "x" * 40_000}
    _deliver(functions, _message(partitionKey="P", rowKey="R", afterData=large), "msg-gone")
    _deliver(functions, _message(partitionKey="P", rowKey="S", timestamp="2026-11-25T02:00:01Z"), "msg-kept")
    container = _payloads(audit_storage)
    for blob in container.list_blobs():
        container.delete_blob(blob.name)

    entries = find_entries(audit_storage, table="candidates", since=_utc(2026, 11, 25), until=_utc(2026, 11, 25, 3))

    assert [entry["rowKey"] for entry in entries] == ["R", "S"]
    assert entries[0]["afterData"] is None and "is missing" in entries[0]["unreadable"]["afterData"]
    assert "unreadable" not in entries[1] and entries[1]["afterData"] is not None


def test_an_image_at_the_property_limit_stays_in_the_entry(functions, audit_storage):
    # {"x":"..."} of exactly 32,768 characters: 64 KiB as UTF-16, the most a String property holds.
    image = {"x": "y" * (32_768 - len('{"x":""}'))}

    _deliver(functions, _message(beforeData=None, afterData=image), "msg-limit")

    [row] = _entries(audit_storage)
    assert len(row["afterData"]) == 32_768 and "afterDataBlob" not in row
    assert not _payloads(audit_storage).exists()


# Rejected messages


def _json(**changes) -> bytes:
    return json.dumps(_message(**changes)).encode()  # the standard library writes integers beyond 64 bits


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"tableName": "candidates", "score": NaN}', "NaN is not JSON"),
        ("ünïcödé".encode("latin-1"), "not UTF-8"),
        (b"x" * 40_000, "not JSON"),  # too large for a String property: the body goes to a blob
        (_json(operation="UPSERT"), "operation: Input should be 'INSERT', 'UPDATE' or 'DELETE'"),
        (_json(operation="RESTORE"), "operation:"),  # the app's own operations never come from the queue
        (_json(partitionKey=DROP, rowKey=DROP), "give partitionKey and rowKey"),
        (_json(rowKey=DROP), "give partitionKey and rowKey"),
        (_json(partitionKey=DROP, rowKey=DROP, entityKey="no colon"), "entityKey must be"),
        (_json(entityKey="CANDIDATE:other"), "entityKey does not match"),
        (_json(timestamp="yesterday"), "timestamp: 'yesterday' is not an ISO-8601 instant"),
        (_json(timestamp="2026-02-30T00:00:00Z"), "timestamp: '2026-02-30T00:00:00Z' is not a valid instant"),
        (_json(timestamp="1600-12-31T23:59:59Z"), "outside 1601-9999"),
        (_json(timestamp=1764036000), "timestamp: Input should be a valid string"),
        (_json(timestamp=DROP), "timestamp: Field required"),
        (_json(userId=DROP), "userId: Field required"),
        (_json(tableName="no-dashes"), "invalid table name"),
        (_json(afterData="a string"), "afterData"),
        (_json(afterData={"big": 2**70}), "beyond 64 bits"),
        (_json(colour="blue"), "colour: Extra inputs are not permitted"),
        (_json(sequence=-1), "sequence: Input should be greater than or equal to 0"),
        (_json(sequence="12"), "sequence: Input should be a valid integer"),
        (_json(sequence=True), "sequence: Input should be a valid integer"),
        (_json(sequence=2**63), "beyond 64 bits"),
    ],
    ids=lambda value: value[:40] if isinstance(value, str) else None,
)
def test_a_bad_message_is_kept_with_its_reason_and_writes_no_entry(functions, audit_storage, body, reason):
    inserted = _utc(2026, 11, 25, 8, 30)

    for delivery in (1, 2):  # a redelivery is kept once too
        _deliver(functions, body, "msg-bad", delivery=delivery, inserted_at=inserted)

    assert _entries(audit_storage) == []
    [row] = _rejected(audit_storage)
    assert reason in row["reason"] and "\n" not in row["reason"]
    assert (row["PartitionKey"], row["messageId"], row["dequeueCount"]) == ("REJECTED_2026-11-25", "msg-bad", 1)
    assert row["RowKey"] == f"20261125T083000.0000000Z_{entry_id('msg-bad')}"
    assert typed(row)["insertedAt"] == ("Edm.DateTime", "2026-11-25T08:30:00.0000000Z")
    if len(body) > 32_768 or b"\xfc" in body:  # too large for a String property, or not UTF-8
        assert "body" not in row and row["bodyBlob"].startswith("rejected/REJECTED_2026-11-25/")
        assert _payloads(audit_storage).download_blob(row["bodyBlob"]).readall() == body
    else:
        assert row["body"].encode() == body and "bodyBlob" not in row


def test_an_entry_the_service_refuses_is_rejected_instead_of_retried(
    functions, audit_storage, env, monkeypatch, azurite_connection_string
):
    with FaultProxy(_port(azurite_connection_string, "Table")) as proxy:
        blob = _port(azurite_connection_string, "Blob")
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string(blob, blob, proxy.port))
        get_settings.cache_clear()
        proxy.failures = [400]

        assert handle_message(Storage.from_settings(), _json(), "msg-refused") == "rejected"

    assert _entries(audit_storage) == []
    [row] = _rejected(audit_storage)
    assert "refused the entity" in row["reason"] and row["body"] == _json().decode()


def test_a_storage_failure_raises_so_the_host_delivers_again(
    functions, audit_storage, env, monkeypatch, azurite_connection_string
):
    with FaultProxy(_port(azurite_connection_string, "Table")) as proxy:
        blob = _port(azurite_connection_string, "Blob")
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string(blob, blob, proxy.port))
        monkeypatch.setenv("STORAGE_RETRIES", "0")
        get_settings.cache_clear()
        proxy.failures = [503]

        with pytest.raises(StorageUnavailable):
            _deliver(functions, _json(), "msg-later", delivery=1)
        assert _rejected(audit_storage) == [] and _entries(audit_storage) == []

        _deliver(functions, _json(), "msg-later", delivery=2)

    assert [row["messageId"] for row in _entries(audit_storage)] == ["msg-later"]


# Queries


@pytest.fixture
def several_days(functions, audit_storage):
    """Five entries over nine days, delivered out of order. Returns their message ids by name."""
    events = {
        "e1": _message(tableName="orders", operation="INSERT", partitionKey="O'Brien", rowKey="1", beforeData=None,
                       timestamp="2026-03-01T23:59:59.9999999Z"),
        "e2": _message(userId="bob", rowKey="7", timestamp="2026-03-02T00:00:00Z"),
        "e3": _message(operation="DELETE", rowKey="8", afterData=None, timestamp="2026-03-02T12:00:00.5Z"),
        "e4": _message(tableName="orders", partitionKey="O'Brien", rowKey="1", userId="bob",
                       timestamp="2026-03-04T08:00:00Z"),
        "e5": _message(operation="INSERT", userId="carol", beforeData=None, timestamp="2026-03-09T00:00:00Z"),
    }  # fmt: skip
    for name in ("e3", "e5", "e1", "e4", "e2"):
        _deliver(functions, events[name], name)
    return audit_storage


def _ids(entries: list[dict]) -> list[str]:
    return [entry["messageId"] for entry in entries]


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ({}, ["e1", "e2", "e3", "e4"]),
        ({"table": "orders"}, ["e1", "e4"]),
        ({"partition_key": "O'Brien"}, ["e1", "e4"]),
        ({"partition_key": "O'Brien", "row_key": "1"}, ["e1", "e4"]),
        ({"row_key": "8"}, ["e3"]),
        ({"operation": "update"}, ["e2", "e4"]),
        ({"user": "alice@example.com"}, ["e1", "e3"]),
        ({"table": "candidates", "user": "alice@example.com", "operation": "DELETE"}, ["e3"]),
        ({"user": "nobody"}, []),
        ({"since": _utc(2026, 3, 2), "until": _utc(2026, 3, 2, 12, 0, 0, 500_000)}, ["e2", "e3"]),
        ({"since": _utc(2026, 3, 1, 23, 59, 59, 999_999)}, ["e1", "e2", "e3", "e4"]),
        ({"until": _utc(2026, 3, 1, 23, 59, 59, 999_999)}, []),  # e1 is 0.1 µs later
        ({"since": datetime(2026, 3, 4, 9), "until": datetime(2026, 3, 9)}, ["e5"]),  # naive is UTC
        ({"since": datetime(2026, 3, 2, 3, tzinfo=timezone(timedelta(hours=3)))}, ["e2", "e3", "e4"]),
    ],
)
def test_find_entries_filters_in_time_order(several_days, criteria, expected):
    criteria = {"since": _utc(2026, 3, 1), "until": _utc(2026, 3, 5), **criteria}

    entries = find_entries(several_days, **criteria)

    assert _ids(entries) == expected
    assert all(set(entry) >= {"operation", "timestamp", "userId", "entityKey", "beforeData"} for entry in entries)


def test_a_time_range_reads_only_its_days_partitions(several_days, env, monkeypatch, azurite_connection_string):
    with FaultProxy(_port(azurite_connection_string, "Table")) as proxy:
        blob = _port(azurite_connection_string, "Blob")
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string(blob, blob, proxy.port))
        get_settings.cache_clear()

        entries = find_entries(
            Storage.from_settings(), user="bob", since=_utc(2026, 3, 1, 12), until=_utc(2026, 3, 4, 9)
        )

    filters = [parse_qs(urlsplit(path).query)["$filter"][0] for method, path, _ in proxy.seen if method == "GET"]
    assert [re.match(r"PartitionKey eq '([^']*)' and ", f).group(1) for f in filters] == [
        "AUDIT_2026-03-01",
        "AUDIT_2026-03-02",
        "AUDIT_2026-03-03",
        "AUDIT_2026-03-04",
    ]
    assert all("userId eq 'bob'" in f for f in filters)
    assert _ids(entries) == ["e2", "e4"]


def test_the_default_range_is_the_last_audit_query_days(functions, audit_storage, monkeypatch):
    now = datetime.now(UTC)
    for name, age in (("recent", timedelta(days=1)), ("old", timedelta(days=9))):
        _deliver(functions, _message(timestamp=(now - age).isoformat()), name)

    assert _ids(find_entries(audit_storage)) == ["recent"]
    assert _ids(find_entries(audit_storage, until=now - timedelta(days=8))) == ["old"]
    assert _ids(find_entries(audit_storage, since=now - timedelta(days=10))) == ["old", "recent"]
    monkeypatch.setenv("AUDIT_QUERY_DAYS", "10")
    get_settings.cache_clear()
    assert _ids(find_entries(Storage.from_settings())) == ["old", "recent"]


def test_find_entries_without_an_audit_table_finds_nothing(audit_storage):
    assert find_entries(audit_storage) == []


@pytest.mark.parametrize(
    ("criteria", "message"),
    [
        ({"since": _utc(2026, 3, 5), "until": _utc(2026, 3, 1)}, "is after until"),
        ({"since": datetime.now(UTC) + timedelta(days=1)}, "is after until"),
        ({"since": _utc(2016, 1, 1), "until": _utc(2016, 1, 1) + timedelta(days=3660, microseconds=1)}, "3660 days"),
        ({"until": datetime.min.replace(tzinfo=UTC)}, "outside the range"),
        ({"operation": "UPSERT"}, "invalid operation 'UPSERT'"),
        ({"table": "bad-name"}, "invalid table name"),
        ({"user": "x" * 2000}, "invalid userId"),
        ({"partition_key": 42}, "invalid partitionKey"),
    ],
)
def test_find_entries_refuses_bad_criteria_in_one_line(audit_storage, criteria, message):
    with pytest.raises(InvalidInput, match=re.escape(message)) as refused:
        find_entries(audit_storage, **criteria)
    assert "\n" not in str(refused.value)


def test_the_longest_range_is_allowed(audit_storage):
    assert find_entries(audit_storage, since=_utc(2016, 1, 1), until=_utc(2016, 1, 1) + timedelta(days=3660)) == []


# GET /api/audit


def _get(functions, params: dict) -> tuple[int, dict]:
    request = func.HttpRequest("GET", "http://localhost/api/audit", params=params, body=b"")
    response = functions["list_audit_entries"].get_user_function()(request)
    assert response.mimetype == "application/json"
    return response.status_code, orjson.loads(response.get_body())


def test_get_audit_takes_the_filters_as_query_parameters(functions, several_days):
    status, body = _get(
        functions,
        {
            "table": "orders",
            "partitionKey": "O'Brien",
            "rowKey": "1",
            "operation": "UPDATE",
            "user": "bob",
            "since": "2026-03-01T00:00:00Z",
            "until": "2026-03-05T00:00:00+00:00",
        },
    )

    assert status == 200
    assert _ids(body["entries"]) == ["e4"]
    assert (
        body["entries"][0]["beforeData"] == BEFORE and body["entries"][0]["timestamp"] == "2026-03-04T08:00:00.0000000Z"
    )
    status, body = _get(functions, {"since": "2026-03-01T00:00:00Z", "until": "2026-03-05T00:00:00Z"})
    assert (status, _ids(body["entries"])) == (200, ["e1", "e2", "e3", "e4"])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"tabel": "orders"}, "tabel"),
        ({"partition_key": "P"}, "partition_key"),
        ({"since": "last week"}, "since"),
        ({"since": "2026-03-05T00:00:00Z", "until": "2026-03-01T00:00:00Z"}, "is after until"),
        ({"since": "2000-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "3660 days"),
        ({"operation": "UPSERT"}, "invalid operation"),
        ({"table": "bad-name"}, "invalid table name"),
    ],
)
def test_get_audit_refuses_bad_queries_with_a_one_line_400(functions, audit_storage, params, message):
    status, body = _get(functions, params)

    assert status == 400
    assert message in body["error"] and "\n" not in body["error"]


def _pages_of(functions, params: dict) -> list[list[str]]:
    """Follow the continuation from page to page; each next request names only the criteria."""
    pages, token = [], None
    while True:
        status, body = _get(functions, {**params, **({"continuation": token} if token else {})})
        assert status == 200, body
        pages.append(_ids(body["entries"]))
        token = body["continuation"]
        if token is None:
            return pages
        params = {name: value for name, value in params.items() if name not in ("since", "until")}


RANGE = {"since": "2026-03-01T00:00:00Z", "until": "2026-03-09T00:00:00Z"}


def test_get_audit_pages_with_a_continuation(functions, several_days):
    assert _pages_of(functions, {**RANGE, "limit": "2"}) == [["e1", "e2"], ["e3", "e4"], ["e5"]]
    assert _pages_of(functions, {**RANGE, "limit": "1", "user": "bob"}) == [["e2"], ["e4"]]
    assert _pages_of(functions, {**RANGE, "limit": "5"}) == [["e1", "e2", "e3", "e4", "e5"]]
    assert _pages_of(functions, {**RANGE, "user": "nobody"}) == [[]]
    status, body = _get(functions, {**RANGE, "limit": "4"})  # the range may be repeated exactly
    status, body = _get(functions, {**RANGE, "continuation": body["continuation"]})
    assert (status, _ids(body["entries"]), body["continuation"]) == (200, ["e5"], None)


def test_a_page_also_ends_at_its_byte_budget(functions, several_days, monkeypatch):
    from tablebackup.audit import queries

    monkeypatch.setattr(queries, "PAGE_BYTES", 1)  # every entry is over it: one entry per page

    assert _pages_of(functions, RANGE) == [["e1"], ["e2"], ["e3"], ["e4"], ["e5"]]


def _token_body(token: str) -> dict:
    return orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


def _encode_token(body: dict, **options) -> str:
    return base64.urlsafe_b64encode(json.dumps(body, **options).encode()).decode().rstrip("=")


def test_get_audit_refuses_any_continuation_it_did_not_make(functions, several_days):
    status, body = _get(functions, {**RANGE, "limit": "1"})
    token = body["continuation"]
    held = _token_body(token)
    reversed_range = {**held, "since": "2026-03-10T00:00:00.0000000Z"}
    refused = {
        "other criteria": ({**RANGE, "user": "bob", "continuation": token}, "other criteria"),
        "another since": ({"since": "2026-03-02T00:00:00Z", "continuation": token}, "another since"),
        "another until": ({"until": "2026-03-08T00:00:00Z", "continuation": token}, "another until"),
        "cut": ({"continuation": token[:-3]}, "invalid continuation"),
        "not base64url": ({"continuation": token + "+"}, "invalid continuation"),
        "padded": ({"continuation": token + "=" * (-len(token) % 4) or "=="}, "invalid continuation"),
        "spaces in its JSON": ({"continuation": _encode_token(held, indent=1)}, "invalid continuation"),
        "since after until": (
            {"continuation": _encode_token(reversed_range, separators=(",", ":"))},
            "is after until",
        ),
        "version true": (
            {"continuation": _encode_token({**held, "v": True}, separators=(",", ":"))},
            "invalid continuation",
        ),
        "extra field": (
            {"continuation": _encode_token({**held, "x": 1}, separators=(",", ":"))},
            "invalid continuation",
        ),
        "outside its range": (
            {"continuation": _encode_token({**held, "partition": "AUDIT_2026-04-01"}, separators=(",", ":"))},
            "outside its own time range",
        ),
        "not a date": (
            {"continuation": _encode_token({**held, "partition": "AUDIT_2026-02-30"}, separators=(",", ":"))},
            "invalid continuation",
        ),
        "limit 0": ({**RANGE, "limit": "0"}, "limit"),
        "limit 1001": ({**RANGE, "limit": "1001"}, "invalid limit"),
        "limit +5": ({**RANGE, "limit": "+5"}, "limit"),
        "limit 1e1": ({**RANGE, "limit": "1e1"}, "limit"),
    }
    assert _encode_token(held, separators=(",", ":")) == token  # the forgeries differ only where named
    for case, (params, message) in refused.items():
        status, answer = _get(functions, params)
        assert status == 400 and message in answer["error"] and "\n" not in answer["error"], case


def test_iter_entries_reads_the_days_as_they_are_consumed(several_days, env, monkeypatch, azurite_connection_string):
    from tablebackup.audit.queries import iter_entries

    with FaultProxy(_port(azurite_connection_string, "Table")) as proxy:
        blob = _port(azurite_connection_string, "Blob")
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string(blob, blob, proxy.port))
        get_settings.cache_clear()
        entries = iter_entries(Storage.from_settings(), since=_utc(2026, 3, 1), until=_utc(2026, 3, 9))
        first = next(entries)
        read_first = sum(method == "GET" for method, _, _ in proxy.seen)
        rest = list(entries)
        read_all = sum(method == "GET" for method, _, _ in proxy.seen)

    assert _ids([first, *rest]) == ["e1", "e2", "e3", "e4", "e5"]
    assert (read_first, read_all) == (1, 9)


# The app's own operations


def test_record_operation_writes_an_entry_directly(audit_storage, unique_name):
    table = unique_name("restored")
    details = {"backup": f"{table}-20261125T020000.123456Z", "target": table, "mode": "mirror", "restored": 120}
    before = datetime.now(UTC)

    record_operation(audit_storage, "RESTORE", "ops@example.com", table, details)

    [row] = _entries(audit_storage)
    kinds = typed(row, with_timestamp=False)
    assert {name: kind for name, (kind, _) in kinds.items()} == {
        **dict.fromkeys(
            ["PartitionKey", "RowKey", "tableName", "operation", "entityKey", "partitionKey", "rowKey", "userId"],
            "Edm.String",
        ),
        **dict.fromkeys(["beforeData", "afterData", "messageId"], "Edm.String"),
        "timestamp": "Edm.DateTime",
    }
    assert (row["entityKey"], row["partitionKey"], row["rowKey"], row["messageId"]) == ("", "", "", "")
    assert (row["tableName"], row["operation"], row["PartitionKey"]) == (
        table,
        "RESTORE",
        f"AUDIT_{row['timestamp'][:10]}",
    )
    [entry] = find_entries(audit_storage, table=table, operation="restore")
    assert (entry["userId"], entry["beforeData"], entry["afterData"]) == ("ops@example.com", None, details)
    assert before <= datetime.fromisoformat(entry["timestamp"][:26] + "+00:00") <= datetime.now(UTC)


def test_record_operation_never_raises_on_storage_failure(audit_storage, env, monkeypatch, caplog):
    dead = free_port()
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string(dead, dead, dead))
    monkeypatch.setenv("STORAGE_RETRIES", "0")
    get_settings.cache_clear()

    record_operation(Storage.from_settings(), "ERASE", "ops", "candidates", {"filter": "PartitionKey eq 'x'"})

    assert "audit entry for ERASE of candidates was not written" in caplog.text


def test_record_operation_refuses_data_operations(audit_storage):
    with pytest.raises(InvalidInput, match="invalid audit operation 'UPDATE'"):
        record_operation(audit_storage, "UPDATE", "ops", "candidates", {})


# The producer


def test_the_producer_round_trip_through_a_real_azurite_queue(
    functions, audit_storage, azurite_connection_string, unique_name
):
    source = unique_name("source")
    seed_table(audit_storage.tables, source, 5)  # every EDM type, NaN, 7-digit DateTimes, an empty PartitionKey
    client = audit_storage.tables.get_table_client(source)
    stored = keyed(wire_entities(client))
    queue_name = f"audit-{uuid.uuid4().hex[:12]}"

    with AuditClient.from_connection_string(azurite_connection_string, queue_name) as producer:
        sent = [
            producer.send(
                table=source,
                operation="UPDATE",
                partition_key=partition_key,
                row_key=row_key,
                user_id="alice@example.com",
                before=client.get_entity(partition_key, row_key),  # the SDK's model, as the application has it
                after={**client.get_entity(partition_key, row_key), "name": "changed"},
            )
            for partition_key, row_key in stored
        ]
        big = "z" * 40_000  # fits a queue message, not a String property
        sent.append(producer.send(**_producer_fields(source), after={"PartitionKey": "P", "RowKey": "R", "big": big}))

    plain = QueueClient.from_connection_string(azurite_connection_string, queue_name)  # no decode policy
    raw = list(plain.receive_messages(max_messages=32, visibility_timeout=60))
    assert sorted(message.id for message in raw) == sorted(sent)
    for message in raw:
        with pytest.raises(json.JSONDecodeError):
            json.loads(message.content)  # base64 on the queue, as the trigger expects
        decoded = base64.b64decode(message.content, validate=True)
        _deliver(functions, decoded, message.id, delivery=message.dequeue_count, inserted_at=message.inserted_on)

    entries = {entry["messageId"]: entry for entry in find_entries(audit_storage, table=source)}
    assert set(entries) == set(sent)
    for message_id, key in zip(sent[:-1], stored, strict=True):
        entry = entries[message_id]
        assert (entry["partitionKey"], entry["rowKey"], entry["userId"]) == (*key, "alice@example.com")
        assert typed(entry["beforeData"]) == typed(stored[key], with_timestamp=False)
        assert typed(entry["afterData"]) == {
            **typed(stored[key], with_timestamp=False),
            "name": ("Edm.String", "changed"),
        }
    assert entries[sent[-1]]["afterData"]["big"] == big
    assert _rejected(audit_storage) == []


def _producer_fields(table: str) -> dict:
    return {"table": table, "operation": "INSERT", "partition_key": "P", "row_key": "R", "user_id": "bob"}


def test_the_producer_refuses_what_the_writer_or_the_queue_would(azurite_connection_string):
    queue_name = f"audit-{uuid.uuid4().hex[:12]}"
    with AuditClient.from_connection_string(azurite_connection_string, queue_name) as producer:
        with pytest.raises(InvalidInput, match="operation"):
            producer.send(**{**_producer_fields("candidates"), "operation": "UPSERT"})
        with pytest.raises(InvalidInput, match="64 KiB"):
            producer.send(**_producer_fields("candidates"), after={"big": "z" * 50_000})
    with pytest.raises(ResourceNotFoundError):  # nothing was sent
        QueueClient.from_connection_string(azurite_connection_string, queue_name).get_queue_properties()


def test_audit_message_is_the_wire_format():
    when = datetime(2026, 11, 25, 2, 0, 0, 123456, tzinfo=UTC)
    message = audit_message(
        table="candidates",
        operation="DELETE",
        partition_key="P",
        row_key="R",
        user_id="bob",
        before={"n": 2**40, "d": when, "f": 2.0, "g": uuid.UUID(int=1), "b": b"\x00\xff", "nan": float("nan")},
        timestamp=when,
        sequence=7,
    )

    assert message == {
        "tableName": "candidates",
        "operation": "DELETE",
        "partitionKey": "P",
        "rowKey": "R",
        "userId": "bob",
        "timestamp": "2026-11-25T02:00:00.1234560Z",
        "beforeData": {
            "n": str(2**40),
            "n@odata.type": "Edm.Int64",
            "d": "2026-11-25T02:00:00.1234560Z",
            "d@odata.type": "Edm.DateTime",
            "f": 2.0,
            "f@odata.type": "Edm.Double",
            "g": "00000000-0000-0000-0000-000000000001",
            "g@odata.type": "Edm.Guid",
            "b": "AP8=",
            "b@odata.type": "Edm.Binary",
            "nan": "NaN",
            "nan@odata.type": "Edm.Double",
        },
        "afterData": None,
        "sequence": 7,
    }
    # Without one, the client numbers its messages: strictly increasing, so one instant still orders.
    fields = {**_producer_fields("candidates"), "timestamp": when}
    sequences = [audit_message(**fields)["sequence"] for _ in range(100)]
    assert sequences == sorted(set(sequences))
