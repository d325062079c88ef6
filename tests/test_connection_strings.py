"""A malformed connection string is one line naming the setting, never a traceback and never the
secret: the CLI exits 1, HTTP answers 500 with JSON, and nothing is written."""

from __future__ import annotations

import azure.functions as func
import orjson
import pytest

from localdev.host import InvocationContext
from tablebackup.core.settings import get_settings
from tests.test_cli import run_cli

SECRET = "c2VjcmV0LXZhbHVlLW5ldmVyLXByaW50ZWQ="  # base64, so only the shape is wrong
MALFORMED = [
    ("garbage-without-pairs", "expected name=value pairs"),
    (f"AccountName=acc;AccountKey={SECRET};EndpointSuffix", "expected name=value pairs"),
    ("AccountName=acc;AccountKey=not-base64-SECRET!;EndpointSuffix=core.windows.net", "AccountKey is not base64"),
    (f"AccountKey={SECRET};EndpointSuffix=core.windows.net", "AccountKey but no AccountName"),
    ("AccountName=acc;EndpointSuffix=core.windows.net", "neither an AccountKey nor a SharedAccessSignature"),
    ("TableEndpoint=notaurl;SharedAccessSignature=sv=2024&sig=SECRETSIG", "not an http(s) URL"),
]


@pytest.mark.parametrize("setting", ["AZURE_STORAGE_CONNECTION_STRING", "BACKUP_BLOB_CONNECTION_STRING"])
@pytest.mark.parametrize(("value", "reason"), MALFORMED)
def test_cli_names_the_setting_in_one_line_without_the_secret(storage, unique_name, setting, value, reason):
    result = run_cli("backup", "--table", unique_name("cs"), env={setting: value})

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"error: setting {setting}: the connection string is malformed: ")
    assert reason in lines[0]
    for secret in (SECRET, "SECRET", value):
        assert secret not in result.stderr + result.stdout
    assert not storage.backups.exists()


def test_a_connection_string_without_a_table_endpoint_is_named(storage, unique_name):
    # Well formed, but the Table SDK finds no table endpoint in it (a blob-only SAS).
    blob_only = "BlobEndpoint=https://acc.blob.core.windows.net;SharedAccessSignature=sv=2024&sig=SECRETSIG"

    result = run_cli("backup", "--table", unique_name("cs"), env={"AZURE_STORAGE_CONNECTION_STRING": blob_only})

    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: setting AZURE_STORAGE_CONNECTION_STRING: the connection string is malformed or has no Table "
        "service endpoint"
    )


@pytest.mark.parametrize(("value", "reason"), MALFORMED[:3])
def test_http_answers_500_json_naming_the_setting(functions, storage, monkeypatch, value, reason):
    monkeypatch.setenv("BACKUP_BLOB_CONNECTION_STRING", value)
    get_settings.cache_clear()
    request = func.HttpRequest("POST", "http://localhost/api/backups", body=b"{}")

    response = functions["backup_now"].get_user_function()(request, InvocationContext("backup_now"))

    assert response.status_code == 500
    body = orjson.loads(response.get_body())
    assert set(body) == {"error"}
    assert body["error"].startswith("setting BACKUP_BLOB_CONNECTION_STRING: the connection string is malformed: ")
    assert reason in body["error"] and "SECRET" not in body["error"] and SECRET not in body["error"]
    assert not storage.backups.exists()


def test_azurite_and_development_storage_still_pass(env, monkeypatch):
    monkeypatch.setenv("BACKUP_BLOB_CONNECTION_STRING", "UseDevelopmentStorage=true")
    get_settings.cache_clear()

    settings = get_settings()

    assert settings.backup_connection_string == "UseDevelopmentStorage=true"
    assert settings.storage_connection_string == env["AZURE_STORAGE_CONNECTION_STRING"]
