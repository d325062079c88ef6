"""GDPR erasure against real Azurite: an erased entity never comes back through restore, import or
export, drills and verification expect its absence, and the erasure is audited."""

from __future__ import annotations

import orjson
import pytest

from localdev.sample import seed_table
from tablebackup.audit.queries import find_entries
from tablebackup.backup.archiver import backup_table
from tablebackup.core.errors import InvalidInput
from tablebackup.repository.erasures import erase, key_digest
from tablebackup.restore.restorer import RestoreRequest, restore
from tablebackup.verify.checker import verify_backup
from tablebackup.verify.drills import run_drill
from tests.test_cli import run_cli
from tests.wire import table_state

KEY = ("O'Brien & Sons", "0000070")


@pytest.fixture
def erased(storage, unique_name):
    """A table with a backup that still holds an entity erased after the backup."""
    table = unique_name("gdpr")
    seed_table(storage.tables, table, 150)
    client = storage.tables.get_table_client(table)
    before = table_state(client)
    assert KEY in before
    manifest = backup_table(storage, table)
    result = erase(storage, table, *KEY, reason="request 2026-117", actor="dpo")
    return client, before, manifest, result


def test_erase_deletes_the_entity_registers_a_digest_and_is_audited(storage, erased):
    client, before, _, result = erased

    assert result["deleted"] is True and result["key_sha256"] == key_digest(*KEY)
    assert KEY not in table_state(client) and len(table_state(client)) == len(before) - 1
    # The register lives beside the backups, one blob per erased key, named by the key's digest.
    [blob] = storage.backups.list_blobs(name_starts_with=f"_erasures/{client.table_name}/")
    assert blob.name == f"_erasures/{client.table_name}/{key_digest(*KEY)}"
    row = orjson.loads(storage.backups.download_blob(blob.name).readall())
    assert row["reason"] == "request 2026-117" and row["actor"] == "dpo"
    assert KEY[0] not in str(row) and KEY[1] not in str(row)  # the key itself is not kept
    [started, entry] = find_entries(storage, table=client.table_name, operation="ERASE")
    assert (started["afterData"]["phase"], entry["afterData"]["outcome"]) == ("started", "succeeded")
    assert KEY[0] not in str(started) and KEY[1] not in str(started)  # the trail holds the digest only
    assert entry["userId"] == "dpo" and entry["afterData"]["key_sha256"] == key_digest(*KEY)


@pytest.mark.parametrize("mode", ["replace", "merge", "missing", "mirror"])
def test_restore_never_brings_an_erased_entity_back(storage, erased, unique_name, mode):
    client, before, manifest, _ = erased

    result = restore(storage, RestoreRequest(table=client.table_name, backup=manifest.backup, mode=mode))
    elsewhere = unique_name("copy")
    restore(storage, RestoreRequest(table=client.table_name, backup=manifest.backup, target=elsewhere))

    assert result.erased == 1
    assert table_state(client) == {k: v for k, v in before.items() if k != KEY}
    assert KEY not in table_state(storage.tables.get_table_client(elsewhere))


def test_import_and_export_skip_erased_keys(storage, erased, tmp_path):
    client, before, manifest, _ = erased
    backup_file = tmp_path / "backup.ndjson.gz"
    backup_file.write_bytes(storage.backups.download_blob(manifest.data_blob).readall())

    imported = run_cli("import", "--table", client.table_name, "--input", str(backup_file), "--json")
    assert imported.returncode == 0, imported.stderr
    assert KEY not in table_state(client)
    assert orjson.loads(imported.stdout)["skipped"] >= 1

    client.upsert_entity({"PartitionKey": KEY[0], "RowKey": KEY[1], "name": "written again by mistake"})
    exported = run_cli("export", "--table", client.table_name, "--output", "-")
    keys = {(e["PartitionKey"], e["RowKey"]) for e in map(orjson.loads, exported.stdout.splitlines())}
    assert exported.returncode == 0 and KEY not in keys and len(keys) == len(before) - 1


def test_drills_and_verification_expect_the_absence(storage, erased):
    client, _, _manifest, _ = erased

    drill = run_drill(storage, client.table_name, full=True)
    outcome = verify_backup(storage, client.table_name)

    assert drill.ok, drill.as_json()
    assert outcome.ok
    assert "1 erased key(s) are expected absences" in next(
        c.detail for c in outcome.checks if c.name == "live table count"
    )


def test_erasing_twice_or_an_absent_entity_is_harmless(storage, erased):
    client, _, _, _ = erased

    again = erase(storage, client.table_name, *KEY, reason="duplicate request", actor="dpo")
    never = erase(storage, client.table_name, "nobody", "here", reason="request 2026-118", actor="dpo")

    assert again["deleted"] is False and never["deleted"] is False


