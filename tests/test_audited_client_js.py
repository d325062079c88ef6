"""The TypeScript audited table client (clients/js) against real Azurite: a Node program changes a
table after a backup through auditedTableClient, one step per run so the table's state after each
step is known; the queue is drained through the registered audit_writer, then point-in-time
restores at each step's instant equal the table then, and undelete brings back a deleted entity.
Needs `npm ci && npm run build` in clients/js (make test does it)."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from localdev.sample import seed_table
from tablebackup.audit.messages import instant_text
from tablebackup.backup.archiver import backup_table
from tests.audited_replay import check_restores, check_schema, check_undelete, drain, queued_messages
from tests.wire import table_state

CLIENT = Path(__file__).parent.parent / "clients" / "js"

pytestmark = pytest.mark.skipif(
    not (CLIENT / "node_modules").is_dir(), reason="clients/js/node_modules is missing: run `npm ci` in clients/js"
)


def _node_step(spec: dict) -> None:
    result = subprocess.run(
        ["node", "--test", "test/"],
        cwd=CLIENT,
        env={**os.environ, "AUDITED_STEP": json.dumps(spec)},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert result.returncode == 0 and "# pass 3" in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]


def test_changes_through_the_js_client_replay_exactly(audit_storage, functions, azurite_connection_string, unique_name):
    subprocess.run(
        ["npm", "run", "build"], cwd=CLIENT, check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=60
    )
    table, queue = unique_name("jsaudited"), unique_name("q").lower()
    seed_table(audit_storage.tables, table, 25)
    manifest = backup_table(audit_storage, table)
    client = audit_storage.tables.get_table_client(table)
    states = [(manifest.finished_at, table_state(client))]
    # Whole milliseconds: a JavaScript Date holds no finer instant.
    start = manifest.finished_at.replace(microsecond=manifest.finished_at.microsecond // 1000 * 1000)
    for step in range(1, 6):
        at = start + timedelta(seconds=step)
        spec = {"connectionString": azurite_connection_string, "table": table, "queue": queue, "step": step}
        _node_step({**spec, "at": instant_text(at)})
        states.append((at, table_state(client)))

    messages = queued_messages(azurite_connection_string, queue)
    check_schema(messages)
    assert [m["operation"] for m in messages] == [
        "INSERT",
        "UPDATE",
        "DELETE",
        "INSERT",
        "UPDATE",
        "DELETE",
        "UPDATE",
        "UPDATE",
    ]
    assert (
        messages[0]["afterData"]["big"] == str(2**63 - 1)
        and messages[0]["afterData"]["whole@odata.type"] == "Edm.Double"
    )
    assert messages[-1]["timestamp"] == messages[-2]["timestamp"]

    assert drain(functions, azurite_connection_string, queue) == 8

    half = timedelta(milliseconds=500)
    check_restores(audit_storage, table, [(instant + half, state) for instant, state in states], unique_name)
    check_undelete(audit_storage, table, ("CANDIDATE", "0000002"), states[0][1][("CANDIDATE", "0000002")])
