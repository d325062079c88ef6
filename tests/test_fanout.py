"""Fan-out against real Azurite: a large table is backed up in PartitionKey ranges by queue workers
(or CLI threads), the parts make one backup listed only when all are done, and it restores and
verifies exactly like a single-blob backup."""

from __future__ import annotations

import orjson
import pytest
from azure.functions.timer import TimerRequest

from localdev.host import QueueOutput, deliver
from localdev.sample import seed_table
from tablebackup.backup.archiver import backup_table, backup_tables
from tablebackup.backup.fanout import plan_run, split_points
from tablebackup.backup.runs import run_status
from tablebackup.core.errors import DamagedBackup
from tablebackup.core.settings import get_settings
from tablebackup.repository import catalog
from tablebackup.repository.backupformat import parts_digest
from tablebackup.repository.chain import state_entities
from tablebackup.restore.restorer import RestoreRequest, restore
from tablebackup.verify.checker import verify_backup
from tablebackup.verify.drills import run_drill
from tests.faultproxy import tables_through_proxy
from tests.test_cli import run_cli
from tests.wire import table_state


@pytest.fixture
def fanned(env, monkeypatch, unique_name):
    """A 600-entity table with a first (single-blob) backup, and settings that split the next
    full backup into ranges of about 150 entities."""
    monkeypatch.setenv("FANOUT_THRESHOLD_ENTITIES", "100")
    monkeypatch.setenv("PART_TARGET_ENTITIES", "150")
    get_settings.cache_clear()
    from tablebackup.core.clients import Storage

    storage = Storage.from_settings()
    table = unique_name("big")
    seed_table(storage.tables, table, 600)
    single = backup_table(storage, table)
    monkeypatch.setenv("BACKUP_TABLES", table)
    get_settings.cache_clear()
    return Storage.from_settings(), table, single


def daily_run(functions, lost_acks: int = 0) -> tuple[list[str], dict]:
    """The timer's run, its items delivered to the queue worker as the host would."""
    jobs = QueueOutput()
    functions["backup_daily"].get_user_function()(TimerRequest(past_due=False), jobs)
    return jobs.messages, deliver(functions["backup_worker"].get_user_function(), jobs.messages, lost_acks=lost_acks)


def _state(storage, manifest) -> list[dict]:
    return list(state_entities(storage.backups, manifest))


def test_split_points_cut_samples_into_increasing_ranges():
    samples = ["a"] * 10 + ["b"] * 10 + ["c"] * 10 + ["d"] * 10
    assert split_points(samples, 4) == ["b", "c", "d"]
    assert split_points(["only"] * 50, 8) == []  # one huge partition can't be cut
    assert split_points(["a", "b"], 8) == ["b"]


def test_a_previous_full_backup_without_key_samples_is_planned_without_splitting(storage, monkeypatch, unique_name):
    """A manifest written before key samples were recorded has none: the next full backup of that
    table is one part read in one stream, not a crash of the whole run's planning."""
    import tablebackup.backup.fanout

    monkeypatch.setattr(tablebackup.backup.fanout, "STREAMS_MIN_ENTITIES", 100)
    monkeypatch.setenv("FANOUT_THRESHOLD_ENTITIES", "100")
    monkeypatch.setenv("PART_TARGET_ENTITIES", "150")
    get_settings.cache_clear()
    from tablebackup.core.clients import Storage

    storage = Storage.from_settings()
    table, other = unique_name("oldmanifest"), unique_name("other")
    seed_table(storage.tables, table, 600)
    seed_table(storage.tables, other, 10)
    first = backup_table(storage, table)
    older = {k: v for k, v in orjson.loads(first.model_dump_json()).items() if k != "key_samples"}
    manifest_blob = storage.backups.get_blob_client(f"{first.backup}/manifest.json")
    manifest_blob.upload_blob(orjson.dumps(older), overwrite=True)
    assert catalog.read_manifest(storage.backups, first.backup).key_samples == []

    assert [(item.table, item.parts, item.streams) for item in plan_run(storage, [table, other])] == [
        (table, 1, None),
        (other, 1, None),
    ]
    run = backup_tables(storage, [table, other])

    assert run.ok and [m.table for m in run.backups] == [table, other]
    second = run.backups[0]
    assert second.parts is None and second.entities == 600
    assert _state(storage, second) == _state(storage, first)


