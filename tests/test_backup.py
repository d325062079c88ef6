"""The backup job against real Azurite: streaming, manifest last, write-once, isolation, retries,
and clear refusals that leave nothing behind."""

from __future__ import annotations

import gzip
import hashlib

import pytest

from localdev.azurite import connection_string, free_port
from localdev.sample import candidates, seed_table
from tablebackup.backup.archiver import backup_table, backup_tables, tables_to_back_up
from tablebackup.core.clients import Storage
from tablebackup.core.errors import BackupError, InvalidInput, NotFound, StorageUnavailable
from tablebackup.core.settings import get_settings
from tablebackup.repository import catalog
from tablebackup.repository.backupformat import DataBlobWriter, read_data_lines
from tests.faultproxy import tables_through_proxy


def _blob_names(storage: Storage) -> list[str]:
    if not storage.backups.exists():
        return []
    return [blob.name for blob in storage.backups.list_blobs()]


def test_backup_streams_every_page_and_the_manifest_describes_the_blob(storage, unique_name):
    table = unique_name("pages")
    seed_table(storage.tables, table, 2_345)  # three service pages of at most 1,000
    seen = []

    manifest = backup_table(storage, table, on_progress=seen.append)

    data = storage.backups.download_blob(manifest.data_blob).readall()
    lines = gzip.decompress(data).splitlines()
    assert manifest.entities == len(lines) == 2_345
    assert manifest.bytes == len(data)
    assert manifest.sha256 == hashlib.sha256(data).hexdigest()
    assert seen == [1_000, 2_000, 2_345]
    assert manifest.backup.startswith(f"{table}-") and manifest.data_blob.startswith(f"{table}-")
    assert manifest.source_account == "devstoreaccount1"
    assert manifest.started_at <= manifest.finished_at
    # The app's streaming reader yields the same lines.
    assert [line.rstrip(b"\n") for line in read_data_lines(storage.backups, manifest)] == lines


def test_listing_shows_complete_backups_newest_first_and_never_incomplete_ones(storage, unique_name):
    table = unique_name("listing")
    seed_table(storage.tables, table, 10)
    first = backup_table(storage, table)
    second = backup_table(storage, table)
    # A backup whose manifest was never written (a crash mid-run) has only its data blob.
    incomplete = f"{table}-20990101T000000.000000Z"
    writer = DataBlobWriter(storage.backups, incomplete)
    writer.write_lines([b"{}\n"])
    writer.finish()

    listed = catalog.list_backups(storage.backups, table)

    assert [m.backup for m in listed] == [second.backup, first.backup]
    assert catalog.latest_backup(storage.backups, table).backup == second.backup
    with pytest.raises(NotFound, match="incomplete"):
        catalog.read_manifest(storage.backups, incomplete)


def test_listing_does_not_mix_tables_that_share_a_prefix(storage, unique_name):
    short = unique_name("pre")
    longer = short + "x"
    for table in (short, longer):
        seed_table(storage.tables, table, 3)
        backup_table(storage, table)

    assert [m.table for m in catalog.list_backups(storage.backups, short)] == [short]


def test_backups_are_write_once(storage, unique_name):
    backup_id = f"{unique_name('once')}-20260101T000000.000000Z"
    storage.ensure_backup_container()
    for attempt in range(2):
        writer = DataBlobWriter(storage.backups, backup_id)
        writer.write_lines([b'{"PartitionKey":"a","RowKey":"b"}\n'])
        if attempt == 0:
            writer.finish()
        else:
            with pytest.raises(BackupError, match="never overwritten"):
                writer.finish()


def test_an_empty_table_gives_a_complete_empty_backup(storage, unique_name):
    table = unique_name("empty")
    storage.tables.create_table(table)

    manifest = backup_table(storage, table)

    assert manifest.entities == 0
    assert list(read_data_lines(storage.backups, manifest)) == []
    assert [m.backup for m in catalog.list_backups(storage.backups, table)] == [manifest.backup]


