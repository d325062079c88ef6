"""Shared checks of the audited clients' tests (tests/test_audited_client*.py): the messages on the
queue against clients/audit-message.schema.json, the queue drained through the registered
audit_writer, and restores (the CLI's `restore --as-of T --replay-audit`) compared with the table's
state at each T."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path

import orjson
from azure.storage.queue import QueueClient

from localdev.host import drain_queue
from tablebackup.audit.messages import canonical_instant, instant_text, parse_message
from tests.test_cli import run_cli
from tests.wire import table_state

SCHEMA = Path(__file__).parent.parent / "clients" / "audit-message.schema.json"


def queued_messages(connection_string: str, queue: str) -> list[dict]:
    """The messages on the queue (up to 32), decoded as the Functions host does (base64)."""
    client = QueueClient.from_connection_string(connection_string, queue)
    return [orjson.loads(base64.b64decode(m.content, validate=True)) for m in client.peek_messages(max_messages=32)]


def check_schema(messages: list[dict]) -> None:
    """Each message has the schema's required fields and no other than it lists, its sequence an
    exact integer, and the writer accepts it."""
    schema = json.loads(SCHEMA.read_text())
    for message in messages:
        assert set(schema["required"]) <= set(message), message
        assert set(message) <= set(schema["properties"]), message
        assert isinstance(message["sequence"], int) and message["sequence"] > 0
        parse_message(orjson.dumps(message))
    sequences = [message["sequence"] for message in messages]
    assert sequences == sorted(set(sequences)), "sequences must grow strictly in sending order"


def drain(functions, connection_string: str, queue: str) -> int:
    drained = drain_queue(functions["audit_writer"].get_user_function(), connection_string, queue)
    assert drained.poisoned == 0
    return drained.delivered


def check_restores(storage, table: str, states: list[tuple[datetime, dict]], unique_name) -> None:
    """`restore --as-of T --replay-audit` into a new table reproduces states[i][1] at each T."""
    for step, (instant, expected) in enumerate(states):
        target = unique_name("asof")
        result = run_cli(
            "restore", "-t", table, "--as-of", instant_text(instant), "--replay-audit", "--target", target, "--json"
        )
        assert result.returncode == 0, result.stdout + result.stderr
        restored, expected = _instants(table_state(storage.tables.get_table_client(target))), _instants(expected)
        differing = {
            key: (restored.get(key), expected.get(key))
            for key in restored.keys() | expected.keys()
            if restored.get(key) != expected.get(key)
        }
        assert not differing, f"step {step}: {differing} {result.stdout}"


def _instants(state: dict) -> dict:
    """DateTimes in canonical 7-digit form: Azurite keeps a DateTime's text as sent (the Python SDK
    sends 6 digits), the service and a replayed image give 7; the instant is the same."""
    return {
        key: {
            name: (edm, canonical_instant(value) if edm == "Edm.DateTime" else value)
            for name, (edm, value) in entity.items()
        }
        for key, entity in state.items()
    }


def check_undelete(storage, table: str, key: tuple[str, str], expected: dict) -> None:
    result = run_cli("undelete", "-t", table, "--partition-key", key[0], "--row-key", key[1], "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert table_state(storage.tables.get_table_client(table))[key] == expected
