"""Exact validation: names match as whole strings, HTTP bodies have strict JSON types, and a blob
name stays inside its container. Every refusal is one line and writes nothing."""

from __future__ import annotations

import json
import uuid

import azure.functions as func
import orjson
import pytest

from localdev.host import InvocationContext, QueueOutput
from localdev.sample import seed_table
from tablebackup.backup.archiver import backup_table
from tablebackup.core.clients import blob_service
from tablebackup.core.settings import get_settings
from tests.test_cli import run_cli
from tests.wire import table_state


def _one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def _post(functions, name: str, route: str, body: bytes, *extra) -> func.HttpResponse:
    request = func.HttpRequest("POST", f"http://localhost/api/{route}", body=body)
    return functions[name].get_user_function()(request, *extra)


@pytest.fixture
def backed_up(storage, unique_name):
    table = unique_name("exact")
    seed_table(storage.tables, table, 20)
    client = storage.tables.get_table_client(table)
    return client, backup_table(storage, table)


@pytest.mark.parametrize("suffix", ["\n", "\r\n", " "])
def test_a_table_name_with_a_trailing_newline_is_refused_before_the_service(storage, unique_name, suffix):
    table = unique_name("nl")
    seed_table(storage.tables, table, 3)

    result = run_cli("backup", "--table", table + suffix)

    assert result.returncode == 1
    assert f"invalid table name {table + suffix!r}" in _one_line_error(result)
    assert not storage.backups.exists()


def test_a_backup_id_with_a_trailing_newline_is_refused(storage, backed_up):
    client, manifest = backed_up
    client.delete_entity("CANDIDATE", "0000001")
    before = table_state(client)

    result = run_cli("restore", "-t", client.table_name, "-b", manifest.backup + "\n")

    assert result.returncode == 1
    assert f"invalid backup id {manifest.backup + chr(10)!r}" in _one_line_error(result)
    assert table_state(client) == before


def test_unicode_digits_are_not_a_backup_id(storage, backed_up):
    client, manifest = backed_up
    arabic = manifest.backup.replace("2", "\u0662")  # ARABIC-INDIC DIGIT TWO matches \d

    result = run_cli("restore", "-t", client.table_name, "-b", arabic)

    assert result.returncode == 1 and "invalid backup id" in _one_line_error(result)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"all": "yes"}, "all"),
        ({"all": 1}, "all"),
        ({"all": None}, "all"),
        ({"tables": "orders"}, "tables"),
        ({"tables": [123]}, "tables.0"),
    ],
)
def test_backup_now_takes_strict_json_types(functions, storage, body, field):
    response = _post(functions, "backup_now", "backups", json.dumps(body).encode(), InvocationContext("backup_now"))

    assert response.status_code == 400
    error = orjson.loads(response.get_body())["error"]
    assert error.startswith(f"invalid request: {field}: Input should be"), error
    assert not storage.backups.exists()  # nothing was backed up, not even "every table"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"dryRun": "yes"}, "dryRun"),
        ({"dryRun": "false"}, "dryRun"),
        ({"dryRun": 0}, "dryRun"),
        ({"force": "true"}, "force"),
        ({"mode": None}, "mode"),
        ({"table": None}, "table"),
        ({"table": 42}, "table"),
        ({"replayAudit": None}, "replayAudit"),
        ({"allowAppTable": "true"}, "allowAppTable"),
        ({"target": 7}, "target"),
    ],
)
def test_restore_takes_strict_json_types(functions, storage, backed_up, extra, field):
    client, _ = backed_up
    client.delete_entity("CANDIDATE", "0000001")
    before = table_state(client)
    body = {"table": client.table_name, "backup": "latest", **extra}

    response = _post(functions, "restore_table", "restore", json.dumps(body).encode(), QueueOutput())

    assert response.status_code == 400
    error = orjson.loads(response.get_body())["error"]
    assert error.startswith(f"invalid request: {field}: "), error
    assert table_state(client) == before  # "yes" was not taken as a real restore


def test_a_strict_body_still_takes_an_iso_instant(functions, storage, backed_up):
    client, manifest = backed_up
    body = {"table": client.table_name, "asOf": manifest.finished_at.isoformat(), "dryRun": True}

    response = _post(functions, "restore_table", "restore", json.dumps(body).encode(), QueueOutput())

    assert response.status_code == 200, response.get_body()
    assert orjson.loads(response.get_body())["backup"] == manifest.backup


@pytest.fixture
def exports(env, monkeypatch):
    monkeypatch.setenv("EXPORT_CONTAINER", f"exports-{uuid.uuid4().hex[:12]}")
    get_settings.cache_clear()
    container = blob_service(get_settings()).get_container_client(get_settings().export_container)
    container.create_container()
    container.upload_blob("inside.ndjson", b'{"PartitionKey":"p","RowKey":"1"}\n')
    return container


def _import(functions, table: str, body: bytes = b"", **params) -> func.HttpResponse:
    request = func.HttpRequest(
        "POST", f"http://localhost/api/import/{table}", body=body, params=params, route_params={"table": table}
    )
    return functions["import_table"].get_user_function()(request)


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        ("../table-backups/x.ndjson", "'..' path segment"),
        ("sub/../../other/x.ndjson", "'..' path segment"),
        ("./inside.ndjson", "'.' or '..' path segment"),
        ("/other/x.ndjson", "starts with '/'"),
        ("..\\other\\x.ndjson", "backslash"),
        ("%2e%2e/other/x.ndjson", "percent-encoding"),
        ("%2E%2E%2Fother%2Fx.ndjson", "percent-encoding"),
        ("https://evil.example/other/x.ndjson", "URL"),
        ("//evil.example/x.ndjson", "URL"),
        ("inside.ndjson?comp=list", "'?'"),
        ("inside.ndjson\n", "control character"),
    ],
)
def test_a_blob_name_outside_the_container_is_400(functions, storage, exports, unique_name, blob, reason):
    target = unique_name("blobname")

    response = _import(functions, target, blob=blob)

    assert response.status_code == 400
    error = orjson.loads(response.get_body())["error"]
    assert error.startswith(f"invalid blob name {blob!r}: ") and reason in error, error
    assert target not in [t.name for t in storage.tables.list_tables()]


def test_a_blob_inside_the_container_still_imports(functions, storage, exports, unique_name):
    target = unique_name("blobok")

    response = _import(functions, target, blob="inside.ndjson")

    assert response.status_code == 200, response.get_body()
    assert [e["RowKey"] for e in storage.tables.get_table_client(target).list_entities()] == ["1"]


@pytest.mark.parametrize("flag", ["yes", "1", "on", "True"])
def test_query_string_flags_are_exactly_true_or_false(functions, storage, exports, unique_name, flag):
    target = unique_name("flag")

    response = _import(functions, target, b'{"PartitionKey":"p","RowKey":"1"}\n', dryRun=flag)

    assert response.status_code == 400
    assert orjson.loads(response.get_body())["error"] == f"invalid request: dryRun: use true or false, not {flag!r}"
    assert target not in [t.name for t in storage.tables.list_tables()]


def test_an_operation_id_with_a_trailing_newline_is_400(functions, storage):
    operation = "0" * 32 + "\n"
    request = func.HttpRequest("GET", "http://localhost/api/restore/x", body=b"", route_params={"operation": operation})

    response = functions["restore_status"].get_user_function()(request)

    assert response.status_code == 400
    assert "invalid operation id" in orjson.loads(response.get_body())["error"]
