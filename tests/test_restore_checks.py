"""A backup is checked whole before it is trusted, against real Azurite: a manifest that does not
hold together (another backup's, another table's, blobs outside its folder, a parent of another
table) is refused by restore and verify; and a restore reads every blob of the chain, every line
and every count before its first write, so a damaged backup changes nothing, even with --mode
mirror. --force stays the escape."""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import timedelta

import azure.functions as func
import orjson
import pytest
from azure.data.tables import UpdateMode

from localdev.host import QueueOutput, invoke
from localdev.sample import seed_table
from tablebackup.backup.archiver import backup_table, backup_tables
from tablebackup.core.errors import DamagedBackup
from tablebackup.core.settings import get_settings
from tablebackup.repository import catalog
from tablebackup.repository.backupformat import manifest_blob_name, new_backup_id
from tablebackup.restore.restorer import RestoreRequest, restore
from tablebackup.verify.checker import verify_backup
from tests.test_cli import run_cli
from tests.wire import table_state

BAD_LINE = b'{"PartitionKey":"p","RowKey":"r","n@odata.type":"Edm.Int64","n":"12x"}\n'


@pytest.fixture
def backed_up(storage, unique_name):
    """A 300-entity table, changed after its backup so that any restore would write."""
    table = unique_name("chk")
    seed_table(storage.tables, table, 300)
    manifest = backup_table(storage, table)
    client = storage.tables.get_table_client(table)
    client.update_entity({"PartitionKey": "CANDIDATE", "RowKey": "0000001", "name": "CHANGED"}, UpdateMode.MERGE)
    client.delete_entity("CANDIDATE", "0000002")
    client.upsert_entity({"PartitionKey": "CANDIDATE", "RowKey": "zzz-new", "name": "added after the backup"})
    return client, manifest


def _manifest_data(storage, backup_id: str) -> dict:
    return json.loads(storage.backups.download_blob(manifest_blob_name(backup_id)).readall())


def _put_manifest(storage, backup_id: str, data: dict) -> None:
    storage.backups.upload_blob(manifest_blob_name(backup_id), json.dumps(data), overwrite=True)


def _edit_manifest(storage, backup_id: str, **changes) -> None:
    _put_manifest(storage, backup_id, {**_manifest_data(storage, backup_id), **changes})


def _put_bad_line(storage, manifest, number: int) -> None:
    """Replace line `number` of the data blob with one that is no entity, and record the new blob's
    checksum in the manifest: only decoding can tell."""
    blob = storage.backups.get_blob_client(manifest.data_blob)
    lines = gzip.decompress(blob.download_blob().readall()).splitlines(keepends=True)
    lines[number - 1] = BAD_LINE
    data = gzip.compress(b"".join(lines))
    blob.upload_blob(data, overwrite=True)
    _edit_manifest(storage, manifest.backup, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))


def _attempts(storage, table: str) -> int:
    return len(catalog.backup_attempts(storage.backups, table))


def _refused_line(result) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "Traceback" not in result.stderr
    return line


def _failed(outcome) -> set[str]:
    return {check.name for check in outcome.checks if not check.ok}


def _detail(outcome, name: str) -> str:
    return next(check.detail for check in outcome.checks if check.name == name)


# Section 3: manifests that do not hold together


def test_a_manifest_naming_another_tables_data_is_refused(storage, backed_up, unique_name):
    client, manifest = backed_up
    other = unique_name("other")
    seed_table(storage.tables, other, 40)
    theirs = backup_table(storage, other)
    # Everything consistent except where the data lives: the other table's blob, size and checksum.
    _edit_manifest(
        storage, manifest.backup, data_blob=theirs.data_blob, sha256=theirs.sha256, bytes=theirs.bytes, entities=40
    )
    before = table_state(client)

    result = run_cli("restore", "-t", client.table_name, "-b", "latest", "--mode", "mirror")

    line = _refused_line(result)
    assert f"backup {manifest.backup!r} is refused: its manifest names blob {theirs.data_blob!r}" in line
    assert f"outside the backup's own folder '{manifest.backup}/'" in line
    assert table_state(client) == before and _attempts(storage, client.table_name) == 1
    outcome = verify_backup(storage, client.table_name)
    assert "manifest" in _failed(outcome) and "outside the backup's own folder" in _detail(outcome, "manifest")


