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
    register = list(storage.tables.get_table_client(storage.settings.erasures_table).list_entities())
    row = next(r for r in register if r["PartitionKey"] == client.table_name)
    assert row["RowKey"] == key_digest(*KEY) and row["reason"] == "request 2026-117"
    assert KEY[0] not in str(dict(row)) and KEY[1] not in str(dict(row))  # the key itself is not kept
    [entry] = find_entries(storage, table=client.table_name, operation="ERASE")
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