@pytest.mark.parametrize(
    ("table", "reason", "message"), [("bad-name", "r", "invalid table name"), ("goodname", " ", "give the reason")]
)
def test_erase_refuses_bad_input(storage, table, reason, message):
    with pytest.raises(InvalidInput, match=message):
        erase(storage, table, "p", "r", reason=reason, actor="dpo")


def test_cli_erase(storage, unique_name):
    table = unique_name("clierase")
    seed_table(storage.tables, table, 10)

    result = run_cli(
        "erase", "--table", table, "--partition-key", "CANDIDATE", "--row-key", "0000001", "--reason", "r-1", "--json"
    )
    missing_reason = run_cli("erase", "--table", table, "--partition-key", "p", "--row-key", "r")

    assert result.returncode == 0 and orjson.loads(result.stdout)["deleted"] is True
    assert missing_reason.returncode == 2 and "--reason" in missing_reason.stderr


def test_the_register_outlives_the_data_account(storage, erased, other_account, monkeypatch):
    """The data account is gone: a restore into a new account still leaves the erased person out,
    because the register lives with the backups, not with the data."""
    from tablebackup.core.clients import Storage
    from tablebackup.core.settings import get_settings

    client, before, manifest, _ = erased
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", other_account)
    get_settings.cache_clear()
    elsewhere = Storage.from_settings()

    result = restore(elsewhere, RestoreRequest(table=client.table_name, backup=manifest.backup))

    restored = table_state(elsewhere.tables.get_table_client(client.table_name))
    assert result.erased == 1 and result.restored == len(before) - 1
    assert KEY not in restored and restored == {k: v for k, v in before.items() if k != KEY}


def test_a_table_that_is_neither_live_nor_backed_up_is_refused(storage, unique_name):
    typo = unique_name("candidtes")

    with pytest.raises(InvalidInput, match=f"table '{typo}' neither exists nor has a backup: check its name"):
        erase(storage, typo, "CANDIDATE", "0000001", reason="request 9", actor="dpo")

    assert not storage.backups.exists() or not list(storage.backups.list_blobs(name_starts_with="_erasures/"))
    assert find_entries(storage, table=typo, operation="ERASE") == []


@pytest.mark.parametrize(("pk", "rk", "blank"), [("", "", "partition key and row key"), ("p", " ", "row key")])
def test_blank_keys_of_no_entity_are_refused(storage, erased, pk, rk, blank):
    client, _, _, _ = erased

    with pytest.raises(InvalidInput, match=f"the {blank} is blank and no entity with these keys is in"):
        erase(storage, client.table_name, pk, rk, reason="request 10", actor="dpo")

    assert len(list(storage.backups.list_blobs(name_starts_with=f"_erasures/{client.table_name}/"))) == 1


def test_an_entity_whose_keys_are_really_empty_can_be_erased(storage, unique_name):
    table = unique_name("emptykeys")
    client = storage.tables.create_table(table)
    client.upsert_entity({"PartitionKey": "", "RowKey": "", "email": "someone@example.org"})

    result = erase(storage, table, "", "", reason="request 11", actor="dpo")

    assert result["deleted"] is True and table_state(client) == {}


def test_erasing_from_the_backups_of_a_deleted_table(storage, erased):
    client, _, manifest, _ = erased
    storage.tables.delete_table(client.table_name)

    result = erase(storage, client.table_name, "CANDIDATE", "0000003", reason="request 12", actor="dpo")
    restored = restore(storage, RestoreRequest(table=client.table_name, backup=manifest.backup))

    assert result["deleted"] is False
    assert restored.erased == 2
    assert ("CANDIDATE", "0000003") not in table_state(client)


def test_a_register_write_whose_answer_is_lost_is_found_on_retry(
    storage, unique_name, monkeypatch, azurite_connection_string
):
    from tablebackup.core.clients import Storage
    from tests.faultproxy import AfterFault, blobs_through_proxy

    table = unique_name("lostanswer")
    seed_table(storage.tables, table, 10)
    with blobs_through_proxy(monkeypatch, azurite_connection_string) as proxy:
        proxy.after_faults.append(AfterFault(500, method="PUT", path="/_erasures/"))
        result = erase(Storage.from_settings(), table, "CANDIDATE", "0000001", reason="r", actor="dpo")

    assert result["deleted"] is True
    puts = [status for method, path, status in proxy.seen if method == "PUT" and "/_erasures/" in path]
    assert puts[0] == 500 and len(puts) == 2  # landed, answered 500, retried: the blob was there
    names = [b.name for b in storage.backups.list_blobs(name_starts_with=f"_erasures/{table}/")]
    assert names == [f"_erasures/{table}/{key_digest('CANDIDATE', '0000001')}"]
