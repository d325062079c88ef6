"""Settings: read once, validated, each problem named by its setting."""

from __future__ import annotations

import pytest

from tablebackup.core.errors import SettingsError
from tablebackup.core.settings import get_settings, load_settings


@pytest.fixture
def clean(monkeypatch):
    for name in (
        "AZURE_STORAGE_CONNECTION_STRING",
        "BACKUP_BLOB_CONNECTION_STRING",
        "TABLES__tableServiceUri",
        "BACKUPS__blobServiceUri",
        "TABLE_NAME",
        "BACKUP_TABLES",
        "BACKUP_CONTAINER",
        "STORAGE_RETRIES",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true")
    monkeypatch.setenv("BACKUP_BLOB_CONNECTION_STRING", "UseDevelopmentStorage=true")
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_defaults_are_the_seeds(clean):
    settings = load_settings()
    assert (settings.table_name, settings.backup_container) == ("candidates", "table-backups")
    assert settings.scheduled_tables == ["candidates"]


def test_identity_based_endpoints_replace_connection_strings(clean):
    clean.delenv("AZURE_STORAGE_CONNECTION_STRING")
    clean.delenv("BACKUP_BLOB_CONNECTION_STRING")
    clean.setenv("TABLES__tableServiceUri", "https://data.table.core.windows.net")
    clean.setenv("BACKUPS__blobServiceUri", "https://backups.blob.core.windows.net")
    clean.setenv("BACKUPS__clientId", "00000000-0000-0000-0000-000000000001")

    settings = load_settings()

    assert settings.table_service_uri == "https://data.table.core.windows.net"
    assert settings.backup_client_id == "00000000-0000-0000-0000-000000000001"


def test_connection_strings_never_show_in_repr(clean):
    clean.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountName=acc;AccountKey=c2VjcmV0LWtleQ==")
    assert "c2VjcmV0LWtleQ" not in repr(load_settings())


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BACKUP_BLOB_CONNECTION_STRING", "", "BACKUP_BLOB_CONNECTION_STRING or BACKUPS__blobServiceUri must be set"),
        ("TABLE_NAME", "bad-name", "setting TABLE_NAME: invalid table name"),
        ("BACKUP_TABLES", "good,x", "setting BACKUP_TABLES: invalid table name 'x'"),
        ("BACKUP_CONTAINER", "Upper", "setting BACKUP_CONTAINER"),
        ("STORAGE_RETRIES", "many", "setting STORAGE_RETRIES"),
        ("STORAGE_RETRIES", "99", "setting STORAGE_RETRIES"),
        ("TABLES__tableServiceUri", "not a url", "setting TABLES__tableServiceUri"),
    ],
)
def test_bad_settings_are_named(clean, name, value, message):
    clean.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_backup_tables_star_means_every_table(clean):
    clean.setenv("BACKUP_TABLES", " * ")
    assert load_settings().scheduled_tables is None


def test_settings_are_read_once(clean):
    first = get_settings()
    clean.setenv("TABLE_NAME", "changedname")
    assert get_settings() is first


def test_every_setting_is_documented_in_the_configuration_page_and_the_sample():
    import json
    from pathlib import Path

    from tablebackup.core.settings import Settings

    root = Path(__file__).resolve().parent.parent
    readme = (root / "docs" / "configuration.md").read_text()
    sample = json.loads((root / "local.settings.sample.json").read_text())["Values"]
    for field in Settings.model_fields.values():
        assert f"`{field.alias}`" in readme, field.alias
        if not field.alias.startswith(("TABLES__", "BACKUPS__")):  # identity settings are for Azure
            assert field.alias in sample, field.alias