def test_a_manifest_copied_from_another_backup_is_refused(storage, backed_up):
    client, manifest = backed_up
    copy = new_backup_id(client.table_name, manifest.started_at + timedelta(seconds=1))
    data = storage.backups.download_blob(manifest.data_blob).readall()
    storage.backups.upload_blob(f"{copy}/data.ndjson.gz", data)
    # The copy's blobs are in its own folder; only its `backup` field betrays it.
    _put_manifest(storage, copy, {**_manifest_data(storage, manifest.backup), "data_blob": f"{copy}/data.ndjson.gz"})
    before = table_state(client)

    result = run_cli("restore", "-t", client.table_name, "-b", copy)

    assert f"its manifest names backup {manifest.backup!r}, not its own id" in _refused_line(result)
    assert table_state(client) == before
    outcome = verify_backup(storage, client.table_name)
    assert outcome.backup == copy and "manifest" in _failed(outcome)


def test_a_manifest_naming_another_table_than_its_id_is_refused(storage, backed_up, unique_name):
    client, manifest = backed_up
    other = unique_name("victim")
    seed_table(storage.tables, other, 10)
    _edit_manifest(storage, manifest.backup, table=other)
    before = table_state(storage.tables.get_table_client(other))

    result = run_cli("restore", "-t", other, "-b", manifest.backup, "--mode", "mirror")

    line = _refused_line(result)
    assert f"its manifest names table {other!r}, not {client.table_name!r} of its id" in line
    assert table_state(storage.tables.get_table_client(other)) == before
    assert "manifest" in _failed(verify_backup(storage, client.table_name))


def test_an_incremental_building_on_another_tables_backup_is_refused(storage, backed_up, unique_name):
    client, _manifest = backed_up
    incremental = backup_table(storage, client.table_name, incremental=True)
    other = unique_name("foreign")
    seed_table(storage.tables, other, 10)
    _edit_manifest(storage, incremental.backup, parent=backup_table(storage, other).backup)
    target = unique_name("target")

    with pytest.raises(DamagedBackup, match="is no older backup of its table"):
        restore(storage, RestoreRequest(table=client.table_name, backup=incremental.backup, target=target))

    assert target not in {t.name for t in storage.tables.list_tables()}
    assert "chain" in _failed(verify_backup(storage, client.table_name))


# Section 4: the whole backup is checked before the first write