def test_the_backup_records_key_samples_for_the_next_plan(fanned):
    _, _, single = fanned
    assert single.key_samples and single.key_samples == sorted(single.key_samples, key=lambda k: k.encode("utf-16-be"))


def test_queue_workers_back_up_ranges_into_one_backup_equal_to_a_single_blob_one(functions, fanned):
    storage, table, single = fanned

    messages, poisoned = daily_run(functions)

    assert poisoned == {} and len(messages) > 1
    items = [orjson.loads(m) for m in messages]
    assert {item["table"] for item in items} == {table} and items[0]["parts"] == len(items)
    manifest = catalog.latest_backup(storage.backups, table)
    assert manifest.parts and len(manifest.parts) == len(items)
    assert manifest.entities == 600 == sum(part.lines for part in manifest.parts)
    assert _state(storage, manifest) == _state(storage, single)
    assert run_status(storage, items[0]["run"])["status"] == "succeeded"


def test_a_multi_part_backup_restores_verifies_and_drills_exactly(functions, fanned, unique_name):
    storage, table, _ = fanned
    original = table_state(storage.tables.get_table_client(table))
    daily_run(functions)
    manifest = catalog.latest_backup(storage.backups, table)
    assert manifest.parts

    target = unique_name("fromparts")
    restore(storage, RestoreRequest(table=table, backup=manifest.backup, target=target))

    assert table_state(storage.tables.get_table_client(target)) == original
    outcome = verify_backup(storage, table)
    assert outcome.ok, outcome.as_json()
    assert run_drill(storage, table, full=True).ok


def test_a_part_that_fails_once_is_retried_and_completes(functions, fanned, monkeypatch, azurite_connection_string):
    storage, table, single = fanned
    with tables_through_proxy(monkeypatch, azurite_connection_string) as proxy:
        monkeypatch.setenv("STORAGE_RETRIES", "0")
        get_settings.cache_clear()
        # The first read of the table (by the first part) fails; the queue delivers it again.
        proxy.fail_matching, proxy.fail_matching_times, proxy.fail_matching_status = f"/{table}()", 1, 500

        _, poisoned = daily_run(functions)

    assert poisoned == {}
    manifest = catalog.latest_backup(storage.backups, table)
    assert any(part.blob.endswith("-a2.ndjson.gz") for part in manifest.parts)
    assert _state(storage, manifest) == _state(storage, single)


def test_a_part_that_fails_for_good_fails_the_run_and_nothing_is_listed(
    functions, fanned, monkeypatch, azurite_connection_string
):
    storage, table, single = fanned
    with tables_through_proxy(monkeypatch, azurite_connection_string) as proxy:
        monkeypatch.setenv("STORAGE_RETRIES", "0")
        get_settings.cache_clear()
        proxy.fail_matching = "EMPLOYEE"  # every request for the ranges that start or end at EMPLOYEE

        messages, poisoned = daily_run(functions)

    assert poisoned and len(poisoned) < len(messages) and all("EMPLOYEE" in message for message in poisoned)
    assert [m.backup for m in catalog.list_backups(storage.backups, table)] == [single.backup]
    status = run_status(storage, orjson.loads(messages[0])["run"])
    assert status["status"] == "failed"
    assert [item["status"] for item in status["items"]].count("failed") == len(poisoned)


