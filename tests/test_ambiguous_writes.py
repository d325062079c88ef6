"""Restore and import under ambiguous faults: a $batch the service applied whose answer was lost (a
500, a dropped connection, a read timeout, a cut body) is retried, and the retry's 409 is resolved
from what the target holds. The counts are what this run wrote, nothing more, nothing less."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from localdev.sample import seed_table
from tablebackup.audit.queries import find_entries
from tablebackup.backup.archiver import backup_table
from tablebackup.core.entities import decode_line
from tablebackup.core.errors import StorageUnavailable
from tablebackup.core.settings import get_settings
from tablebackup.repository.backupformat import read_data_lines
from tablebackup.restore.pointintime import undelete
from tablebackup.restore.restorer import RestoreRequest, restore
from tablebackup.storage import tablewriter
from tablebackup.storage.tablewriter import submit_operations, upsert_operations
from tablebackup.transfer.importer import ImportRequest, import_entities
from tablebackup.transfer.sources import FileSource
from tests.faultproxy import tables_through_proxy
from tests.test_pointintime import A, Trail
from tests.wire import table_state

LOST_ANSWERS = [500, "drop", "hang", "cut"]


@pytest.fixture
def backed_up(storage, unique_name):
    """A 300-entity sample table, its state, and a backup of it."""
    table = unique_name("src")
    seed_table(storage.tables, table, 300)
    client = storage.tables.get_table_client(table)
    return table, table_state(client), backup_table(storage, table)


@pytest.fixture
def proxy(monkeypatch, azurite_connection_string, env):
    """Tables through the fault proxy, with a short read timeout so a held answer times out."""
    with tables_through_proxy(monkeypatch, azurite_connection_string) as proxy:
        monkeypatch.setenv("STORAGE_TIMEOUT_SECONDS", "1")
        get_settings.cache_clear()
        proxy.hang_seconds = 1.5
        yield proxy


def _storage():
    from tablebackup.core.clients import Storage

    return Storage.from_settings()


def _batches(proxy) -> list[int]:
    return [status for method, path, status in proxy.seen if method == "POST" and path.endswith("/$batch")]


def _one_answer_lost(proxy, lost) -> None:
    """The fault happened once, and every other batch was answered 202 (batches run in parallel)."""
    assert proxy.after_faults[0].times == 0
    statuses = _batches(proxy)
    lost_status = 500 if lost == 500 else 202 if lost == "cut" else 0
    others = list(statuses)
    others.remove(lost_status)
    assert set(others) == {202}


@pytest.mark.parametrize("lost", LOST_ANSWERS)
def test_restore_missing_counts_a_batch_applied_whose_answer_was_lost_as_restored(
    storage, backed_up, proxy, unique_name, lost
):
    table, original, manifest = backed_up
    target = unique_name("missing")
    client = storage.tables.create_table(target)
    kept = [decode_line(line) for line in read_data_lines(storage.backups, manifest)][:40]
    submit_operations(client, upsert_operations(kept))
    proxy.after(lost, method="POST", path="/$batch")

    result = restore(_storage(), RestoreRequest(table=table, backup="latest", target=target, mode="missing"))

    assert (result.restored, result.skipped) == (260, 40)
    _one_answer_lost(proxy, lost)
    assert table_state(client) == original


def test_restore_missing_skips_what_another_writer_inserted_meanwhile(
    storage, backed_up, proxy, monkeypatch, unique_name
):
    table, original, _ = backed_up
    # One batch at a time: the other writer acts before any batch of this restore reaches the table.
    monkeypatch.setenv("RESTORE_WORKERS", "1")
    get_settings.cache_clear()
    target = unique_name("raced")
    client = storage.tables.create_table(target)
    theirs = {"PartitionKey": "CANDIDATE", "RowKey": "0000005", "name": "written by someone else"}

    def another_writer(method: str, path: str) -> None:
        if method == "POST" and path.endswith("/$batch") and proxy.before_forward:
            proxy.before_forward = None
            client.create_entity(theirs)

    proxy.before_forward = another_writer

    result = restore(_storage(), RestoreRequest(table=table, backup="latest", target=target, mode="missing"))

    assert (result.restored, result.skipped) == (299, 1)
    state = table_state(client)
    assert state[("CANDIDATE", "0000005")]["name"] == ("Edm.String", "written by someone else")
    assert {key: value for key, value in state.items() if key != ("CANDIDATE", "0000005")} == {
        key: value for key, value in original.items() if key != ("CANDIDATE", "0000005")
    }


@pytest.mark.parametrize("lost", ["drop", "hang"])
def test_a_replace_batch_is_retried_after_a_dropped_connection_or_a_read_timeout(
    storage, backed_up, proxy, unique_name, lost
):
    table, original, _ = backed_up
    target = unique_name("replaced")
    proxy.after(lost, method="POST", path="/$batch", times=2)

    result = restore(_storage(), RestoreRequest(table=table, backup="latest", target=target))

    assert result.restored == 300
    assert table_state(storage.tables.get_table_client(target)) == original


def _ndjson(tmp_path, entities: list[dict]):
    path = tmp_path / "input.ndjson"
    path.write_bytes(b"".join(orjson.dumps(entity) + b"\n" for entity in entities))
    return path


def test_import_missing_counts_what_it_wrote_when_a_batch_answer_was_lost(
    audit_storage, proxy, monkeypatch, unique_name, tmp_path
):
    target = unique_name("imported")
    audit_storage.tables.create_table(target)
    entities = [{"PartitionKey": f"p{n // 1000}", "RowKey": f"{n:05d}", "n": n} for n in range(5000)]
    path = _ndjson(tmp_path, entities)
    proxy.after(500, method="POST", path="/$batch")
    get_settings.cache_clear()

    result = import_entities(_storage(), ImportRequest(table=target, mode="missing", actor="ops"), FileSource(path))

    assert (result.imported, result.skipped, result.failed) == (5000, 0, 0)
    _one_answer_lost(proxy, 500)
    assert len(table_state(audit_storage.tables.get_table_client(target))) == 5000
    # The audit writes go through the same faulty proxy: still exactly one pair.
    [started, entry] = find_entries(audit_storage, table=target, operation="IMPORT")
    assert (started["afterData"]["phase"], entry["afterData"]["outcome"]) == ("started", "succeeded")
    assert (entry["afterData"]["imported"], entry["afterData"]["skipped"]) == (5000, 0)


def test_one_refused_entity_costs_only_itself_and_the_counts_stay_true(storage, unique_name, tmp_path):
    entities = [{"PartitionKey": "p", "RowKey": f"{n:04d}", "n": n} for n in range(400)]
    # 40,000 characters are 80,000 bytes in UTF-16: over the service's 64 KiB property limit.
    entities[250]["s"] = "x" * 40_000
    target = unique_name("onebad")
    path = _ndjson(tmp_path, entities)

    result = import_entities(storage, ImportRequest(table=target, mode="missing"), FileSource(path))

    assert (result.imported, result.skipped, result.failed) == (399, 0, 1)
    assert "RowKey='0250'" in result.errors[0] and "HTTP 400" in result.errors[0]
    assert len(table_state(storage.tables.get_table_client(target))) == 399


@pytest.mark.parametrize("source", ["audit", "backup"])
def test_undelete_whose_insert_answer_was_lost_reports_it_restored(audit_storage, proxy, unique_name, source):
    table = unique_name("undel")
    seed_table(audit_storage.tables, table, 10)
    trail = Trail(audit_storage, table)
    original = table_state(trail.client)
    if source == "backup":
        backup_table(audit_storage, table)
    deleted_at = datetime.now(UTC) - timedelta(minutes=5 if source == "audit" else 0)
    trail.delete(A, deleted_at, audit_before=source == "audit")
    proxy.after(500, method="POST", path="/$batch")

    result = undelete(_storage(), table, *A, actor="alice")

    assert (result["source"], result["restored"]) == (source, 1)
    assert _batches(proxy)[:2] == [500, 202]
    assert table_state(trail.client) == original


def test_mirror_counts_deletes_whose_batch_answer_was_lost_as_deleted(
    storage, backed_up, proxy, monkeypatch, unique_name
):
    table, original, manifest = backed_up
    monkeypatch.setenv("RESTORE_WORKERS", "1")  # the first batch, which holds the deletes, loses its answer
    get_settings.cache_clear()
    target = unique_name("mirrored")
    client = storage.tables.create_table(target)
    lines = [decode_line(line) for line in read_data_lines(storage.backups, manifest)]
    extra = [{**lines[0], "RowKey": f"{lines[0]['RowKey']}-extra{n}"} for n in range(3)]
    submit_operations(client, upsert_operations(lines + extra))
    proxy.after(500, method="POST", path="/$batch")

    result = restore(_storage(), RestoreRequest(table=table, backup="latest", target=target, mode="mirror"))

    assert (result.restored, result.deleted) == (300, 3)
    _one_answer_lost(proxy, 500)
    assert table_state(client) == original


@pytest.mark.parametrize("lost", ["drop", "hang"])
def test_a_target_table_created_whose_answer_was_lost_is_used(storage, backed_up, proxy, unique_name, lost):
    table, original, _ = backed_up
    target = unique_name("created")
    proxy.after(lost, method="POST", path="/Tables")

    result = restore(_storage(), RestoreRequest(table=table, backup="latest", target=target))

    assert result.restored == 300
    assert [status for method, path, status in proxy.seen if method == "POST" and "/Tables" in path][:2] == [0, 409]
    assert table_state(storage.tables.get_table_client(target)) == original


def test_a_batch_that_keeps_failing_is_sent_storage_retries_plus_one_times(storage, proxy, unique_name):
    client = storage.tables.create_table(unique_name("down"))
    proxied = _storage().tables.get_table_client(client.table_name)
    proxy.fail_matching, proxy.fail_matching_status = "$batch", 500  # every batch answered 500

    with pytest.raises(StorageUnavailable, match=r"^writing to table '.*' failed with HTTP 500: ") as failed:
        submit_operations(proxied, [("insert", {"PartitionKey": "a", "RowKey": "b"})])

    assert "\n" not in str(failed.value)
    assert _batches(proxy) == [500] * 3  # STORAGE_RETRIES=2: the SDK does not retry on top
    assert table_state(client) == {}


def test_a_batch_the_service_keeps_answering_server_busy_is_retried_more_patiently(
    storage, proxy, unique_name, monkeypatch
):
    """503 Server Busy is the service asking for a slower pace: at least BUSY_RETRIES retries, however
    few STORAGE_RETRIES allows for faults, before the write gives up (as transient: run it again)."""
    monkeypatch.setattr(tablewriter, "BUSY_RETRIES", 4)
    client = storage.tables.create_table(unique_name("busy"))
    proxied = _storage().tables.get_table_client(client.table_name)
    proxy.fail_matching = "$batch"

    with pytest.raises(StorageUnavailable, match=r"failed with HTTP 503: "):
        submit_operations(proxied, [("insert", {"PartitionKey": "a", "RowKey": "b"})])
    assert _batches(proxy) == [503] * 5

    proxy.fail_matching_times = 3  # busy three times, then through: more than STORAGE_RETRIES=2 allows
    assert submit_operations(proxied, [("insert", {"PartitionKey": "a", "RowKey": "b"})]).written == 1
    assert table_state(client) != {}
