"""Regional outage: with READ_FROM_SECONDARY, backup and verify read the tables from the account's
secondary endpoint (Azurite serves it at /<account>-secondary)."""

from __future__ import annotations

import pytest

from localdev.sample import seed_table
from tablebackup.backup.archiver import backup_table
from tablebackup.core.clients import secondary_endpoint
from tablebackup.core.errors import SettingsError
from tablebackup.core.settings import get_settings
from tablebackup.verify.checker import verify_backup
from tests.faultproxy import tables_through_proxy


@pytest.mark.parametrize(
    ("primary", "secondary"),
    [
        ("https://data.table.core.windows.net/", "https://data-secondary.table.core.windows.net/"),
        ("https://data.table.core.windows.net", "https://data-secondary.table.core.windows.net"),
        ("http://127.0.0.1:10002/devstoreaccount1", "http://127.0.0.1:10002/devstoreaccount1-secondary"),
    ],
)
def test_secondary_endpoints(primary, secondary):
    account = "devstoreaccount1" if "devstore" in primary else "data"
    assert secondary_endpoint(primary, account) == secondary


def test_an_endpoint_without_the_account_name_is_refused():
    with pytest.raises(SettingsError, match="READ_FROM_SECONDARY"):
        secondary_endpoint("https://tables.contoso.example/", "data")


def test_backup_and_verify_read_from_the_secondary(storage, env, monkeypatch, azurite_connection_string, unique_name):
    table = unique_name("geo")
    seed_table(storage.tables, table, 120)
    with tables_through_proxy(monkeypatch, azurite_connection_string) as proxy:
        monkeypatch.setenv("READ_FROM_SECONDARY", "true")
        get_settings.cache_clear()
        from tablebackup.core.clients import Storage

        secondary = Storage.from_settings()
        manifest = backup_table(secondary, table)
        outcome = verify_backup(secondary, table)

    assert manifest.entities == 120 and manifest.read_from_secondary is True
    assert outcome.ok
    table_reads = [path for method, path, _ in proxy.seen if method == "GET" and f"/{table}()" in path]
    assert table_reads and all(path.startswith("/devstoreaccount1-secondary/") for path in table_reads)


def test_backups_are_listed_verified_and_restored_from_the_backup_accounts_secondary(
    storage, env, monkeypatch, azurite_connection_string, unique_name
):
    from tablebackup.core.clients import Storage
    from tablebackup.repository import catalog
    from tablebackup.restore.restorer import RestoreRequest, restore
    from tests.faultproxy import blobs_through_proxy
    from tests.wire import table_state

    table, target = unique_name("geob"), unique_name("geobcopy")
    seed_table(storage.tables, table, 80)
    taken = backup_table(storage, table)
    with blobs_through_proxy(monkeypatch, azurite_connection_string) as proxy:
        monkeypatch.setenv("BACKUP_READ_FROM_SECONDARY", "true")
        get_settings.cache_clear()
        secondary = Storage.from_settings()
        listed = [m.backup for m in catalog.list_backups(secondary.backups, table)]
        outcome = verify_backup(secondary, table)
        restore(secondary, RestoreRequest(table=table, backup=taken.backup, target=target))
        with pytest.raises(SettingsError, match="BACKUP_READ_FROM_SECONDARY=true: the backup account's secondary"):
            backup_table(secondary, table)

    assert listed == [taken.backup]
    assert outcome.ok
    copy, source = (storage.tables.get_table_client(name) for name in (target, table))
    assert table_state(copy) == table_state(source)
    blob_requests = [path for _, path, _ in proxy.seen]
    assert blob_requests and all(path.startswith("/devstoreaccount1-secondary/") for path in blob_requests)
