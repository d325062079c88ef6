"""Every operation of the app's own that changes data is one pair of audit entries: `started` before
its first write (what it will do), `ended` when it leaves (what it did, and whether it succeeded,
failed or was interrupted), linked by operation_id."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from localdev.sample import seed_table
from tablebackup.audit.entries import operation_entries
from tablebackup.audit.queries import find_entries
from tablebackup.backup.archiver import backup_table
from tablebackup.backup.retention import prune
from tablebackup.core.clients import Storage
from tablebackup.core.errors import BackupError
from tablebackup.core.settings import get_settings
from tablebackup.repository.erasures import erase
from tablebackup.restore.pointintime import undelete
from tablebackup.restore.restorer import RestoreRequest, restore
from tablebackup.transfer.importer import ImportRequest, import_entities
from tablebackup.transfer.sources import FileSource
from tests.faultproxy import tables_through_proxy
from tests.test_retention import _at, _backup_at
from tests.wire import table_state

ROOT = Path(__file__).resolve().parent.parent


def _pair(storage: Storage, table: str, operation: str) -> tuple[dict, dict]:
    """The one pair of entries for table and operation: (started, ended) afterData."""
    entries = find_entries(storage, table=table, operation=operation)
    assert [entry["afterData"]["phase"] for entry in entries] == ["started", "ended"], entries
    started, ended = (entry["afterData"] for entry in entries)
    assert started["operation_id"] == ended["operation_id"]
    return started, ended


@pytest.fixture
def backed_up(audit_storage, unique_name):
    table = unique_name("src")
    seed_table(audit_storage.tables, table, 1000)
    return table, backup_table(audit_storage, table)


def test_a_restore_is_one_pair_and_a_dry_run_writes_none(audit_storage, backed_up, unique_name):
    table, manifest = backed_up
    target = unique_name("copy")

    restore(audit_storage, RestoreRequest(table=table, backup="latest", target=target, dry_run=True))
    assert find_entries(audit_storage, table=target, operation="RESTORE") == []
    restore(audit_storage, RestoreRequest(table=table, backup="latest", target=target, actor="alice"))

    started, ended = _pair(audit_storage, target, "RESTORE")
    assert (started["backup"], started["target"], started["mode"]) == (manifest.backup, target, "replace")
    assert "restored" not in started  # what it will do, not what it did
    assert (ended["outcome"], ended["restored"], ended["backup"]) == ("succeeded", 1000, manifest.backup)


def test_a_restore_interrupted_midway_is_started_and_ended_interrupted(
    audit_storage, backed_up, unique_name, monkeypatch
):
    table, _ = backed_up
    target = unique_name("cut")
    monkeypatch.setenv("RESTORE_WORKERS", "1")
    get_settings.cache_clear()
    reported = []

    def stop(count: int) -> None:
        reported.append(count)
        if count >= 300:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        restore(Storage.from_settings(), RestoreRequest(table=table, backup="latest", target=target), on_progress=stop)

    _, ended = _pair(audit_storage, target, "RESTORE")
    assert ended["outcome"] == "interrupted"
    # Exact: the batches in flight at Ctrl-C were waited for and counted.
    written = len(table_state(audit_storage.tables.get_table_client(target)))
    assert (ended["table_writes"]["written"], ended["table_writes"]["uncertain"]) == (written, 0)
    assert 300 <= reported[-1] <= written < 1000


def test_a_restore_the_service_refuses_midway_is_ended_failed(
    audit_storage, backed_up, unique_name, monkeypatch, azurite_connection_string
):
    table, _ = backed_up
    target = unique_name("refused")
    monkeypatch.setenv("RESTORE_WORKERS", "1")
    with tables_through_proxy(monkeypatch, azurite_connection_string) as proxy:
        reported = []

        def refuse_the_rest(count: int) -> None:
            reported.append(count)
            # Every later batch fails (500), retries included.
            proxy.fail_matching, proxy.fail_matching_status = "$batch", 500

        with pytest.raises(Exception) as raised:
            restore(
                Storage.from_settings(),
                RestoreRequest(table=table, backup="latest", target=target),
                on_progress=refuse_the_rest,
            )

    _, ended = _pair(audit_storage, target, "RESTORE")
    assert ended["outcome"] == f"failed: {str(raised.value).splitlines()[0]}"
    # What landed before the service refused, exactly; the refused batch is uncertain (a 503 may
    # follow an applied batch).
    written = len(table_state(audit_storage.tables.get_table_client(target)))
    assert ended["table_writes"]["written"] == written >= reported[0] > 0
    assert ended["table_writes"]["uncertain"] >= 100


def test_the_entries_are_written_once_when_their_answers_are_lost(
    audit_storage, backed_up, unique_name, monkeypatch, azurite_connection_string
):
    table, _ = backed_up
    target = unique_name("lost")
    audit_table = audit_storage.settings.audit_table
    with tables_through_proxy(monkeypatch, azurite_connection_string) as proxy:
        proxy.after(500, method="POST", path=f"/{audit_table}", times=2)  # both inserts land, both answers lost
        restore(Storage.from_settings(), RestoreRequest(table=table, backup="latest", target=target))

    assert proxy.after_faults[0].times == 0
    _, ended = _pair(audit_storage, target, "RESTORE")
    assert ended["outcome"] == "succeeded"


def test_undelete_from_a_backup_is_one_pair(audit_storage, backed_up):
    table, manifest = backed_up
    client = audit_storage.tables.get_table_client(table)
    client.delete_entity("CANDIDATE", "0000001")

    result = undelete(audit_storage, table, "CANDIDATE", "0000001", actor="alice")

    assert (result["source"], result["restored"]) == ("backup", 1)
    started, ended = _pair(audit_storage, table, "RESTORE")
    assert (started["undelete"], started["source"], started["backup"]) == (True, "backup", manifest.backup)
    assert (ended["undelete"], ended["restored"], ended["outcome"]) == (True, 1, "succeeded")


def test_an_import_is_one_pair(audit_storage, unique_name, tmp_path):
    target = unique_name("imported")
    path = tmp_path / "input.ndjson"
    path.write_bytes(b"".join(orjson.dumps({"PartitionKey": "p", "RowKey": f"{n:03d}"}) + b"\n" for n in range(250)))

    import_entities(audit_storage, ImportRequest(table=target, actor="ops"), FileSource(path))

    started, ended = _pair(audit_storage, target, "IMPORT")
    assert (started["source"], started["mode"]) == (FileSource(path).name, "replace")
    assert (ended["imported"], ended["outcome"]) == (250, "succeeded")


def test_an_erase_is_one_pair(audit_storage, backed_up):
    table, _ = backed_up

    result = erase(audit_storage, table, "CANDIDATE", "0000002", reason="request 12", actor="dpo")

    started, ended = _pair(audit_storage, table, "ERASE")
    assert started["key_sha256"] == ended["key_sha256"] == result["key_sha256"]
    assert (ended["deleted"], ended["outcome"]) == (True, "succeeded")


def test_a_prune_is_one_pair_per_table_and_one_that_deletes_nothing_is_none(audit_storage, unique_name):
    table, quiet = unique_name("pruned"), unique_name("quiet")
    audit_storage.ensure_backup_container()
    old = [_backup_at(audit_storage, table, _at(f"2026-01-0{day}T02:00")) for day in (1, 2)]
    _backup_at(audit_storage, table, _at("2026-01-12T02:00"))
    _backup_at(audit_storage, quiet, _at("2026-01-12T02:00"))

    prune(audit_storage, [table, quiet], keep_daily=1, keep_weekly=0, keep_monthly=0, now=_at("2026-02-01"))

    started, ended = _pair(audit_storage, table, "PRUNE")
    assert sorted(started["delete"]) == sorted(ended["deleted"]) == sorted(old)
    assert ended["outcome"] == "succeeded"
    assert find_entries(audit_storage, table=quiet, operation="PRUNE") == []


def test_the_pair_survives_an_exception_the_body_raises(audit_storage, unique_name):
    table = unique_name("body")

    with pytest.raises(SystemExit), operation_entries(audit_storage, "RESTORE", "ops", table, {"mode": "x"}) as entries:
        entries.partial["safety_backup"] = "b1"
        raise SystemExit(1)

    _, ended = _pair(audit_storage, table, "RESTORE")
    assert (ended["mode"], ended["safety_backup"], ended["outcome"]) == ("x", "b1", "interrupted")
    assert ended["table_writes"]["written"] == 0  # it wrote nothing before it stopped


def test_a_restore_refused_for_a_damaged_backup_leaves_nothing_in_the_trail(audit_storage, backed_up, unique_name):
    import gzip

    table, manifest = backed_up
    target = unique_name("damaged")
    blob = audit_storage.backups.get_blob_client(manifest.data_blob)
    lines = gzip.decompress(blob.download_blob().readall()).splitlines(keepends=True)
    blob.upload_blob(gzip.compress(b"".join(lines[:-1])), overwrite=True)

    with pytest.raises(BackupError, match="is damaged"):
        restore(audit_storage, RestoreRequest(table=table, backup="latest", target=target))

    assert find_entries(audit_storage, table=target, operation="RESTORE") == []
