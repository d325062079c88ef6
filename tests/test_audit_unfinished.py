"""What `audit` shows: which operations of the app's own started and have no ended entry (still
running or killed, and after OPERATION_HORIZON surely not running; an ended entry after the queried
range still counts as the operation's end), and entries holding anything the service can hold, a
lone surrogate included, exactly as sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from azure.functions.queue import QueueMessage

from tablebackup.audit.entries import operation_entries
from tablebackup.audit.queries import NEVER_ENDED, OPERATION_HORIZON, RUNNING_OR_KILLED, find_entries, iter_entries
from tests.test_cli import run_cli

ROOT = Path(__file__).resolve().parent.parent


def _killed(table: str) -> None:
    """An import whose process is killed after its started entry: it never writes the ended one."""
    program = (
        "import os\n"
        "from tablebackup.audit.entries import operation_entries\n"
        "from tablebackup.core.clients import Storage\n"
        f"with operation_entries(Storage.from_settings(), 'IMPORT', 'ops', {table!r}, {{'source': 'x'}}):\n"
        "    os._exit(9)\n"
    )
    assert subprocess.run([sys.executable, "-c", program], cwd=ROOT, env=dict(os.environ), timeout=60).returncode == 9


def _by_phase(listed: list[dict]) -> list[tuple[str, str, str | None]]:
    return [(e["operation"], e["afterData"]["phase"], e.get("unfinished")) for e in listed]


def test_audit_marks_a_started_operation_that_never_ended(audit_storage, unique_name):
    table = unique_name("orders")
    with operation_entries(audit_storage, "RESTORE", "ops", table, {"mode": "replace"}):
        pass
    _killed(table)

    listed = orjson.loads(run_cli("audit", "--table", table, "--json").stdout)["entries"]
    assert _by_phase(listed) == [
        ("RESTORE", "started", None),
        ("RESTORE", "ended", None),
        ("IMPORT", "started", RUNNING_OR_KILLED),
    ]

    text = run_cli("audit", "--table", table)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert [line.split("by ops")[1].strip() for line in lines] == [
        "started",
        "ended: succeeded",
        "started, not ended (running or killed)",
    ]

    # Long after it started, it is surely not running any more.
    started = listed[2]["timestamp"]
    later = iter_entries(audit_storage, table=table, unfinished=True, now=_at(started) + OPERATION_HORIZON * 2)
    assert [e.get("unfinished") for e in later if e["operation"] == "IMPORT"] == [NEVER_ENDED]
    # Without unfinished=True the entries are as stored.
    assert all("unfinished" not in e for e in find_entries(audit_storage, table=table))


def test_an_end_after_the_queried_range_still_ends_the_operation(audit_storage, unique_name):
    table = unique_name("orders")
    with operation_entries(audit_storage, "RESTORE", "ops", table, {"mode": "replace"}):
        pass
    started, ended = find_entries(audit_storage, table=table)
    assert started["timestamp"] < ended["timestamp"]

    # A range that ends before the ended entry: the started entry alone is listed, not marked.
    listed = list(iter_entries(audit_storage, table=table, until=_at(started["timestamp"]), unfinished=True))
    assert _by_phase(listed) == [("RESTORE", "started", None)]


def _at(canonical: str) -> datetime:
    """The instant of a canonical timestamp, rounded up to the microsecond (it has seven digits)."""
    return datetime.fromisoformat(canonical[:26]).replace(tzinfo=UTC) + timedelta(microseconds=1)


def test_a_lone_surrogate_is_audited_and_read_back_exactly(audit_storage, functions, unique_name):
    table = unique_name("people")
    before = {"PartitionKey": "P\udc00", "RowKey": "1", "name": "Ada \ud800", "n": "5", "n@odata.type": "Edm.Int64"}
    after = {**before, "name": "\udfff Zoë 中"}
    message = {
        "tableName": table,
        "operation": "UPDATE",
        "partitionKey": "P\udc00",
        "rowKey": "1",
        "userId": "js-app \ud83d",
        "timestamp": "2026-11-25T02:00:00.1234567Z",
        "beforeData": before,
        "afterData": after,
    }
    # As a JavaScript sender writes it: the lone surrogates as JSON escapes, in the queue's bytes.
    body = json.dumps(message).encode()
    queued = QueueMessage(id=f"lone-{table}", body=body, dequeue_count=1, insertion_time=None)
    assert functions["audit_writer"].get_user_function()(queued) is None

    rejected = audit_storage.settings.audit_rejected_table
    assert not list(audit_storage.tables.query_tables(f"TableName eq '{rejected}'"))  # nothing rejected
    window = ("--since", "2026-11-25T00:00:00Z", "--until", "2026-11-26T00:00:00Z")
    (entry,) = find_entries(audit_storage, table=table, since=_at("2026-11-25T00:00:00.0000000Z"))
    assert (entry["beforeData"], entry["afterData"], entry["partitionKey"]) == (before, after, "P\udc00")

    listed = run_cli("audit", "--table", table, *window, "--json")
    assert listed.returncode == 0, listed.stderr
    (shown,) = json.loads(listed.stdout)["entries"]
    assert (shown["beforeData"], shown["afterData"]) == (before, after)
    assert (shown["userId"], shown["entityKey"]) == ("js-app \ud83d", "P\udc00:1")

    text = run_cli("audit", "--table", table, *window)
    assert text.returncode == 0, text.stderr
    assert text.stdout.endswith("  P\\udc00:1  by js-app \\ud83d\n")  # as escapes: UTF-8 has no lone surrogate
