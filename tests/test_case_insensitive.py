"""Table names are case-insensitive, as Azure's are: one canonical (lowercase) form keys the
backup ids, the erasure register, drills and verifications, and what was written under another
spelling (by older versions) is still found.

Azurite, unlike the service, treats table names case-sensitively for entity operations, so the
data of a table is read here under the spelling it was created with; only the keys vary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from localdev.sample import seed_table
from tablebackup.backup.archiver import backup_table
from tablebackup.backup.retention import prune
from tablebackup.repository import catalog
from tablebackup.repository.backupformat import new_backup_id
from tablebackup.repository.erasures import erase, key_digest
from tablebackup.verify import results
from tablebackup.verify.checker import verify_and_record
from tablebackup.verify.drills import drill_history
from tests.test_cli import run_cli


@pytest.fixture
def mixed(storage, unique_name):
    """A table created under an upper-case name, as `ER35042465AB`."""
    table = f"ER{unique_name('x')}AB".upper()
    seed_table(storage.tables, table, 15)
    return table


def _row_keys(storage, table: str) -> set[str]:
    return {entity["RowKey"] for entity in storage.tables.get_table_client(table).list_entities()}


def test_an_entity_erased_under_one_spelling_stays_erased_when_restored_under_another(storage, mixed, unique_name):
    backup_table(storage, mixed)
    erase(storage, mixed, "CANDIDATE", "0000001", reason="ticket 7", actor="test")
    # Into a table of its own: Azurite would not find `mixed` under its lowercase name.
    copy = unique_name("erasedcopy")

    result = run_cli("restore", "--table", mixed.lower(), "--backup", "latest", "--target", copy, "--json")

    assert result.returncode == 0, result.stderr
    body = orjson.loads(result.stdout)
    assert body["erased"] == 1
    assert "0000001" not in _row_keys(storage, body["target"])
    assert "0000001" not in _row_keys(storage, mixed)


def test_a_register_written_under_an_old_spelling_is_still_found(storage, mixed):
    backup_table(storage, mixed)
    # As an older version wrote it: in the data account's ERASURES_TABLE, under the spelling typed.
    storage.tables.create_table(storage.settings.erasures_table)
    storage.tables.get_table_client(storage.settings.erasures_table).upsert_entity(
        {"PartitionKey": mixed, "RowKey": key_digest("CANDIDATE", "0000002"), "reason": "ticket 8", "actor": "t"}
    )
    storage.tables.get_table_client(mixed).delete_entity("CANDIDATE", "0000002")

    result = run_cli(
        "restore", "--table", mixed.lower().capitalize(), "--backup", "latest", "--target", mixed, "--json"
    )

    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["erased"] == 1
    assert "0000002" not in _row_keys(storage, mixed)
    # Brought over beside the backups, under the canonical name.
    names = [b.name for b in storage.backups.list_blobs(name_starts_with="_erasures/")]
    assert names == [f"_erasures/{mixed.lower()}/{key_digest('CANDIDATE', '0000002')}"]


def test_one_catalog_whatever_the_spelling(storage, mixed):
    # A backup taken by an older version, under the spelling typed.
    old_stamp = datetime.now(UTC) - timedelta(hours=1)
    old = backup_table(storage, mixed, backup_id=f"{mixed}-{old_stamp:%Y%m%dT%H%M%S.%f}Z", started=old_stamp)
    new = backup_table(storage, mixed)
    assert new.backup == new_backup_id(mixed.lower(), new.started_at) and new.backup.startswith(mixed.lower())

    for spelling in (mixed, mixed.lower(), mixed.upper()):
        assert catalog.backup_ids(storage.backups, spelling) == [new.backup, old.backup]
        assert catalog.latest_backup(storage.backups, spelling).backup == new.backup
    assert catalog.backed_up_tables(storage.backups) == [mixed.lower()]

    listed = run_cli("list-backups", "--table", mixed.upper(), "--json")
    assert listed.returncode == 0, listed.stderr
    assert [b["backup"] for b in orjson.loads(listed.stdout)["backups"]] == [new.backup, old.backup]


def test_a_backup_of_two_spellings_of_one_table_is_one_backup(storage, mixed):
    result = run_cli("backup", "--table", mixed, "--table", mixed.lower(), "--json")

    assert result.returncode == 0, result.stderr
    [backup] = orjson.loads(result.stdout)["backups"]
    assert backup["backup"].startswith(f"{mixed.lower()}-")
    assert catalog.backup_ids(storage.backups, mixed) == [backup["backup"]]


def test_retention_plans_every_spelling_together(storage, mixed):
    old_stamp = datetime.now(UTC) - timedelta(hours=1)
    typed = mixed.lower().capitalize()  # an older version, given yet another spelling
    old = backup_table(storage, mixed, backup_id=f"{typed}-{old_stamp:%Y%m%dT%H%M%S.%f}Z", started=old_stamp)
    new = backup_table(storage, mixed)

    planned = prune(storage, [mixed.upper(), mixed.lower()], keep_daily=1, keep_weekly=0, keep_monthly=0, dry_run=True)

    assert (planned["keep"], planned["delete"]) == ([new.backup], [old.backup])


def test_verifications_and_drills_are_keyed_by_the_canonical_name(storage, mixed):
    manifest = backup_table(storage, mixed)

    [outcome] = verify_and_record(storage, mixed.upper(), manifest.backup)
    assert outcome.ok, outcome.summary()
    rows = list(storage.tables.get_table_client(storage.settings.verifications_table).list_entities())
    assert [row["PartitionKey"] for row in rows if row["PartitionKey"].lower() == mixed.lower()] == [mixed.lower()]

    # A drill recorded by an older version under the spelling typed, and one under the canonical name.
    at = datetime.now(UTC)
    results.save_row(storage, storage.settings.drills_table, mixed, at - timedelta(days=1), {"ok": True})
    results.save_row(storage, storage.settings.drills_table, mixed.lower(), at, {"ok": False})
    assert [row["ok"] for row in drill_history(storage, mixed.lower().capitalize())] == [False, True]


def _table_names(storage) -> list[str]:
    return [t.name for t in storage.tables.list_tables()]


def test_a_mirror_into_an_existing_table_typed_in_another_case_is_a_mirror_into_that_table(storage, mixed):
    """The service would address `mixed` typed in lowercase as the same table: the restore finds it,
    takes its safety backup, plans its deletions and writes under its own spelling."""
    backup = backup_table(storage, mixed)
    client = storage.tables.get_table_client(mixed)
    client.upsert_entity({"PartitionKey": "NEW", "RowKey": "after-backup"})

    result = run_cli("restore", "--table", mixed.lower(), "--backup", backup.backup, "--mode", "mirror", "--json")

    assert result.returncode == 0, result.stderr
    body = orjson.loads(result.stdout)
    assert body["target"] == mixed and body["deleted"] == 1 and body["safety_backup"]
    assert "after-backup" not in _row_keys(storage, mixed)
    assert mixed.lower() not in _table_names(storage)  # no second table under the typed spelling


def test_an_import_writes_into_the_existing_spelling(storage, mixed, tmp_path):
    path = tmp_path / "one.ndjson"
    path.write_text('{"PartitionKey":"IMPORTED","RowKey":"1","n":1}\n')

    imported = run_cli("import", "--table", mixed.lower(), "--input", str(path), "--json")

    assert imported.returncode == 0, imported.stderr
    assert "1" in {
        e["RowKey"] for e in storage.tables.get_table_client(mixed).query_entities("PartitionKey eq 'IMPORTED'")
    }
    assert mixed.lower() not in _table_names(storage)
