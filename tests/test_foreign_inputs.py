"""Inputs made by other tools, imported with their types and never retyped silently: Azure CLI
entity queries (whole output and `--query items`), and files recognised by their content before
their name."""

from __future__ import annotations

import gzip
import json

import azure.functions as func
import orjson
import pytest

from tablebackup.backup.archiver import backup_table
from tablebackup.transfer.importer import ImportRequest, import_entities
from tablebackup.transfer.sources import FileSource
from tablebackup.transfer.typerules import AmbiguousTypes
from tests.azcliexport import entity_query
from tests.legacybackups import sample_entities, write_table
from tests.test_cli import _one_line_error, run_cli
from tests.wire import table_state

RULES = {"joined": "Edm.DateTime", "id": "Edm.Guid", "photo": "Edm.Binary"}


def _sample(storage, unique_name):
    return write_table(storage, unique_name("src"), sample_entities(with_int64=True))


def _expected(source_state: dict) -> dict:
    """The source as an Azure CLI export can bring it back: DateTimes keep the 6 digits it prints."""
    expected = {key: dict(props) for key, props in source_state.items()}
    expected["candidates", "001"]["joined"] = ("Edm.DateTime", "2025-01-13T02:00:00.123456Z")
    return expected


def test_the_cli_export_has_the_cli_shape(storage, unique_name):
    text = entity_query(_sample(storage, unique_name))

    body = text.replace("NaN", '"NaN"').replace("Infinity", '"Infinity"')  # bare, as the CLI prints them
    item = json.loads(body)["items"][0]
    assert set(json.loads(body)) == {"items", "nextMarker"}
    assert item["big"] == {"edm_type": "Edm.Int64", "value": 2**40 + 1}
    assert item["joined"] == "2025-01-13T02:00:00.123456+00:00"
    assert item["id"] == "6f9619ff-8b86-d011-b42d-00c04fc964ff" and item["photo"] == "AAH+/w=="
    assert {"etag", "Timestamp"} <= set(item) and ": NaN" in text and ": Infinity" in text


@pytest.mark.parametrize("query_items", [False, True], ids=["whole-output", "query-items"])
def test_a_cli_export_imports_with_every_type(storage, unique_name, tmp_path, query_items):
    source = _sample(storage, unique_name)
    path = tmp_path / "export.json"
    path.write_text(entity_query(source, query_items=query_items))
    target = unique_name("dst")

    result = import_entities(storage, ImportRequest(table=target, types=RULES), FileSource(path))

    assert (result.imported, result.shape, result.warnings) == (2, "azure-cli", [])
    state = table_state(storage.tables.get_table_client(target))
    assert state == _expected(table_state(source))
    assert state["candidates", "001"]["big"] == ("Edm.Int64", str(2**40 + 1))
    assert state["candidates", "001"]["score"] == ("Edm.Double", 2.0)  # the CLI prints a whole Double as 2.0
    assert "etag" not in state["candidates", "001"]


@pytest.mark.parametrize("query_items", [False, True], ids=["whole-output", "query-items"])
def test_without_rules_a_cli_export_is_refused_naming_each_untyped_property(
    storage, unique_name, tmp_path, query_items
):
    path = tmp_path / "export.json"
    path.write_text(entity_query(_sample(storage, unique_name), query_items=query_items))
    target = unique_name("dst")

    result = run_cli("import", "--table", target, "--input", str(path))

    assert result.returncode == 1
    error = _one_line_error(result)
    assert "joined (Edm.DateTime or Edm.String" in error and "id (Edm.Guid or Edm.String" in error
    assert "--types id=Edm.Guid,joined=Edm.DateTime" in error and "--infer-types" in error
    assert "big (" not in error and "score (" not in error  # typed by the CLI's output
    assert target not in {t.name for t in storage.tables.list_tables()}


