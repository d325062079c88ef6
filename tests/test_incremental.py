"""Incremental backups against real Azurite: only changes and deletions are stored, and restoring
any link of a chain gives the table exactly as it was at that backup."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from azure.data.tables import UpdateMode

from localdev.sample import seed_table
from tablebackup.backup.archiver import backup_table
from tablebackup.backup.retention import prune
from tablebackup.backup.runs import run_queued_item, start_run
from tablebackup.core.errors import BackupError
from tablebackup.core.settings import get_settings
from tablebackup.repository import catalog
from tablebackup.repository.attempts import record_parent
from tablebackup.repository.backupformat import new_backup_id
from tablebackup.repository.chain import state_size
from tablebackup.restore.restorer import RestoreRequest, restore
from tablebackup.verify.checker import verify_backup
from tests.test_cli import run_cli
from tests.wire import table_state


@pytest.fixture
def exact(env, monkeypatch):
    """Storage whose incrementals take no safety overlap, so a test sees exactly what changed."""
    monkeypatch.setenv("INCREMENTAL_OVERLAP_MINUTES", "0")
    get_settings.cache_clear()
    from tablebackup.core.clients import Storage

    return Storage.from_settings()


def _lines(storage, blob: str) -> list[dict]:
    return [orjson.loads(line) for line in gzip.decompress(storage.backups.download_blob(blob).readall()).splitlines()]


def _restored(storage, manifest, target: str) -> dict:
    restore(storage, RestoreRequest(table=manifest.table, backup=manifest.backup, target=target))
    return table_state(storage.tables.get_table_client(target))


def test_a_chain_restores_exactly_the_state_at_each_link(exact, unique_name):
    storage = exact
    table = unique_name("chain")
    seed_table(storage.tables, table, 200)
    client = storage.tables.get_table_client(table)
    at_full = table_state(client)
    full = backup_table(storage, table, incremental=True)  # no backup yet: a full one
    assert full.kind == "full" and full.parent is None

    client.update_entity({"PartitionKey": "CANDIDATE", "RowKey": "0000001", "name": "updated"}, UpdateMode.MERGE)
    client.delete_entity("CANDIDATE", "0000002")
    client.upsert_entity({"PartitionKey": "NEW", "RowKey": "a", "n": 1})
    at_first = table_state(client)
    first = backup_table(storage, table, incremental=True)

    client.delete_entity("NEW", "a")
    client.upsert_entity({"PartitionKey": "CANDIDATE", "RowKey": "0000002", "name": "back again"})
    client.update_entity({"PartitionKey": "CANDIDATE", "RowKey": "0000001", "name": "twice"}, UpdateMode.MERGE)
    client.delete_entity("", "0000160")
    at_second = table_state(client)
    second = backup_table(storage, table, incremental=True)

    assert (first.kind, first.parent, second.parent) == ("incremental", full.backup, first.backup)
    assert first.entities == 2 and first.deleted.lines == 1 and first.keys.lines == 200
    assert _lines(storage, first.deleted.blob) == [{"PartitionKey": "CANDIDATE", "RowKey": "0000002"}]
    assert second.entities == 2 and second.deleted.lines == 2 and second.keys.lines == 199
    assert _restored(storage, full, unique_name("atfull")) == at_full
    assert _restored(storage, first, unique_name("atfirst")) == at_first
    assert _restored(storage, second, unique_name("atsecond")) == at_second


def test_a_purged_range_is_recorded_in_bounded_chunks(exact, unique_name, monkeypatch):
    """Deleted keys are written a few at a time however many are gone before the next live key."""
    from tablebackup.backup import incremental
    from tablebackup.repository.backupformat import DataBlobWriter

    storage = exact
    table = unique_name("purge")
    seed_table(storage.tables, table, 200)  # 40 per partition
    client = storage.tables.get_table_client(table)
    full = backup_table(storage, table, incremental=True)
    purged = [(e["PartitionKey"], e["RowKey"]) for e in client.query_entities("PartitionKey eq 'CANDIDATE'")]
    trailing = [(e["PartitionKey"], e["RowKey"]) for e in client.query_entities("PartitionKey eq 'ünïcödé 分区'")]
    for partition_key, row_key in purged + trailing[5:]:
        client.delete_entity(partition_key, row_key)
    at_purge = table_state(client)

    monkeypatch.setattr(incremental, "_DELETED_CHUNK", 7)
    written: list[tuple[str, int]] = []
    original = DataBlobWriter.write_lines

    def recording(self, lines):
        written.append((self.name, len(lines)))
        original(self, lines)

    monkeypatch.setattr(DataBlobWriter, "write_lines", recording)
    purge = backup_table(storage, table, incremental=True)

    gone = [(key["PartitionKey"], key["RowKey"]) for key in _lines(storage, purge.deleted.blob)]
    assert gone == purged + trailing[5:] and purge.deleted.lines == 75
    chunks = [count for name, count in written if name == purge.deleted.blob]
    assert max(chunks) <= 7 and sum(chunks) == 75
    assert _restored(storage, purge, unique_name("atpurge")) == at_purge
    assert full.kind == "full"


def test_mirror_from_an_incremental_deletes_what_the_chain_deleted(exact, unique_name):
    storage = exact
    table = unique_name("mirror")
    seed_table(storage.tables, table, 50)
    client = storage.tables.get_table_client(table)
    backup_table(storage, table)
    client.delete_entity("CANDIDATE", "0000003")
    expected = table_state(client)
    incremental = backup_table(storage, table, incremental=True)
    client.upsert_entity({"PartitionKey": "CANDIDATE", "RowKey": "0000003", "name": "came back"})

    result = restore(storage, RestoreRequest(table=table, backup=incremental.backup, mode="mirror"))

    assert result.deleted == 1 and table_state(client) == expected


def test_list_backups_shows_kind_and_parent(exact, unique_name):
    storage = exact
    table = unique_name("kinds")
    seed_table(storage.tables, table, 5)
    full = backup_table(storage, table)
    incremental = backup_table(storage, table, incremental=True)

    listed = orjson.loads(run_cli("list-backups", "--table", table, "--json").stdout)["backups"]

    assert [(b["backup"], b["kind"], b["parent"]) for b in listed] == [
        (incremental.backup, "incremental", full.backup),
        (full.backup, "full", None),
    ]
    cli = run_cli("backup", "--table", table, "--incremental", "--json")
    assert orjson.loads(cli.stdout)["backups"][0]["parent"] == incremental.backup


def test_verify_checks_the_whole_chain(exact, unique_name):
    storage = exact
    table = unique_name("verifychain")
    seed_table(storage.tables, table, 30)
    full = backup_table(storage, table)
    storage.tables.get_table_client(table).delete_entity("CANDIDATE", "0000001")
    backup_table(storage, table, incremental=True)

    good = verify_backup(storage, table)
    assert good.ok and any(c.name == "chain" and c.ok for c in good.checks)
    assert "drift +0" in next(c.detail for c in good.checks if c.name == "live table count")

    blob = storage.backups.get_blob_client(full.data_blob)
    blob.upload_blob(blob.download_blob().readall()[:-20], overwrite=True)
    damaged = verify_backup(storage, table)
    assert not damaged.ok
    assert full.data_blob in next(c.detail for c in damaged.checks if c.name == "checksum")


def test_an_incremental_whose_parent_is_gone_is_refused(exact, unique_name):
    storage = exact
    table = unique_name("orphan")
    seed_table(storage.tables, table, 5)
    full = backup_table(storage, table)
    incremental = backup_table(storage, table, incremental=True)
    storage.backups.delete_blob(f"{full.backup}/manifest.json")

    with pytest.raises(Exception, match="not found"):
        restore(storage, RestoreRequest(table=table, backup=incremental.backup, target=unique_name("x")))
    assert not verify_backup(storage, table, incremental.backup).ok


def test_pruning_while_an_incremental_runs_keeps_its_parent(exact, monkeypatch, unique_name):
    """A newer full backup (a safety backup before a restore, say) completes while an incremental is
    being written, and retention runs: the incremental's parent is no longer the newest, but it must
    stay, or the incremental completes without it."""
    import tablebackup.backup.archiver

    storage = exact
    table = unique_name("prunerace")
    seed_table(storage.tables, table, 20)
    client = storage.tables.get_table_client(table)
    parent = backup_table(storage, table)
    client.delete_entity("CANDIDATE", "0000003")
    real, meanwhile = tablebackup.backup.archiver.write_manifest, {}

    def write_manifest(container, manifest):
        if manifest.kind == "incremental" and not meanwhile:
            meanwhile["newer"] = backup_table(storage, table)
            meanwhile["pruned"] = prune(storage, [table], keep_daily=1, keep_weekly=0, keep_monthly=0)
        real(container, manifest)

    monkeypatch.setattr(tablebackup.backup.archiver, "write_manifest", write_manifest)
    incremental = backup_table(storage, table, incremental=True)
    monkeypatch.undo()

    pruned = meanwhile["pruned"]
    assert (incremental.parent, pruned["deleted"]) == (parent.backup, [])
    assert f"parent of {incremental.backup}" in pruned["reasons"][parent.backup]
    assert _restored(storage, incremental, unique_name("atincr")) == table_state(client)
    assert verify_backup(storage, table, incremental.backup).ok


def test_an_incremental_started_after_retention_planned_still_keeps_its_parent(exact, monkeypatch, unique_name):
    """Retention reads the attempts in progress again just before it deletes: an incremental that
    recorded its parent after the plan was made still protects it."""
    import tablebackup.backup.retention

    storage = exact
    table = unique_name("lateincr")
    seed_table(storage.tables, table, 5)
    parent = backup_table(storage, table)
    newer = backup_table(storage, table)
    started = new_backup_id(table, datetime.now(UTC))
    real = tablebackup.backup.retention.plan

    def plan_then_an_incremental_starts(*args, **kwargs):
        planned = real(*args, **kwargs)
        record_parent(storage.backups, started, parent.backup)  # what an incremental does first
        return planned

    monkeypatch.setattr(tablebackup.backup.retention, "plan", plan_then_an_incremental_starts)
    pruned = prune(storage, [table], keep_daily=1, keep_weekly=0, keep_monthly=0)

    assert pruned["deleted"] == [] and parent.backup in pruned["keep"] and newer.backup in pruned["keep"]
    assert pruned["reasons"][parent.backup] == [f"parent of {started}"]
    assert catalog.read_manifest(storage.backups, parent.backup).backup == parent.backup


def test_an_incremental_whose_parent_is_deleted_while_it_runs_is_never_listed(exact, monkeypatch, unique_name):
    storage = exact
    table = unique_name("parentgone")
    seed_table(storage.tables, table, 5)
    parent = backup_table(storage, table)
    import tablebackup.backup.incremental

    real = tablebackup.backup.incremental.iter_pages

    def pages(table_client, **kwargs):
        if kwargs.get("select"):  # between the scans, the parent loses its manifest (deleted by hand)
            storage.backups.delete_blob(f"{parent.backup}/manifest.json")
        return real(table_client, **kwargs)

    monkeypatch.setattr(tablebackup.backup.incremental, "iter_pages", pages)
    with pytest.raises(BackupError, match="was deleted while it ran"):
        backup_table(storage, table, incremental=True)
    assert catalog.backup_ids(storage.backups, table) == []


def test_an_incremental_builds_on_the_newest_backup_taken_before_it(exact, unique_name):
    """A run planned before another backup completed (a safety backup taken meanwhile, say) builds
    on the backup before it: a chain only goes back in time."""
    storage = exact
    table = unique_name("planned")
    seed_table(storage.tables, table, 10)
    client = storage.tables.get_table_client(table)
    now = datetime.now(UTC)
    older = backup_table(storage, table, started=now - timedelta(minutes=2))
    newer = backup_table(storage, table, started=now)
    client.delete_entity("CANDIDATE", "0000004")

    planned = backup_table(storage, table, incremental=True, started=now - timedelta(minutes=1))

    assert (planned.kind, planned.parent) == ("incremental", older.backup)
    assert catalog.latest_backup(storage.backups, table).backup == newer.backup
    assert _restored(storage, planned, unique_name("atplanned")) == table_state(client)


@pytest.mark.parametrize(("day", "kind"), [("2026-11-29", "full"), ("2026-11-30", "incremental")])
def test_the_timer_takes_a_weekly_full_and_incrementals_between(env, monkeypatch, unique_name, day, kind):
    table = unique_name("weekly")
    monkeypatch.setenv("BACKUP_MODE", "incremental")
    monkeypatch.setenv("FULL_BACKUP_DAY", "Sunday")
    monkeypatch.setenv("BACKUP_TABLES", table)
    get_settings.cache_clear()
    from tablebackup.core.clients import Storage

    storage = Storage.from_settings()
    seed_table(storage.tables, table, 5)
    # The parent is taken the day before the planned run, on the same injected calendar, so the test
    # means the same thing whatever today's date is.
    planned = datetime.fromisoformat(day).replace(tzinfo=UTC)  # 29th is a Sunday
    backup_table(storage, table, started=planned - timedelta(days=1))

    _, messages = start_run(storage, now=planned)
    for message in messages:
        run_queued_item(storage, message, delivery=1)

    assert catalog.latest_backup(storage.backups, table).kind == kind


def _deleting_before_the_key_scan(monkeypatch, client, key: tuple[str, str]) -> list[str]:
    """Make the next incremental's key scan start only after `key` is deleted from the live table:
    the real interleaving of an application deleting an entity while the incremental runs."""
    import tablebackup.backup.incremental

    real, scans = tablebackup.backup.incremental.iter_pages, []

    def pages(table_client, **kwargs):
        scans.append("keys" if kwargs.get("select") else "changes")
        if kwargs.get("select") and key is not None:
            client.delete_entity(*key)
        return real(table_client, **kwargs)

    monkeypatch.setattr(tablebackup.backup.incremental, "iter_pages", pages)
    return scans


def test_an_entity_created_and_deleted_while_an_incremental_runs_stays_deleted(exact, monkeypatch, unique_name):
    """Created after the parent, deleted between the changes scan and the key scan: it is in the
    incremental's data but in no key set. Every link's state must still be the live table."""
    storage = exact
    table = unique_name("ghost")
    seed_table(storage.tables, table, 20)
    client = storage.tables.get_table_client(table)
    backup_table(storage, table)
    client.upsert_entity({"PartitionKey": "GHOST", "RowKey": "short-lived", "n": 1})
    client.update_entity({"PartitionKey": "CANDIDATE", "RowKey": "0000001", "name": "changed"}, UpdateMode.MERGE)

    scans = _deleting_before_the_key_scan(monkeypatch, client, ("GHOST", "short-lived"))
    first = backup_table(storage, table, incremental=True)
    at_first = table_state(client)
    monkeypatch.undo()

    assert scans == ["changes", "keys"] and first.entities == 2  # the ghost was read as a change
    assert ("GHOST", "short-lived") not in at_first
    assert _restored(storage, first, unique_name("atfirst")) == at_first
    assert first.keys.lines == state_size(first) == len(at_first)

    client.delete_entity("CANDIDATE", "0000002")
    second = backup_table(storage, table, incremental=True)
    assert _restored(storage, second, unique_name("atsecond")) == table_state(client)
