"""`python -m tablebackup audit` as users run it: a separate process against real Azurite, exactly one JSON
document with --json, one line per entry otherwise, and one-line errors with exit codes 1 and 2."""

from __future__ import annotations

import uuid

import orjson
import pytest

from tablebackup.audit.messages import OPERATIONS
from tablebackup.audit.writer import handle_message
from tablebackup.cli.audits import OPERATIONS as CLI_OPERATIONS
from tablebackup.core.clients import Storage
from tablebackup.core.settings import get_settings
from tests.test_cli import run_cli


@pytest.fixture
def audited(env, monkeypatch, unique_name) -> Storage:
    """Three entries over two days in this test's own audit table."""
    monkeypatch.setenv("AUDIT_TABLE", unique_name("audit"))
    monkeypatch.setenv("AUDIT_REJECTED_TABLE", unique_name("rejected"))
    monkeypatch.setenv("AUDIT_PAYLOAD_CONTAINER", f"audit-{uuid.uuid4().hex[:12]}")
    get_settings.cache_clear()
    storage = Storage.from_settings()
    for index, (table, operation, user, timestamp) in enumerate(
        [
            ("orders", "INSERT", "alice", "2026-03-01T10:00:00.1234567Z"),
            ("candidates", "UPDATE", "bob", "2026-03-02T09:30:00Z"),
            ("orders", "DELETE", "alice", "2026-03-02T11:00:00Z"),
        ]
    ):
        message = {
            "tableName": table,
            "operation": operation,
            "partitionKey": "P'1",
            "rowKey": str(index),
            "userId": user,
            "timestamp": timestamp,
            "beforeData": None if operation == "INSERT" else {"n": index},
            "afterData": None if operation == "DELETE" else {"n": index + 1},
        }
        assert handle_message(storage, orjson.dumps(message), f"cli-{index}") == "written"
    return storage


RANGE = ("--since", "2026-03-01T00:00:00Z", "--until", "2026-03-03T00:00:00Z")


def test_audit_json_prints_the_entries_in_time_order(audited):
    result = run_cli("audit", *RANGE, "--json")

    assert result.returncode == 0, result.stderr
    entries = orjson.loads(result.stdout)["entries"]
    assert [(e["messageId"], e["operation"], e["tableName"]) for e in entries] == [
        ("cli-0", "INSERT", "orders"),
        ("cli-1", "UPDATE", "candidates"),
        ("cli-2", "DELETE", "orders"),
    ]
    assert entries[0]["timestamp"] == "2026-03-01T10:00:00.1234567Z"
    assert (entries[0]["beforeData"], entries[0]["afterData"]) == (None, {"n": 1})
    assert entries[1]["entityKey"] == "P'1:1" and entries[1]["userId"] == "bob"


def test_audit_filters(audited):
    def ids(*args: str) -> list[str]:
        result = run_cli("audit", *RANGE, *args, "--json")
        assert result.returncode == 0, result.stderr
        return [e["messageId"] for e in orjson.loads(result.stdout)["entries"]]

    assert ids("--table", "orders", "--user", "alice") == ["cli-0", "cli-2"]
    assert ids("--operation", "delete") == ["cli-2"]
    assert ids("--partition-key", "P'1", "--row-key", "1") == ["cli-1"]
    assert ids("--since", "2026-03-02T00:00:00Z") == ["cli-1", "cli-2"]


def test_audit_human_output_is_one_line_per_entry(audited):
    result = run_cli("audit", *RANGE, "--table", "orders")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("2026-03-01T10:00:00.1234567Z") and "INSERT" in lines[0] and "by alice" in lines[0]
    empty = run_cli("audit", *RANGE, "--user", "nobody")
    assert (empty.returncode, empty.stdout.strip()) == (0, "no audit entries")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--since", "2026-03-05T00:00:00Z", "--until", "2026-03-01T00:00:00Z"], 2, "--since must not be after"),
        (["--operation", "UPSERT"], 2, "'UPSERT' is not one of"),
        (["--since", "last tuesday"], 2, "not an ISO-8601 instant"),
        (["--table", "bad-name"], 1, "invalid table name"),
        (["--since", "2000-01-01T00:00:00Z", "--until", "2026-01-01T00:00:00Z"], 1, "3660 days"),
    ],
)
def test_audit_refusals_are_one_line(audited, args, code, message):
    result = run_cli("audit", *args)

    assert result.returncode == code, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line
    assert result.stdout == ""


def test_the_cli_offers_every_operation_the_domain_knows():
    assert CLI_OPERATIONS == OPERATIONS