def test_unknown_table_is_refused_and_nothing_is_written(storage, unique_name):
    missing = unique_name("missing")

    with pytest.raises(NotFound, match=f"table '{missing}' does not exist"):
        backup_table(storage, missing)

    assert _blob_names(storage) == []


@pytest.mark.parametrize("bad", ["a-b", "1abc", "ab", "x" * 64, "tables", "has space", "t'x"])
def test_invalid_table_name_is_refused_before_any_request(storage, bad):
    with pytest.raises(InvalidInput, match="invalid table name"):
        backup_table(storage, bad)
    assert _blob_names(storage) == []


def test_unreachable_table_storage_is_a_clear_error(env, monkeypatch, unique_name):
    dead = free_port()
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string(dead, dead, dead))
    monkeypatch.setenv("STORAGE_RETRIES", "0")
    get_settings.cache_clear()
    storage = Storage.from_settings()

    with pytest.raises(StorageUnavailable, match=r"table storage at http://127\.0\.0\.1:\d+/.* is unreachable"):
        backup_table(storage, unique_name("any"))


def test_unreachable_backup_storage_fails_the_table_and_lists_nothing(storage, env, monkeypatch, unique_name):
    table = unique_name("nowhere")
    seed_table(storage.tables, table, 5)
    dead = free_port()
    monkeypatch.setenv("BACKUP_BLOB_CONNECTION_STRING", connection_string(dead, dead, dead))
    monkeypatch.setenv("STORAGE_RETRIES", "0")
    get_settings.cache_clear()

    with pytest.raises(
        StorageUnavailable, match=r"writing data.ndjson.gz of backup .* to http://127\.0\.0\.1:\d+/.* failed"
    ):
        backup_table(Storage.from_settings(), table)
    assert catalog.list_backups(storage.backups, table) == []


def test_one_failing_table_does_not_stop_the_others(storage, unique_name):
    good, missing, other = unique_name("good"), unique_name("missing"), unique_name("other")
    seed_table(storage.tables, good, 20)
    seed_table(storage.tables, other, 30)

    run = backup_tables(storage, [good, missing, other])

    assert [m.table for m in run.backups] == [good, other]
    assert [m.entities for m in run.backups] == [20, 30]
    assert list(run.failures) == [missing]
    assert isinstance(run.failures[missing], NotFound)
    assert not run.ok and missing in run.summary()


def test_tables_to_back_up_follows_the_settings(storage, env, monkeypatch, unique_name):
    named = [unique_name("a"), unique_name("b")]
    for table in named:
        storage.tables.create_table(table)

    assert tables_to_back_up(storage) == [env["TABLE_NAME"]]
    assert tables_to_back_up(storage, [named[0], named[0]]) == [named[0]]
    everything = tables_to_back_up(storage, every_table=True)
    assert set(named) <= set(everything) and everything == sorted(everything)

    monkeypatch.setenv("BACKUP_TABLES", f"{named[0]}, {named[1]}")
    get_settings.cache_clear()
    assert tables_to_back_up(Storage.from_settings()) == named
    monkeypatch.setenv("BACKUP_TABLES", "*")
    get_settings.cache_clear()
    assert set(named) <= set(tables_to_back_up(Storage.from_settings()))


def test_transient_503_500_and_timeouts_are_retried(storage, env, monkeypatch, azurite_connection_string, unique_name):
    table = unique_name("flaky")
    seed_table(storage.tables, table, 1_500)
    with tables_through_proxy(monkeypatch, azurite_connection_string) as proxy:
        monkeypatch.setenv("STORAGE_RETRIES", "4")
        monkeypatch.setenv("STORAGE_TIMEOUT_SECONDS", "1")
        get_settings.cache_clear()
        proxy.hang_seconds = 2.5
        proxy.failures = [503, 500, "hang"]

        manifest = backup_table(Storage.from_settings(), table)

    assert manifest.entities == 1_500
    assert [status for _, _, status in proxy.seen[:4]] == [503, 500, 0, 200]
    lines = list(read_data_lines(storage.backups, manifest))
    assert len(lines) == 1_500


