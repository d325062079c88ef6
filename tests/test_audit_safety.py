"""The audit writer never crashes on a message: what can never become an entry is kept in
AUDIT_REJECTED_TABLE with its reason, once, and the body is kept byte for byte because the trigger
is declared binary. Messages go through the Python worker's own queue converter, as the host
delivers them for the binding's declared data type."""

from __future__ import annotations

from datetime import UTC, datetime

import azure.functions as func
import orjson
import pytest
from azure.functions import meta
from azure.functions.queue import QueueMessageInConverter

from tablebackup.core.clients import Storage, blob_service
from tests.wire import wire_entities


def _binding(functions) -> dict:
    [trigger] = [b for b in functions["audit_writer"].get_bindings() if b.get_dict_repr()["type"] == "queueTrigger"]
    return trigger.get_dict_repr()


def _as_host_delivers(functions, body: bytes, message_id: str, delivery: int = 1) -> func.QueueMessage:
    """The message as the worker builds it: bytes when the binding's data type is binary, else
    the host's text (undecodable bytes replaced by U+FFFD)."""
    binary = _binding(functions).get("dataType") == func.DataType.BINARY
    datum = meta.Datum(body, "bytes") if binary else meta.Datum(body.decode("utf-8", "replace"), "string")
    inserted = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    metadata = {
        "Id": meta.Datum(message_id, "string"),
        "DequeueCount": meta.Datum(delivery, "int"),
        "InsertionTime": meta.Datum(inserted.isoformat().replace("+00:00", "Z"), "string"),
    }
    return QueueMessageInConverter.decode(datum, trigger_metadata=metadata)


def _deliver(functions, body: bytes, message_id: str, delivery: int = 1) -> None:
    message = _as_host_delivers(functions, body, message_id, delivery)
    assert functions["audit_writer"].get_user_function()(message) is None


def _rows(storage: Storage, table: str) -> list[dict]:
    if not list(storage.tables.query_tables(f"TableName eq '{table}'")):
        return []
    return wire_entities(storage.tables.get_table_client(table))


def _nested(depth: int) -> dict:
    value: dict = {"PartitionKey": "p", "RowKey": "r"}
    for _ in range(depth):
        value = {"inner": value}
    return value


def _message(**changes) -> dict:
    return {
        "tableName": "candidates",
        "operation": "INSERT",
        "partitionKey": "p",
        "rowKey": "r",
        "userId": "alice@example.com",
        "timestamp": "2026-11-25T02:00:00Z",
        "beforeData": None,
        "afterData": {"PartitionKey": "p", "RowKey": "r"},
        **changes,
    }


def _with_after_data(raw: bytes) -> bytes:
    """A valid message whose afterData is the given JSON text."""
    message = _message()
    del message["afterData"]
    return orjson.dumps(message)[:-1] + b',"afterData":' + raw + b"}"


def test_the_writer_trigger_is_declared_binary(functions):
    binding = _binding(functions)

    assert binding["dataType"] == func.DataType.BINARY
    assert '"dataType": "BINARY"' in functions["audit_writer"].get_function_json()


def test_a_body_that_is_not_utf8_is_kept_byte_for_byte(functions, audit_storage):
    body = orjson.dumps(_message(userId="x")).replace(b'"x"', b'"\xff\xfe caf\xe9"')

    _deliver(functions, body, "msg-latin1")

    [row] = _rows(audit_storage, audit_storage.settings.audit_rejected_table)
    assert "not UTF-8" in row["reason"]
    payloads = blob_service(audit_storage.settings).get_container_client(audit_storage.settings.audit_payload_container)
    assert payloads.download_blob(row["bodyBlob"]).readall() == body
    assert _rows(audit_storage, audit_storage.settings.audit_table) == []


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        _with_after_data(b"[" * 2000 + b"]" * 2000),
        _with_after_data(b'{"x":' * 2000 + b"{}" + b"}" * 2000),
    ],
    ids=["100k-arrays", "2k-deep-array-afterData", "2k-deep-object-afterData"],
)
def test_deeply_nested_json_is_kept_with_its_reason_once(functions, audit_storage, body):
    for delivery in (1, 2):  # a redelivery finds its row already there
        _deliver(functions, body, "msg-deep", delivery)

    [row] = _rows(audit_storage, audit_storage.settings.audit_rejected_table)
    assert row["messageId"] == "msg-deep" and row["dequeueCount"] == 1
    assert "nested too deeply" in row["reason"]
    kept = row["body"].encode() if "body" in row else None
    if kept is None:
        payloads = blob_service(audit_storage.settings).get_container_client(
            audit_storage.settings.audit_payload_container
        )
        kept = payloads.download_blob(row["bodyBlob"]).readall()
    assert kept == body
    assert _rows(audit_storage, audit_storage.settings.audit_table) == []


def test_nesting_deeper_than_orjson_writes_is_rejected_too(functions, audit_storage):
    body = _with_after_data(b'{"x":' * 300 + b"1" + b"}" * 300)

    _deliver(functions, body, "msg-300")

    [row] = _rows(audit_storage, audit_storage.settings.audit_rejected_table)
    assert row["reason"].startswith("not JSON")
    assert _rows(audit_storage, audit_storage.settings.audit_table) == []
