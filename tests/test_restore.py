"""Restore against real Azurite: every mode, filters, as-of, targets, dry runs, refusals that leave
the table identical, and an interrupted restore that converges when run again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import UpdateMode

from localdev.sample import seed_table
from tablebackup.backup.archiver import backup_table
from tablebackup.core.errors import BackupError, InvalidInput, NotFound
from tablebackup.core.settings import get_settings
from tablebackup.repository import catalog
from tablebackup.restore.restorer import RestoreRequest, restore
from tests.faultproxy import tables_through_proxy
from tests.wire import table_state


@pytest.fixture
def backed_up(storage, unique_name):
    """A 300-entity sample table, its state, and a backup of it."""
    table = unique_name("src")
    seed_table(storage.tables, table, 300)
    client = storage.tables.get_table_client(table)
    return client, table_state(client), backup_table(storage, table)


def _damage(client) -> None:
    """Change one entity, delete one, add one."""
    client.update_entity({"PartitionKey": "CANDIDATE", "RowKey": "0000001", "name": "CORRUPTED"}, UpdateMode.MERGE)
    client.delete_entity("CANDIDATE", "0000002")
    client.upsert_entity({"PartitionKey": "CANDIDATE", "RowKey": "zzz-new", "name": "added after the backup"})


def test_replace_restores_changed_and_deleted_entities_exactly(storage, backed_up):
    client, original, manifest = backed_up
    _damage(client)

    result = restore(storage, RestoreRequest(table=client.table_name, backup="latest"))

    state = table_state(client)
    assert (result.restored, result.deleted, result.skipped, result.backup) == (300, 0, 0, manifest.backup)
    assert {k: v for k, v in state.items() if k != ("CANDIDATE", "zzz-new")} == original
    assert ("CANDIDATE", "zzz-new") in state  # replace never deletes


def test_merge_keeps_properties_the_backup_lacks(storage, backed_up):
    client, original, manifest = backed_up
    client.update_entity({"PartitionKey": "CANDIDATE", "RowKey": "0000001", "extra": "kept"}, UpdateMode.MERGE)

    restore(storage, RestoreRequest(table=client.table_name, backup=manifest.backup, mode="merge"))

    entity = table_state(client)[("CANDIDATE", "0000001")]
    assert entity["extra"] == ("Edm.String", "kept")
    assert {k: v for k, v in entity.items() if k != "extra"} == original[("CANDIDATE", "0000001")]


def test_missing_inserts_only_what_the_target_lacks(storage, backed_up):
    client, original, _manifest = backed_up
    _damage(client)

    result = restore(storage, RestoreRequest(table=client.table_name, backup="latest", mode="missing"))

    state = table_state(client)
    assert (result.restored, result.skipped, result.deleted) == (1, 299, 0)
    assert state[("CANDIDATE", "0000002")] == original[("CANDIDATE", "0000002")]
    assert state[("CANDIDATE", "0000001")]["name"] == ("Edm.String", "CORRUPTED")


def test_mirror_makes_the_table_exactly_the_backup_after_a_safety_backup(storage, backed_up):
    client, original, _manifest = backed_up
    _damage(client)
    damaged = table_state(client)

    result = restore(storage, RestoreRequest(table=client.table_name, backup="latest", mode="mirror"))

    assert table_state(client) == original
    assert (result.restored, result.deleted) == (300, 1)
    safety = catalog.read_manifest(storage.backups, result.safety_backup)
    assert safety.table == client.table_name and safety.entities == len(damaged)
    assert safety.safety and safety.reason.restoring == _manifest.backup and safety.reason.mode == "mirror"
    assert result.undo == f"tablebackup restore --table {client.table_name} --backup {safety.backup} --mode mirror"
    # The safety backup holds the damage: `latest` is still the backup the table now holds.
    assert catalog.latest_backup(storage.backups, client.table_name).backup == _manifest.backup


def test_mirror_with_a_filter_only_touches_the_filtered_scope(storage, backed_up):
    client, original, manifest = backed_up
    _damage(client)
    client.upsert_entity({"PartitionKey": "EMPLOYEE", "RowKey": "zzz-outside", "name": "out of scope"})

    result = restore(
        storage,
        RestoreRequest(
            table=client.table_name, backup=manifest.backup, mode="mirror", filter="PartitionKey eq 'CANDIDATE'"
        ),
    )

    state = table_state(client)
    assert result.deleted == 1 and ("CANDIDATE", "zzz-new") not in state
    assert ("EMPLOYEE", "zzz-outside") in state
    assert all(state[key] == value for key, value in original.items())


def test_a_filter_restores_one_deleted_entity(storage, backed_up):
    client, original, _manifest = backed_up
    key = ("O'Brien & Sons", '0000136 it\'s "quoted" ü')
    assert key in original
    client.delete_entity(*key)

    result = restore(
        storage,
        RestoreRequest(
            table=client.table_name,
            backup="latest",
            filter="""PartitionKey eq 'O''Brien & Sons' and RowKey eq '0000136 it''s "quoted" ü'""",
        ),
    )

    assert result.restored == 1
    assert table_state(client) == original


def test_filters_on_typed_properties_select_the_same_entities_as_the_backup_holds(storage, backed_up, unique_name):
    client, original, _ = backed_up
    target = unique_name("typed")
    query = "salaryCents eq 9223372036854775807L or (active eq false and age ge 70)"

    result = restore(storage, RestoreRequest(table=client.table_name, backup="latest", target=target, filter=query))

    restored = table_state(storage.tables.get_table_client(target))
    expected = {
        key
        for key, entity in original.items()
        if entity["salaryCents"][1] == str(2**63 - 1) or (entity["active"][1] is False and entity["age"][1] >= 70)
    }
    assert set(restored) == expected and result.restored == len(expected) > 0
    assert all(restored[key] == original[key] for key in expected)


def test_restore_into_another_table_creates_it_and_copies_exactly(storage, backed_up, unique_name):
    client, original, _ = backed_up
    target = unique_name("copy")

    result = restore(storage, RestoreRequest(table=client.table_name, backup="latest", target=target))

    assert result.target == target
    assert table_state(storage.tables.get_table_client(target)) == original


def test_a_deleted_table_is_recreated_and_restored(storage, backed_up):
    client, original, _ = backed_up
    storage.tables.delete_table(client.table_name)

    restore(storage, RestoreRequest(table=client.table_name, backup="latest", mode="mirror"))

    assert table_state(client) == original


def test_as_of_picks_the_newest_backup_at_or_before_the_instant(storage, backed_up):
    client, _, first = backed_up
    client.upsert_entity({"PartitionKey": "CANDIDATE", "RowKey": "second", "v": 2})
    second = backup_table(storage, client.table_name)
    client.upsert_entity({"PartitionKey": "CANDIDATE", "RowKey": "third", "v": 3})
    third = backup_table(storage, client.table_name)

    def chosen(instant: datetime) -> str:
        return restore(storage, RestoreRequest(table=client.table_name, as_of=instant, dry_run=True)).backup

    assert chosen(second.started_at) == second.backup
    assert chosen(second.started_at + (third.started_at - second.started_at) / 2) == second.backup
    assert chosen(third.started_at + timedelta(days=1)) == third.backup
    assert chosen(first.started_at) == first.backup
    with pytest.raises(NotFound, match="at or before"):
        chosen(first.started_at - timedelta(seconds=1))
    naive = second.started_at.astimezone(UTC).replace(tzinfo=None)
    assert chosen(naive) == second.backup  # a time without a zone is UTC


def test_dry_run_counts_and_writes_nothing(storage, backed_up, unique_name):
    client, _, _ = backed_up
    _damage(client)
    before = table_state(client)
    missing_target = unique_name("never")

    mirror = restore(storage, RestoreRequest(table=client.table_name, backup="latest", mode="mirror", dry_run=True))
    missing = restore(storage, RestoreRequest(table=client.table_name, backup="latest", mode="missing", dry_run=True))
    elsewhere = restore(
        storage, RestoreRequest(table=client.table_name, backup="latest", target=missing_target, dry_run=True)
    )

    assert (mirror.restored, mirror.deleted, mirror.safety_backup, mirror.dry_run) == (300, 1, None, True)
    assert (missing.restored, missing.skipped) == (1, 299)
    assert elsewhere.restored == 300
    assert table_state(client) == before
    assert missing_target not in [t.name for t in storage.tables.list_tables()]
    assert len(catalog.list_backups(storage.backups, client.table_name)) == 1  # no safety backup


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"table": "bad-name"}, InvalidInput, "invalid table name"),
        ({"target": "x"}, InvalidInput, "invalid table name 'x'"),
        ({"backup": "nosuchtable-20200101T000000.000000Z"}, NotFound, "not found"),
        ({"backup": "not an id"}, InvalidInput, "invalid backup id"),
        ({"filter": "PartitionKey eq 'CANDIDATE' and"}, InvalidInput, "invalid filter at position 32"),
        ({"mode": "overwrite"}, InvalidInput, "unknown mode 'overwrite'"),
        ({"backup": None}, InvalidInput, "exactly one"),
    ],
)
def test_bad_input_is_refused_and_leaves_the_table_identical(storage, backed_up, changes, error, message):
    client, _, _ = backed_up
    _damage(client)
    before = table_state(client)
    request = {"table": client.table_name, "backup": "latest", "mode": "mirror", **changes}

    with pytest.raises(error, match=message):
        restore(storage, RestoreRequest(**request))

    assert table_state(client) == before
    assert len(catalog.list_backups(storage.backups, client.table_name)) == 1


def test_a_backup_of_another_table_is_refused(storage, backed_up, unique_name):
    _client, _, manifest = backed_up
    other = unique_name("other")
    storage.tables.create_table(other)

    with pytest.raises(InvalidInput, match="is of table"):
        restore(storage, RestoreRequest(table=other, backup=manifest.backup))


def test_a_damaged_backup_is_refused_unless_forced(storage, backed_up):
    client, _original, manifest = backed_up
    _damage(client)
    before = table_state(client)
    # Someone rewrites the data blob: same content with one entity dropped, recompressed.
    import gzip

    blob = storage.backups.get_blob_client(manifest.data_blob)
    lines = gzip.decompress(blob.download_blob().readall()).splitlines(keepends=True)
    blob.upload_blob(gzip.compress(b"".join(lines[:-1])), overwrite=True)

    with pytest.raises(BackupError, match=r"is damaged.*use --force"):
        restore(storage, RestoreRequest(table=client.table_name, backup="latest"))
    assert table_state(client) == before

    forced = restore(storage, RestoreRequest(table=client.table_name, backup="latest", force=True))
    assert forced.restored == 299


def test_an_interrupted_restore_converges_when_run_again(
    storage, backed_up, env, monkeypatch, azurite_connection_string, unique_name
):
    client, original, _manifest = backed_up
    target = unique_name("resumed")
    storage.tables.create_table(target)
    storage.tables.create_table_if_not_exists(storage.settings.audit_table)  # its started entry is one request
    with tables_through_proxy(monkeypatch, azurite_connection_string) as proxy:
        monkeypatch.setenv("STORAGE_RETRIES", "0")
        get_settings.cache_clear()
        # The target's lookup (any spelling), the audit trail's started entry, the existence check,
        # the safety backup's read of the (empty) target and two batches get through; then storage fails for good.
        proxy.failures = [None, None, None, None, None, None, *[500] * 50]
        from tablebackup.core.clients import Storage

        with pytest.raises(BackupError):
            restore(Storage.from_settings(), RestoreRequest(table=client.table_name, backup="latest", target=target))
    partial = table_state(storage.tables.get_table_client(target))
    assert 0 < len(partial) < 300

    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_connection_string)
    get_settings.cache_clear()
    from tablebackup.core.clients import Storage

    restore(Storage.from_settings(), RestoreRequest(table=client.table_name, backup="latest", target=target))
    assert table_state(storage.tables.get_table_client(target)) == original


def test_large_entities_restore_in_size_bounded_batches(storage, unique_name):
    table = unique_name("large")
    client = storage.tables.create_table(table)
    # Ten ~960 KiB entities in one partition: at most three fit under the 4 MiB batch limit.
    for row in range(10):
        client.upsert_entity(
            {"PartitionKey": "p", "RowKey": f"{row:02d}", **{f"s{i:02d}": chr(97 + i) * 32_000 for i in range(15)}}
        )
    original = table_state(client)
    backup_table(storage, table)
    storage.tables.delete_table(table)

    result = restore(storage, RestoreRequest(table=table, backup="latest"))

    assert result.restored == 10
    assert table_state(client) == original


def test_every_restore_is_audited_with_who_what_and_counts(storage, backed_up):
    from tablebackup.audit.queries import find_entries

    client, _, manifest = backed_up
    restore(storage, RestoreRequest(table=client.table_name, backup="latest", mode="missing", actor="alice"))
    restore(storage, RestoreRequest(table=client.table_name, backup="latest", dry_run=True, actor="bob"))

    [started, entry] = find_entries(storage, table=client.table_name, operation="RESTORE")  # one pair; no dry run
    assert (started["afterData"]["phase"], entry["afterData"]["phase"]) == ("started", "ended")
    assert entry["afterData"]["operation_id"] == started["afterData"]["operation_id"]
    assert entry["afterData"]["outcome"] == "succeeded"
    assert entry["userId"] == "alice"
    assert entry["afterData"]["backup"] == manifest.backup
    assert (entry["afterData"]["mode"], entry["afterData"]["skipped"]) == ("missing", 300)