def test_a_storage_error_that_persists_fails_without_a_listed_backup(
    storage, env, monkeypatch, azurite_connection_string, unique_name
):
    table = unique_name("down")
    seed_table(storage.tables, table, 1_500)
    with tables_through_proxy(monkeypatch, azurite_connection_string) as proxy:
        monkeypatch.setenv("STORAGE_RETRIES", "1")
        get_settings.cache_clear()
        # The first page succeeds; the second fails on every retry.
        proxy.failures = [None, 500, 500, 500]

        with pytest.raises(BackupError, match="HTTP 500"):
            backup_table(Storage.from_settings(), table)

    assert catalog.list_backups(storage.backups, table) == []


def test_sample_entities_cover_every_edm_type():
    types = set()
    for entity in candidates(300):
        types |= {value for name, value in entity.items() if name.endswith("@odata.type")}
        types |= {type(value).__name__ for value in entity.values()}
    assert {"Edm.Double", "Edm.Int64", "Edm.DateTime", "Edm.Guid", "Edm.Binary"} <= types
    assert {"int", "bool", "str", "float"} <= types
    assert {e["PartitionKey"] for e in candidates(300)} >= {"", "O'Brien & Sons"}


def test_a_large_blob_is_read_in_bounded_ranges(storage, unique_name):
    """No read of a backup blob holds more than BLOB_READ_BYTES: the SDK's default first GET is 32 MiB."""
    import base64
    import os

    from tablebackup.core.clients import BLOB_READ_BYTES
    from tablebackup.repository.backupformat import DataReader, Manifest

    storage.ensure_backup_container()
    backup_id = unique_name("big")
    writer = DataBlobWriter(storage.backups, backup_id)
    lines = [base64.b64encode(os.urandom(450_000)) + b"\n" for _ in range(8)]  # ~3.7 MB of gzip
    writer.write_lines(lines)
    size, sha256 = writer.finish()
    assert size > 2 * BLOB_READ_BYTES
    manifest = Manifest.model_validate(
        {
            "backup": backup_id,
            "table": "big",
            "source_account": "devstoreaccount1",
            "started_at": "2026-11-25T00:00:00Z",
            "finished_at": "2026-11-25T00:00:01Z",
            "entities": 8,
            "bytes": size,
            "sha256": sha256,
            "data_blob": writer.name,
        }
    )

    chunks = [len(chunk) for chunk in storage.backups.get_blob_client(writer.name).download_blob().chunks()]
    assert sum(chunks) == size and len(chunks) >= 3 and max(chunks) <= BLOB_READ_BYTES
    reader = DataReader(storage.backups, manifest)
    assert list(reader.lines()) == lines and (reader.bytes, reader.sha256) == (size, sha256)


def test_a_page_read_the_service_keeps_answering_server_busy_waits_for_it(
    storage, monkeypatch, azurite_connection_string, unique_name
):
    """503 Server Busy after the SDK's own retries (STORAGE_RETRIES=1: two answers) is waited out
    for up to BUSY_ROUNDS more rounds, not turned into a failed backup."""
    table = unique_name("busyread")
    seed_table(storage.tables, table, 1_500)
    with tables_through_proxy(monkeypatch, azurite_connection_string) as proxy:
        monkeypatch.setenv("STORAGE_RETRIES", "1")
        get_settings.cache_clear()
        proxy.failures = [None, 503, 503, 503, 503, 503]  # the second page: busy for three rounds

        manifest = backup_table(Storage.from_settings(), table)

    assert manifest.entities == 1_500
    assert [status for _, _, status in proxy.seen].count(503) == 5
