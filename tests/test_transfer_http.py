"""Export and import over HTTP: the registered functions with real azure.functions requests, the
inline and the 202-to-blob export, imports from a body or a blob, and every refusal as JSON."""

from __future__ import annotations

import gzip
import uuid

import azure.functions as func
import orjson
import pytest

from tablebackup.backup.archiver import backup_table
from tablebackup.core.clients import blob_service
from tablebackup.core.settings import get_settings
from tests.test_backup_fidelity import _entities
from tests.wire import table_state


@pytest.fixture
def exports(env, monkeypatch):
    """A private exports container for the test."""
    monkeypatch.setenv("EXPORT_CONTAINER", f"exports-{uuid.uuid4().hex[:12]}")
    get_settings.cache_clear()
    return blob_service(get_settings()).get_container_client(get_settings().export_container)


@pytest.fixture
def fidelity(storage, unique_name):
    client = storage.tables.create_table(unique_name("httpx"))
    for entity in _entities():
        client.upsert_entity(entity)
    return client


def _export(functions, table: str, **params) -> func.HttpResponse:
    request = func.HttpRequest(
        "GET", f"http://localhost/api/export/{table}", body=b"", params=params, route_params={"table": table}
    )
    return functions["export_table"].get_user_function()(request)


def _import(functions, table: str, body: bytes = b"", **params) -> func.HttpResponse:
    request = func.HttpRequest(
        "POST", f"http://localhost/api/import/{table}", body=body, params=params, route_params={"table": table}
    )
    return functions["import_table"].get_user_function()(request)


def test_functions_are_registered_with_function_keys(functions):
    export = functions["export_table"].get_trigger()
    imports = functions["import_table"].get_trigger()
    assert (export.route, export.methods, export.auth_level) == (
        "export/{table}",
        [func.HttpMethod.GET],
        func.AuthLevel.FUNCTION,
    )
    assert (imports.route, imports.methods, imports.auth_level) == (
        "import/{table}",
        [func.HttpMethod.POST],
        func.AuthLevel.FUNCTION,
    )


@pytest.mark.parametrize(("fmt", "content_type"), [("ndjson", "application/x-ndjson"), ("csv", "text/csv")])
def test_a_small_export_is_answered_inline_and_imports_back(
    functions, storage, exports, fidelity, unique_name, fmt, content_type
):
    response = _export(functions, fidelity.table_name, format=fmt, code="the-function-key")

    assert response.status_code == 200
    assert response.mimetype == content_type
    assert response.headers["X-Entity-Count"] == str(len(_entities()))
    assert f'filename="{fidelity.table_name}-export-' in response.headers["Content-Disposition"]
    target = unique_name("httpcopy")

    imported = _import(functions, target, response.get_body(), format=fmt)

    assert imported.status_code == 200, imported.get_body()
    assert orjson.loads(imported.get_body())["imported"] == len(_entities())
    assert table_state(storage.tables.get_table_client(target)) == table_state(fidelity)
    assert not exports.exists()  # nothing went to a blob


def test_a_large_export_goes_to_a_blob_and_imports_from_it(
    functions, storage, exports, fidelity, unique_name, monkeypatch
):
    monkeypatch.setenv("EXPORT_INLINE_MAX_ENTITIES", "3")
    get_settings.cache_clear()

    response = _export(functions, fidelity.table_name, filter="PartitionKey ne 'nothing'", format="json")

    assert response.status_code == 202
    body = orjson.loads(response.get_body())
    assert (body["container"], body["entities"], body["format"]) == (exports.container_name, len(_entities()), "json")
    assert body["blob"].startswith(f"{fidelity.table_name}-export-") and body["blob"].endswith(".json")
    assert f"-c {exports.container_name} -n {body['blob']} " in body["fetch"]
    data = exports.download_blob(body["blob"]).readall()
    assert len(data) == body["bytes"] and len(orjson.loads(data)) == len(_entities())
    target = unique_name("fromblob")

    imported = _import(functions, target, blob=body["blob"])

    assert imported.status_code == 200, imported.get_body()
    assert table_state(storage.tables.get_table_client(target)) == table_state(fidelity)


def test_a_backup_data_blob_posted_as_the_body_imports_with_its_format_detected(
    functions, storage, exports, fidelity, unique_name
):
    manifest = backup_table(storage, fidelity.table_name)
    data = storage.backups.download_blob(manifest.data_blob).readall()
    assert data[:2] == b"\x1f\x8b"
    target = unique_name("gzbody")

    response = _import(functions, target, data, dryRun="true")
    assert orjson.loads(response.get_body())["imported"] == len(_entities())
    assert target not in [t.name for t in storage.tables.list_tables()]
    response = _import(functions, target, data)

    assert response.status_code == 200
    body = orjson.loads(response.get_body())
    assert (body["format"], body["imported"], body["dry_run"]) == ("ndjson", len(_entities()), False)
    assert table_state(storage.tables.get_table_client(target)) == table_state(fidelity)


