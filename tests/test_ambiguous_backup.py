"""Backups under ambiguous faults: the service applied a write but its answer was lost (a 500, a
dropped connection), or the host delivered a finished work item again (a lost ack). The backup
must reach the truth: complete when it is complete, and nothing written twice."""

from __future__ import annotations

import orjson
import pytest

from localdev.sample import seed_table
from tablebackup.backup.archiver import backup_table
from tablebackup.backup.runs import run_status
from tablebackup.core.clients import Storage
from tablebackup.core.settings import get_settings
from tablebackup.repository import catalog
from tablebackup.repository.backupformat import read_data_lines
from tests.faultproxy import blobs_through_proxy, tables_through_proxy
from tests.test_cli import run_cli
from tests.test_fanout import backup_blob_names, daily_run


@pytest.mark.parametrize("answer", [500, "drop"])
@pytest.mark.parametrize("lost", ["manifest.json", "comp=blocklist"])
def test_the_cli_backup_succeeds_when_a_write_applied_lost_its_answer(
    storage, monkeypatch, azurite_connection_string, unique_name, lost, answer
):
    table = unique_name("lost")
    seed_table(storage.tables, table, 300)
    with blobs_through_proxy(monkeypatch, azurite_connection_string) as proxy:
        proxy.after(answer, method="PUT", path=lost)

        result = run_cli("backup", "--table", table, "--json")

    # The retry is said on stderr, in one line, and is no error.
    assert result.returncode == 0, result.stderr
    [retried] = result.stderr.splitlines()
    assert retried.startswith("warning: retrying PUT ") and "(attempt 2 of at most 3)" in retried
    lost_status = answer if answer == 500 else 0
    assert [status for method, path, status in proxy.seen if method == "PUT" and lost in path] == [lost_status, 409]
    body = orjson.loads(result.stdout)
    assert body["failed"] == []
    [listed] = catalog.list_backups(storage.backups, table)
    assert listed.backup == body["backups"][0]["backup"] and listed.entities == 300
    assert len(list(read_data_lines(storage.backups, listed))) == 300


def test_a_manifest_applied_but_answered_500_completes_the_queued_run(
    functions, storage, monkeypatch, azurite_connection_string, unique_name
):
    table = unique_name("lostq")
    seed_table(storage.tables, table, 200)
    monkeypatch.setenv("BACKUP_TABLES", table)
    get_settings.cache_clear()
    with blobs_through_proxy(monkeypatch, azurite_connection_string) as proxy:
        proxy.after(500, method="PUT", path="manifest.json")

        messages, poisoned = daily_run(functions)

    assert poisoned == {}
    status = run_status(storage, orjson.loads(messages[0])["run"])
    assert status["status"] == "succeeded"
    assert [item["status"] for item in status["items"]] == ["done"]
    [listed] = catalog.list_backups(storage.backups, table)
    assert listed.entities == 200


def test_a_manifest_another_attempt_wrote_is_still_refused(storage, unique_name):
    table = unique_name("twice")
    seed_table(storage.tables, table, 10)
    manifest = backup_table(storage, table)

    with pytest.raises(Exception, match="already has a manifest"):
        backup_table(storage, table, backup_id=manifest.backup, started=manifest.started_at, attempt=2)

    assert catalog.read_manifest(storage.backups, manifest.backup) == manifest


def test_a_work_item_delivered_again_after_its_backup_completed_succeeds_without_writing(
    functions, storage, monkeypatch, unique_name
):
    table = unique_name("redeliver")
    seed_table(storage.tables, table, 150)
    monkeypatch.setenv("BACKUP_TABLES", table)
    get_settings.cache_clear()

    # Every delivery's ack is lost: the host delivers the finished item four more times.
    messages, poisoned = daily_run(functions, lost_acks=4)

    assert poisoned == {}
    status = run_status(storage, orjson.loads(messages[0])["run"])
    assert status["status"] == "succeeded"
    assert [item["status"] for item in status["items"]] == ["done"]
    [listed] = catalog.list_backups(storage.backups, table)
    assert backup_blob_names(storage, table) == [f"{listed.backup}/data.ndjson.gz", f"{listed.backup}/manifest.json"]


def test_a_table_page_whose_body_is_cut_is_read_again(storage, monkeypatch, azurite_connection_string, unique_name):
    table = unique_name("cut")
    seed_table(storage.tables, table, 2_500)
    with tables_through_proxy(monkeypatch, azurite_connection_string) as proxy:
        # The second page's body stops halfway (IncompleteRead), twice.
        proxy.after("cut", method="GET", path="NextPartitionKey", times=2)

        manifest = backup_table(Storage.from_settings(), table)

    assert proxy.after_faults[0].times == 0
    assert manifest.entities == 2_500
    lines = list(read_data_lines(storage.backups, manifest))
    assert len(lines) == len(set(lines)) == 2_500