def test_the_cli_runs_the_same_plan_with_parallel_workers(fanned):
    storage, table, single = fanned

    result = run_cli("backup", "--table", table, "--parallel", "4", "--json")

    assert result.returncode == 0, result.stderr
    manifest = catalog.read_manifest(storage.backups, orjson.loads(result.stdout)["backups"][0]["backup"])
    assert manifest.parts and _state(storage, manifest) == _state(storage, single)


def test_backup_tables_in_parallel_keeps_tables_isolated(storage, unique_name):
    tables = [unique_name("par") for _ in range(4)]
    for count, table in enumerate(tables, start=1):
        seed_table(storage.tables, table, 10 * count)
    missing = unique_name("missing")

    run = backup_tables(storage, [*tables, missing], parallel=3)

    assert [m.table for m in run.backups] == tables
    assert [m.entities for m in run.backups] == [10, 20, 30, 40]
    assert list(run.failures) == [missing]


def test_a_table_with_a_previous_backup_is_read_in_parallel_streams(storage, monkeypatch, unique_name):
    import tablebackup.backup.fanout

    monkeypatch.setattr(tablebackup.backup.fanout, "STREAMS_MIN_ENTITIES", 100)
    table = unique_name("streams")
    seed_table(storage.tables, table, 600)
    first = backup_table(storage, table)  # no key samples yet: one stream

    [second] = backup_tables(storage, [table]).backups

    assert first.parts is None
    assert second.parts and len(second.parts) == storage.settings.read_streams == 2
    assert _state(storage, second) == _state(storage, first)
    assert verify_backup(storage, table).ok


def test_merged_samples_stay_at_even_intervals_of_the_whole_data():
    from tablebackup.backup.fanout import PartResult, merge_samples
    from tablebackup.repository.backupformat import BlobInfo

    def part(lines: int, samples: list[str]) -> PartResult:
        return PartResult(info=BlobInfo(blob="b", lines=lines, bytes=1, sha256="0"), samples=samples)

    # A small part sampled densely and a large part sampled sparsely.
    merged = merge_samples([part(1_000, ["a"] * 500), part(9_000, ["z"] * 100)])

    assert abs(merged.count("a") - 51) <= 1 and abs(merged.count("z") - 461) <= 1
    assert split_points(merged, 2) == ["z"]


def test_import_reads_a_whole_downloaded_multi_part_backup(storage, monkeypatch, unique_name, tmp_path):
    import tablebackup.backup.fanout

    monkeypatch.setattr(tablebackup.backup.fanout, "STREAMS_MIN_ENTITIES", 100)
    table = unique_name("parts")
    seed_table(storage.tables, table, 600)
    original = table_state(storage.tables.get_table_client(table))
    backup_table(storage, table)
    [manifest] = backup_tables(storage, [table]).backups
    assert manifest.parts and len(manifest.parts) == 2
    # As `az storage blob download-batch --pattern '<id>/*'` leaves it: the manifest and every blob.
    folder = tmp_path / manifest.backup
    folder.mkdir()
    for blob in storage.backups.list_blobs(name_starts_with=f"{manifest.backup}/"):
        (folder / blob.name.split("/")[-1]).write_bytes(storage.backups.download_blob(blob.name).readall())
    target = unique_name("fromfolder")

    result = run_cli("import", "--table", target, "--input", str(folder), "--json")
    refused = run_cli("import", "--table", target, "--input", str(tmp_path))

    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["imported"] == 600
    assert table_state(storage.tables.get_table_client(target)) == original
    assert refused.returncode == 1 and "without a backup's manifest.json" in refused.stderr


def backup_blob_names(storage, table: str) -> list[str]:
    return sorted(blob.name for blob in storage.backups.list_blobs(name_starts_with=f"{table}-"))


