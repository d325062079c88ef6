"""An interrupted restore's ended audit entry counts exactly what landed: the batches in flight when
it stopped are waited for and counted, in-process and through the real CLI's Ctrl-C alike."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from localdev.sample import seed_table
from tablebackup.audit.queries import find_entries
from tablebackup.backup.archiver import backup_table
from tablebackup.core.clients import Storage
from tablebackup.core.settings import get_settings
from tablebackup.restore.restorer import RestoreRequest, restore
from tablebackup.storage.tablewriter import submit_operations, upsert_operations, write_ledger
from tests.faultproxy import tables_through_proxy

ROOT = Path(__file__).resolve().parent.parent
ENTITIES = 1000  # 10 batches of 100: more than 2 x 4 workers, so a restore is stopped mid-way


def _ended(storage: Storage, table: str) -> dict:
    entries = find_entries(storage, table=table, operation="RESTORE")
    assert [entry["afterData"]["phase"] for entry in entries] == ["started", "ended"], entries
    return entries[1]["afterData"]


def _landed(storage: Storage, table: str) -> int:
    return sum(1 for _ in storage.tables.get_table_client(table).list_entities(select=["RowKey"]))


@pytest.fixture
def backed_up(audit_storage, unique_name) -> str:
    table = unique_name("src")
    seed_table(audit_storage.tables, table, ENTITIES)
    backup_table(audit_storage, table)
    return table


def test_an_interrupted_restore_counts_the_batches_in_flight(
    audit_storage, backed_up, unique_name, monkeypatch, azurite_connection_string
):
    target = unique_name("cut")
    monkeypatch.setenv("RESTORE_WORKERS", "4")
    with tables_through_proxy(monkeypatch, azurite_connection_string) as proxy:
        # The second batch waits at the proxy until the first is counted: it is surely in flight
        # when Ctrl-C comes, and lands after it.
        held = proxy.hold(2, method="POST", path="$batch")
        reported = []

        def ctrl_c(count: int) -> None:
            reported.append(count)
            held.release()
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            request = RestoreRequest(table=backed_up, backup="latest", target=target)
            restore(Storage.from_settings(), request, on_progress=ctrl_c)
        assert held.reached.is_set()

    ended = _ended(audit_storage, target)
    landed = _landed(audit_storage, target)
    assert ended["outcome"] == "interrupted"
    assert ended["table_writes"] == {
        "written": landed,
        "deleted": 0,
        "existing": 0,
        "gone": 0,
        "failed": 0,
        "uncertain": 0,
    }
    # More than was confirmed when Ctrl-C came (the held batch at least), less than the whole table.
    assert len(reported) == 1
    assert reported[0] < landed < ENTITIES


def test_a_second_ctrl_c_stops_the_wait_and_says_what_is_uncertain(
    audit_storage, unique_name, monkeypatch, azurite_connection_string
):
    table = unique_name("twice")
    audit_storage.tables.create_table(table)
    # Python turns SIGINT into KeyboardInterrupt only while its handler is installed (a test run in
    # the background starts with SIGINT ignored).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with tables_through_proxy(monkeypatch, azurite_connection_string) as proxy:
            held = proxy.hold(2, method="POST", path="$batch")  # stays held until the test ends
            entities = ({"PartitionKey": "p", "RowKey": f"{n:04d}"} for n in range(1000))

            def ctrl_c(count: int) -> None:
                # The second Ctrl-C comes while the first one's wait for the held batch goes on.
                main = threading.main_thread().ident
                threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT)).start()
                raise KeyboardInterrupt

            client = Storage.from_settings().tables.get_table_client(table)
            with write_ledger() as ledger, pytest.raises(KeyboardInterrupt):
                submit_operations(client, upsert_operations(entities), workers=2, on_progress=ctrl_c)
            assert held.reached.is_set() and not held.released.is_set()  # it returned while the batch was held
            assert ledger.uncertain == 100  # the held batch: it may land yet
            held.release()
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_a_cli_restore_with_its_exact_counts(
    audit_storage, backed_up, unique_name, monkeypatch, azurite_connection_string
):
    target = unique_name("sigint")
    monkeypatch.setenv("RESTORE_WORKERS", "1")
    with tables_through_proxy(monkeypatch, azurite_connection_string) as proxy:
        # The third batch waits at the proxy until the CLI has been sent SIGINT: the restore cannot
        # finish first, whatever the machine's load.
        held = proxy.hold(3, method="POST", path="$batch")
        command = ["restore", "--table", backed_up, "--backup", "latest", "--target", target]
        # A handler (not SIG_IGN) in this process: the child then starts with SIGINT at its default,
        # which Python turns into KeyboardInterrupt (a run in the background starts with it ignored).
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "tablebackup", *command],
                cwd=ROOT,
                env=dict(os.environ),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        finally:
            signal.signal(signal.SIGINT, previous)
        try:
            assert held.wait_reached(60), "the restore never sent its third batch"
            process.send_signal(signal.SIGINT)
            held.release()
            _, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()

    assert process.returncode == 130, stderr
    # One line (after the newline click writes to end the terminal's "^C"), no traceback.
    assert stderr.strip().splitlines() == ["error: interrupted"]
    ended = _ended(audit_storage, target)
    landed = _landed(audit_storage, target)
    assert ended["outcome"] == "interrupted"
    assert (ended["table_writes"]["written"], ended["table_writes"]["uncertain"]) == (landed, 0)
    assert 300 <= landed < ENTITIES  # the held batch, in flight at Ctrl-C, landed and is counted
    get_settings.cache_clear()