def test_infer_types_on_a_cli_export_types_and_reports_but_binary_needs_a_rule(storage, unique_name, tmp_path):
    source = _sample(storage, unique_name)
    path = tmp_path / "export.json"
    path.write_text(entity_query(source))
    target = unique_name("dst")

    result = run_cli("import", "-t", target, "-i", str(path), "--infer-types", "--types", "photo=Edm.Binary", "--json")

    assert result.returncode == 0, result.stderr
    body = orjson.loads(result.stdout)
    assert body["typed"] == {"id": {"Edm.Guid": 1}, "joined": {"Edm.DateTime": 1}}
    assert table_state(storage.tables.get_table_client(target)) == _expected(table_state(source))


def test_one_page_of_a_larger_query_imports_with_a_warning(storage, unique_name, tmp_path):
    source = write_table(
        storage, unique_name("src"), [{"PartitionKey": "p", "RowKey": f"{n:03}", "n": n} for n in range(5)]
    )
    path = tmp_path / "page1.json"
    path.write_text(entity_query(source, num_results=2))
    target = unique_name("dst")

    result = run_cli("import", "-t", target, "-i", str(path))

    assert result.returncode == 0, result.stderr
    assert "imported 2 entities" in result.stdout
    assert "warning: the input is one page of an Azure CLI query: nextMarker" in result.stdout
    assert '"nextrowkey": ' in result.stdout  # the marker to pass to --marker for the next page


def test_a_bad_rule_is_a_usage_error(storage, unique_name, tmp_path):
    path = tmp_path / "export.json"
    path.write_text("[]")

    result = run_cli("import", "-t", unique_name("dst"), "-i", str(path), "--types", "joined=DateTime")

    assert result.returncode == 2
    assert "--types joined=DateTime: use one of Edm.Binary" in _one_line_error(result)


def test_a_backup_data_blob_saved_as_backup_json_is_read_by_its_content(storage, unique_name, tmp_path):
    source = _sample(storage, unique_name)
    manifest = backup_table(storage, source.table_name)
    path = tmp_path / "backup.json"  # the old runbook's name for a downloaded backup
    path.write_bytes(storage.backups.download_blob(manifest.data_blob).readall())
    target = unique_name("dst")

    result = import_entities(storage, ImportRequest(table=target), FileSource(path))

    assert (result.format, result.imported) == ("ndjson", 2)
    assert table_state(storage.tables.get_table_client(target)) == table_state(source)


def test_a_gzipped_cli_export_named_csv_is_still_a_cli_export(storage, unique_name, tmp_path):
    source = _sample(storage, unique_name)
    path = tmp_path / "export.csv"
    path.write_bytes(gzip.compress(entity_query(source).encode()))

    with pytest.raises(AmbiguousTypes):
        import_entities(storage, ImportRequest(table=unique_name("dst")), FileSource(path))
    result = import_entities(storage, ImportRequest(table=unique_name("dst"), types=RULES), FileSource(path))

    assert (result.format, result.shape, result.imported) == ("json", "azure-cli", 2)


def test_over_http_a_cli_export_is_refused_naming_the_properties_then_imported_with_rules(
    storage, functions, unique_name
):
    source = _sample(storage, unique_name)
    body = entity_query(source).encode()
    target = unique_name("dst")

    def post(**params) -> func.HttpResponse:
        request = func.HttpRequest(
            "POST", f"http://localhost/api/import/{target}", body=body, params=params, route_params={"table": target}
        )
        return functions["import_table"].get_user_function()(request)

    refused = post()
    imported = post(types="joined=Edm.DateTime,photo=Edm.Binary", inferTypes="true")

    assert refused.status_code == 400
    assert set(orjson.loads(refused.get_body())["ambiguous"]) == {"id", "joined"}
    assert imported.status_code == 200, imported.get_body()
    assert orjson.loads(imported.get_body())["typed"] == {"id": {"Edm.Guid": 1}}
    assert table_state(storage.tables.get_table_client(target)) == _expected(table_state(source))