def test_parts_delivered_again_after_their_backup_completed_succeed_without_writing(functions, fanned):
    storage, table, single = fanned
    before = backup_blob_names(storage, table)

    messages, poisoned = daily_run(functions, lost_acks=2)

    assert len(messages) > 1 and poisoned == {}
    status = run_status(storage, orjson.loads(messages[0])["run"])
    assert status["status"] == "succeeded"
    manifest = catalog.latest_backup(storage.backups, table)
    written = sorted(set(backup_blob_names(storage, table)) - set(before))
    assert written == sorted([*(part.blob for part in manifest.parts), f"{manifest.backup}/manifest.json"])
    assert _state(storage, manifest) == _state(storage, single)


def _parts_backup(storage, table):
    manifest = backup_tables(storage, [table], parallel=2).backups[0]
    assert manifest.parts and len(manifest.parts) >= 3
    return manifest


def _put_manifest(storage, manifest, **changes) -> None:
    data = {**orjson.loads(manifest.model_dump_json()), **changes}
    storage.backups.upload_blob(f"{manifest.backup}/manifest.json", orjson.dumps(data), overwrite=True)


def test_parts_in_another_order_than_the_digest_of_parts_are_refused_by_verify_and_restore(fanned):
    storage, table, _ = fanned
    manifest = _parts_backup(storage, table)
    parts = [part.model_dump() for part in manifest.parts]
    parts[0], parts[1] = parts[1], parts[0]
    _put_manifest(storage, manifest, parts=parts, data_blob=parts[0]["blob"])
    client = storage.tables.get_table_client(table)
    client.delete_entity("CANDIDATE", "0000001")
    before = table_state(client)

    outcome = verify_backup(storage, table)
    result = run_cli("restore", "-t", table, "-b", manifest.backup, "--mode", "mirror")

    assert not outcome.ok and outcome.backup == manifest.backup
    detail = next(check.detail for check in outcome.checks if check.name == "manifest")
    assert "lists its parts in another order" in detail
    assert result.returncode == 1 and "lists its parts in another order" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert table_state(client) == before
    assert catalog.backup_attempts(storage.backups, table)[0][0] == manifest.backup  # no safety backup


def _assert_mirror_refused(storage, table: str, backup: str, message: str) -> None:
    """A mirror restore of a changed table is refused with `message` and changes nothing."""
    client = storage.tables.get_table_client(table)
    client.delete_entity("CANDIDATE", "0000001")
    before = table_state(client)

    with pytest.raises(DamagedBackup, match=message):
        restore(storage, RestoreRequest(table=table, backup=backup, mode="mirror"))

    assert table_state(client) == before
    assert catalog.backup_attempts(storage.backups, table)[0][0] == backup  # no safety backup


def test_a_part_whose_count_was_edited_is_refused_before_the_first_write(fanned):
    storage, table, _ = fanned
    manifest = _parts_backup(storage, table)
    parts = [part.model_dump() for part in manifest.parts]
    parts[1]["lines"] += 7  # the total agrees with the parts; the part itself does not
    _put_manifest(storage, manifest, parts=parts, entities=manifest.entities + 7)

    _assert_mirror_refused(storage, table, manifest.backup, rf"{parts[1]['blob']}: \d+ lines, the manifest says \d+")

    assert "entity count" in {check.name for check in verify_backup(storage, table).checks if not check.ok}


def test_parts_reordered_with_a_matching_digest_are_refused_by_their_key_order(fanned):
    """Whoever rewrote the digest too still cannot make mirror delete: the keys no longer increase."""
    storage, table, _ = fanned
    manifest = _parts_backup(storage, table)
    swapped = [manifest.parts[1], manifest.parts[0], *manifest.parts[2:]]
    _put_manifest(
        storage,
        manifest,
        parts=[part.model_dump() for part in swapped],
        data_blob=swapped[0].blob,
        sha256=parts_digest(swapped),
    )

    _assert_mirror_refused(storage, table, manifest.backup, rf"{swapped[1].blob} line 1: key .* does not sort after")

    assert {check.name for check in verify_backup(storage, table).checks if not check.ok} == {"key order"}