def test_a_body_over_the_limit_is_refused_with_413(functions, storage, exports, monkeypatch, unique_name):
    monkeypatch.setenv("IMPORT_MAX_BODY_BYTES", "1024")
    get_settings.cache_clear()
    target = unique_name("toolarge")
    body = b"".join(orjson.dumps({"PartitionKey": "p", "RowKey": f"{n:04d}"}) + b"\n" for n in range(60))

    response = _import(functions, target, body)

    assert response.status_code == 413
    assert "?blob=" in orjson.loads(response.get_body())["error"]
    assert target not in [t.name for t in storage.tables.list_tables()]


def test_a_malformed_body_is_refused_with_every_problem(functions, storage, exports, unique_name):
    target = unique_name("badbody")
    body = b'{"PartitionKey":"p","RowKey":"1"}\n{"PartitionKey":"p"}\nnot json\n'

    response = _import(functions, target, body)

    assert response.status_code == 400
    refusal = orjson.loads(response.get_body())
    assert refusal["error"].startswith("request body is malformed: 2 problems; line 2: RowKey is missing")
    assert [p["line"] for p in refusal["problems"]] == [2, 3] and refusal["problem_count"] == 2
    assert target not in [t.name for t in storage.tables.list_tables()]


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"filter": "RowKey eq 'x' or"}, 400, "invalid filter at position 17"),
        ({"filter": " or ".join(["RowKey eq 'x'"] * 16)}, 400, "at most 15 discrete comparisons in one $filter"),
        # Valid OData that Azurite refuses with 400: the service's refusal, not a 500.
        ({"filter": "not not (RowKey eq 'x')"}, 400, "the Table service refused the filter"),
        ({"select": "a;b"}, 400, "invalid property name 'a;b'"),
        ({"format": "xml"}, 400, "format"),
        ({"limit": "5"}, 400, "limit"),
        ({"table": "nosuchtable1"}, 404, "does not exist"),
        ({"table": "no-dashes"}, 400, "invalid table name"),
    ],
)
def test_bad_export_requests(functions, storage, exports, fidelity, params, status, message):
    table = params.pop("table", fidelity.table_name)

    response = _export(functions, table, **params)

    assert response.status_code == status
    error = orjson.loads(response.get_body())["error"]
    assert message in error and "\n" not in error


@pytest.mark.parametrize(
    ("body", "params", "status", "message"),
    [
        (b"", {"blob": "no-such-blob.ndjson"}, 404, "not found"),
        (b'{"PartitionKey":"p","RowKey":"1"}', {"blob": "x.ndjson"}, 400, "not both"),
        (b"", {"mode": "mirror"}, 400, "mode"),
        (b"", {"dryrun": "true"}, 400, "dryrun"),
        (b"hello", {}, 400, "cannot tell the format"),
    ],
)
def test_bad_import_requests(functions, storage, exports, unique_name, body, params, status, message):
    target = unique_name("badimport")

    response = _import(functions, target, body, **params)

    assert response.status_code == status
    assert message in orjson.loads(response.get_body())["error"]
    assert target not in [t.name for t in storage.tables.list_tables()]


def test_an_import_the_service_partly_refuses_answers_500_with_the_counts(functions, storage, exports, unique_name):
    target = unique_name("partly")
    body = gzip.compress(
        orjson.dumps({"PartitionKey": "p", "RowKey": "1"})
        + b"\n"
        + orjson.dumps({"PartitionKey": "p", "RowKey": "2", "s": "x" * 40_000})
        + b"\n"
    )

    response = _import(functions, target, body)

    assert response.status_code == 500
    body = orjson.loads(response.get_body())
    assert (body["imported"], body["failed"]) == (1, 1)
    assert "refused 1 of the entities" in body["error"] and "RowKey='2'" in body["error"]


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000 + b"\n",
        b'{"PartitionKey":"p","RowKey":"1","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
        b'[{"PartitionKey":"p","RowKey":"1","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}]\n",
    ],
    ids=["bare", "in-an-entity", "in-an-array"],
)
def test_deeply_nested_json_is_refused_with_400_not_a_recursion_error(functions, storage, exports, unique_name, body):
    target = unique_name("deep")

    response = _import(functions, target, body)

    assert response.status_code == 400, response.get_body()[:300]
    error = orjson.loads(response.get_body())["error"]
    assert "\n" not in error and "Recursion" not in error
    assert target not in [t.name for t in storage.tables.list_tables()]
