"""The Python audited table client (tablebackup.audit.client.audited_table_client) against real
Azurite: changes after a backup, their messages delivered to the registered audit_writer, then
point-in-time restores at several instants equal the table at each, and undelete brings back a
deleted entity. The clock is injected, so each change's instant is known."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.data.tables import EdmType, EntityProperty, UpdateMode

from localdev.sample import seed_table
from tablebackup.audit.client import AuditClient, AuditNotSent, audited_table_client
from tablebackup.backup.archiver import backup_table
from tests.audited_replay import check_restores, check_schema, check_undelete, drain, queued_messages
from tests.wire import table_state

A = ("CANDIDATE", "0000001")
B = ("CANDIDATE", "0000002")
D = ("CANDIDATE", "0000003")
X = ("CANDIDATE", "x-every-type")
Y = ("CANDIDATE", "y-in-a-batch")


def _every_type(key: tuple[str, str]) -> dict:
    return {
        "PartitionKey": key[0],
        "RowKey": key[1],
        "text": "Chloé \U0001f600",
        "flag": True,
        "small": -7,
        "big": EntityProperty(2**63 - 1, EdmType.INT64),
        "smallInt64": EntityProperty(5, EdmType.INT64),
        "ratio": 2.0,
        "infinite": float("inf"),
        "when": datetime(2026, 11, 25, 2, 0, 0, 123456, tzinfo=UTC),
        "id": uuid.UUID("c9da6455-213d-42c9-9a79-3e9149a57833"),
        "blob": b"\x00\xff binary",
    }


def test_changes_through_the_audited_client_replay_exactly(
    audit_storage, functions, azurite_connection_string, unique_name
):
    table, queue = unique_name("audited"), unique_name("q").lower()
    seed_table(audit_storage.tables, table, 25)
    manifest = backup_table(audit_storage, table)
    client = audit_storage.tables.get_table_client(table)
    now = [manifest.finished_at + timedelta(seconds=1)]
    audit = AuditClient.from_connection_string(azurite_connection_string, queue_name=queue)
    audited = audited_table_client(client, audit, user_id="app@example.com", clock=lambda: now[0])
    states = [(manifest.finished_at, table_state(client))]

    def step(change) -> None:
        change()
        states.append((now[0], table_state(client)))
        now[0] += timedelta(seconds=1)

    step(lambda: audited.create_entity(_every_type(X)))
    step(lambda: audited.update_entity({"PartitionKey": A[0], "RowKey": A[1], "name": "merged"}))
    step(lambda: audited.upsert_entity({"PartitionKey": A[0], "RowKey": A[1], "only": 1}, mode=UpdateMode.REPLACE))
    step(lambda: audited.delete_entity(*B))
    batch = [
        ("create", {"PartitionKey": Y[0], "RowKey": Y[1], "n": EntityProperty(-(2**63), EdmType.INT64)}),
        ("update", {"PartitionKey": X[0], "RowKey": X[1], "big": "now a string"}, {"mode": UpdateMode.MERGE}),
        ("delete", {"PartitionKey": D[0], "RowKey": D[1]}),
    ]
    step(lambda: audited.submit_transaction(batch))

    def same_instant() -> None:  # two changes of X at one instant: only the sequence orders them
        audited.update_entity({"PartitionKey": X[0], "RowKey": X[1], "name": "first"})
        audited.update_entity({"PartitionKey": X[0], "RowKey": X[1], "name": "second"}, mode=UpdateMode.REPLACE)

    step(same_instant)
    messages = queued_messages(azurite_connection_string, queue)
    check_schema(messages)
    assert [m["operation"] for m in messages] == ["INSERT", "UPDATE", "UPDATE", "DELETE"] + [
        "INSERT",
        "UPDATE",
        "DELETE",
    ] + ["UPDATE"] * 2
    assert (
        messages[0]["afterData"]["big"] == str(2**63 - 1)
        and messages[0]["afterData"]["when"] == "2026-11-25T02:00:00.1234560Z"
    )
    assert messages[-1]["timestamp"] == messages[-2]["timestamp"]

    assert drain(functions, azurite_connection_string, queue) == 9

    half = timedelta(milliseconds=500)
    check_restores(audit_storage, table, [(instant + half, state) for instant, state in states], unique_name)
    check_undelete(audit_storage, table, B, states[0][1][B])


def test_a_failed_write_sends_nothing_and_a_failed_message_names_the_entity(
    audit_storage, azurite_connection_string, unique_name
):
    table, queue = unique_name("failing"), unique_name("q").lower()
    seed_table(audit_storage.tables, table, 25)
    client = audit_storage.tables.get_table_client(table)
    audit = AuditClient.from_connection_string(azurite_connection_string, queue_name=queue)
    audited = audited_table_client(client, audit, user_id="app@example.com")

    with pytest.raises(ResourceExistsError):
        audited.create_entity({"PartitionKey": A[0], "RowKey": A[1]})
    assert not _queue_exists(audit)  # nothing was ever sent, so the queue was never even created

    broken = AuditClient.from_connection_string(azurite_connection_string, queue_name="Not_A_Queue")
    with pytest.raises(AuditNotSent, match=r"PartitionKey 'CANDIDATE', RowKey 'new'\) succeeded"):
        audited_table_client(client, broken, user_id="app").create_entity(
            {"PartitionKey": "CANDIDATE", "RowKey": "new"}
        )
    assert ("CANDIDATE", "new") in table_state(client)  # the write stands


def _queue_exists(audit: AuditClient) -> bool:
    try:
        audit.queue.get_queue_properties()
        return True
    except Exception:
        return False