def test_an_edited_count_is_refused_before_anything_is_written_unless_forced(storage, backed_up):
    client, manifest = backed_up
    _edit_manifest(storage, manifest.backup, entities=3000)
    before = table_state(client)

    result = run_cli("restore", "-t", client.table_name, "-b", "latest", "--mode", "mirror")

    line = _refused_line(result)
    assert f"backup {manifest.backup!r} is damaged: " in line
    assert f"{manifest.data_blob}: 300 lines, the manifest says 3000" in line and line.endswith(
        "use --force to restore anyway"
    )
    # Nothing written: the table as it was, and no safety backup taken.
    assert table_state(client) == before and _attempts(storage, client.table_name) == 1

    forced = run_cli("restore", "-t", client.table_name, "-b", "latest", "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert orjson.loads(forced.stdout)["restored"] == 300


def test_an_undecodable_line_near_the_end_is_refused_before_the_first_write(storage, backed_up):
    client, manifest = backed_up
    _put_bad_line(storage, manifest, 271)
    before = table_state(client)

    with pytest.raises(DamagedBackup, match=rf"{manifest.data_blob} line 271: .*use --force"):
        restore(storage, RestoreRequest(table=client.table_name, backup="latest", mode="mirror"))

    assert table_state(client) == before and _attempts(storage, client.table_name) == 1


def test_every_link_of_a_chain_is_checked_before_the_first_write(storage, backed_up, unique_name):
    client, full = backed_up
    incremental = backup_table(storage, client.table_name, incremental=True)
    _put_bad_line(storage, full, 290)  # the parent, not the backup asked for
    target = unique_name("chaintarget")

    result = run_cli("restore", "-t", client.table_name, "-b", incremental.backup, "--target", target)

    line = _refused_line(result)
    assert f"{full.data_blob} line 290" in line and f"backup {incremental.backup!r} is damaged" in line
    assert target not in {t.name for t in storage.tables.list_tables()}


def test_http_restore_refuses_a_damaged_backup_with_422_and_writes_nothing(functions, storage, backed_up):
    client, manifest = backed_up
    before = table_state(client)
    restore_table = functions["restore_table"].get_user_function()

    def post(body: dict):
        jobs = QueueOutput()
        response = restore_table(
            func.HttpRequest("POST", "http://localhost/api/restore", body=orjson.dumps(body)), jobs
        )
        assert jobs.value is None
        return response.status_code, orjson.loads(response.get_body())["error"]

    _edit_manifest(storage, manifest.backup, entities=301)
    status, error = post({"table": client.table_name, "backup": "latest", "mode": "mirror"})
    assert status == 422 and "300 lines, the manifest says 301" in error and "\n" not in error

    _edit_manifest(storage, manifest.backup, entities=300, data_blob="elsewhere/data.ndjson.gz")
    status, error = post({"table": client.table_name, "backup": "latest"})
    assert status == 422 and "outside the backup's own folder" in error

    assert table_state(client) == before and _attempts(storage, client.table_name) == 1


def test_a_queued_restore_of_a_damaged_backup_fails_in_the_worker_before_writing(
    functions, storage, env, monkeypatch, backed_up
):
    client, manifest = backed_up
    monkeypatch.setenv("RESTORE_HTTP_MAX_ENTITIES", "10")
    get_settings.cache_clear()
    jobs = QueueOutput()
    request = func.HttpRequest(
        "POST",
        "http://localhost/api/restore",
        body=orjson.dumps({"table": client.table_name, "backup": "latest", "mode": "mirror"}),
    )
    assert functions["restore_table"].get_user_function()(request, jobs).status_code == 202
    _edit_manifest(storage, manifest.backup, entities=301)  # damaged after it was queued
    before = table_state(client)

    invoke(functions["restore_worker"].get_user_function(), func.QueueMessage(id="m1", body=jobs.value.encode()))

    operation = orjson.loads(jobs.value)["operation"]
    status = functions["restore_status"].get_user_function()(
        func.HttpRequest(
            "GET", f"http://localhost/api/restore/{operation}", body=b"", route_params={"operation": operation}
        )
    )
    body = orjson.loads(status.get_body())
    assert body["status"] == "failed" and "300 lines, the manifest says 301" in body["error"]
    assert table_state(client) == before and _attempts(storage, client.table_name) == 1


def test_a_refused_newest_manifest_does_not_stop_the_backups(storage, backed_up, caplog):
    client, manifest = backed_up
    _edit_manifest(storage, manifest.backup, table="elsewhere")

    run = backup_tables(storage, [client.table_name], incremental=True)

    assert run.failures == {}
    [fresh] = run.backups
    assert fresh.kind == "full" and fresh.parent is None and fresh.entities == 300
    assert f"backup {manifest.backup!r} is refused" in caplog.text
    restore(storage, RestoreRequest(table=client.table_name, backup="latest"))  # the new backup is sound


def test_undelete_passes_over_a_refused_backup_to_an_older_one_that_holds_the_entity(audit_storage, unique_name):
    from tablebackup.restore.pointintime import undelete

    storage = audit_storage
    table = unique_name("undel")
    seed_table(storage.tables, table, 30)
    older = backup_table(storage, table)
    newer = backup_table(storage, table)
    _edit_manifest(storage, newer.backup, table="elsewhere")
    client = storage.tables.get_table_client(table)
    lost = client.get_entity("CANDIDATE", "0000005")
    client.delete_entity("CANDIDATE", "0000005")

    result = undelete(storage, table, "CANDIDATE", "0000005")

    assert (result["source"], result["backup"], result["restored"]) == ("backup", older.backup, 1)
    assert client.get_entity("CANDIDATE", "0000005") == lost


def test_one_refused_manifest_hides_no_other_backup_from_listings_and_status(functions, storage, backed_up):
    client, older = backed_up
    newer = backup_table(storage, client.table_name)
    _edit_manifest(storage, older.backup, table="elsewhere")

    listed = run_cli("list-backups", "-t", client.table_name, "--json")
    human = run_cli("list-backups", "-t", client.table_name)
    status = run_cli("status", "-t", client.table_name, "--json")
    response = functions["list_backups"].get_user_function()(
        func.HttpRequest("GET", "http://localhost/api/backups", params={"table": client.table_name}, body=b"")
    )

    assert listed.returncode == 0, listed.stderr
    first, second = orjson.loads(listed.stdout)["backups"]
    assert first["backup"] == newer.backup and first["entities"] == 300 and "refused" not in first
    assert second["backup"] == older.backup and "its manifest names table 'elsewhere'" in second["refused"]
    assert human.returncode == 0 and f"{older.backup:<40} REFUSED: backup {older.backup!r} is refused" in human.stdout
    assert response.status_code == 200 and orjson.loads(response.get_body())["backups"] == [first, second]
    # The status judges the table (here: never verified) instead of failing on the refused manifest.
    [judged] = orjson.loads(status.stdout)["tables"]
    assert judged["table"] == client.table_name and "is refused" not in status.stderr
