"""Inputs made by other tools, imported with their types and never retyped silently: Azure CLI
entity queries made by the real az (whole output and `--query items`, one page and the next), and
files recognised by their content before their name. Every EDM type and key shape through az:
tests/test_azure_cli_exports.py."""

from __future__ import annotations

import gzip
import uuid
from dataclasses import dataclass
from pathlib import Path

import azure.functions as func
import orjson
import pytest
from azure.data.tables import TableClient, TableServiceClient

from tablebackup.backup.archiver import backup_table
from tablebackup.transfer.importer import ImportRequest, import_entities
from tablebackup.transfer.sources import FileSource
from tablebackup.transfer.typerules import AmbiguousTypes
from tests.azcliexport import az_entity_query, requires_az
from tests.legacybackups import sample_entities, write_table
from tests.test_cli import _one_line_error, run_cli
from tests.wire import table_state

RULES = {"joined": "Edm.DateTime", "id": "Edm.Guid", "photo": "Edm.Binary"}


@dataclass(frozen=True)
class CliExport:
    source: TableClient
    whole: Path  # az storage entity query ... -o json
    items: Path  # the same with --query items


def _create(connection_string: str, table: str, entities: list[dict]) -> TableClient:
    client = TableServiceClient.from_connection_string(connection_string).create_table(table)
    for entity in entities:
        client.create_entity(entity)
    return client


@pytest.fixture(scope="module")
def cli_export(azurite_connection_string, tmp_path_factory) -> CliExport:
    """The sample table exported once by the real az, whole and as `--query items`."""
    folder = tmp_path_factory.mktemp("azcli")
    table = f"azsample{uuid.uuid4().hex[:12]}"
    source = _create(azurite_connection_string, table, sample_entities(with_int64=True))
    for name, query_items in (("whole.json", False), ("items.json", True)):
        text = az_entity_query(azurite_connection_string, source.table_name, query_items=query_items).stdout
        (folder / name).write_text(text)
    return CliExport(source, folder / "whole.json", folder / "items.json")


@requires_az
@pytest.mark.parametrize("query_items", [False, True], ids=["whole-output", "query-items"])
def test_a_cli_export_imports_with_every_type(storage, unique_name, cli_export, query_items):
    path = cli_export.items if query_items else cli_export.whole
    target = unique_name("dst")

    result = import_entities(storage, ImportRequest(table=target, types=RULES), FileSource(path))

    assert (result.imported, result.shape, result.warnings) == (2, "azure-cli", [])
    state = table_state(storage.tables.get_table_client(target))
    assert state == table_state(cli_export.source)
    assert state["candidates", "001"]["big"] == ("Edm.Int64", str(2**40 + 1))
    assert state["candidates", "001"]["score"] == ("Edm.Double", 2.0)  # the CLI prints a whole Double as 2.0
    assert "etag" not in state["candidates", "001"]


@requires_az
@pytest.mark.parametrize("query_items", [False, True], ids=["whole-output", "query-items"])
def test_without_rules_a_cli_export_is_refused_naming_each_untyped_property(
    storage, unique_name, cli_export, query_items
):
    path = cli_export.items if query_items else cli_export.whole
    target = unique_name("dst")

    result = run_cli("import", "--table", target, "--input", str(path))

    assert result.returncode == 1
    error = _one_line_error(result)
    assert "joined (Edm.DateTime or Edm.String" in error and "id (Edm.Guid or Edm.String" in error
    assert "photo (Edm.String or Edm.Binary: 'AAH+/w=='" in error  # az prints a Binary as base64
    assert "--types id=Edm.Guid,joined=Edm.DateTime,photo=Edm.String" in error and "--infer-types" in error
    assert "big (" not in error and "score (" not in error and "note (" not in error  # typed by the CLI's output
    assert target not in {t.name for t in storage.tables.list_tables()}


@requires_az
def test_infer_types_on_a_cli_export_types_and_reports_but_binary_needs_a_rule(storage, unique_name, cli_export):
    target = unique_name("dst")

    result = run_cli(
        "import", "-t", target, "-i", str(cli_export.whole), "--infer-types", "--types", "photo=Edm.Binary", "--json"
    )

    assert result.returncode == 0, result.stderr
    body = orjson.loads(result.stdout)
    assert body["typed"] == {"id": {"Edm.Guid": 1}, "joined": {"Edm.DateTime": 1}}
    assert table_state(storage.tables.get_table_client(target)) == table_state(cli_export.source)


@requires_az
def test_one_page_of_a_larger_query_imports_with_a_warning_and_its_marker_brings_the_rest(
    storage, unique_name, azurite_connection_string, tmp_path
):
    source = write_table(
        storage, unique_name("src"), [{"PartitionKey": "p", "RowKey": f"{n:03}", "n": n} for n in range(5)]
    )
    first = tmp_path / "page1.json"
    first.write_text(az_entity_query(azurite_connection_string, source.table_name, num_results=2).stdout)
    target = unique_name("dst")

    result = run_cli("import", "-t", target, "-i", str(first), "--json")

    assert result.returncode == 0, result.stderr
    body = orjson.loads(result.stdout)
    assert body["imported"] == 2
    [warning] = body["warnings"]
    assert "the input is one page of an Azure CLI query: nextMarker" in warning
    marker = orjson.loads(warning.split("nextMarker ", 1)[1].split(" says", 1)[0])
    assert set(marker) == {"nextpartitionkey", "nextrowkey"}  # what az storage entity query --marker takes
    rest = tmp_path / "page2.json"
    rest.write_text(az_entity_query(azurite_connection_string, source.table_name, marker=marker).stdout)

    result = run_cli("import", "-t", target, "-i", str(rest), "--json")

    assert result.returncode == 0, result.stderr
    assert (orjson.loads(result.stdout)["imported"], orjson.loads(result.stdout)["warnings"]) == (3, [])
    assert table_state(storage.tables.get_table_client(target)) == table_state(source)


def test_a_bad_rule_is_a_usage_error(storage, unique_name, tmp_path):
    path = tmp_path / "export.json"
    path.write_text("[]")

    result = run_cli("import", "-t", unique_name("dst"), "-i", str(path), "--types", "joined=DateTime")

    assert result.returncode == 2
    assert "--types joined=DateTime: use one of Edm.Binary" in _one_line_error(result)


def test_a_backup_data_blob_saved_as_backup_json_is_read_by_its_content(storage, unique_name, tmp_path):
    source = write_table(storage, unique_name("src"), sample_entities(with_int64=True))
    manifest = backup_table(storage, source.table_name)
    path = tmp_path / "backup.json"  # the old runbook's name for a downloaded backup
    path.write_bytes(storage.backups.download_blob(manifest.data_blob).readall())
    target = unique_name("dst")

    result = import_entities(storage, ImportRequest(table=target), FileSource(path))

    assert (result.format, result.imported) == ("ndjson", 2)
    assert table_state(storage.tables.get_table_client(target)) == table_state(source)


@requires_az
def test_a_gzipped_cli_export_named_csv_is_still_a_cli_export(storage, unique_name, tmp_path, cli_export):
    path = tmp_path / "export.csv"
    path.write_bytes(gzip.compress(cli_export.whole.read_bytes()))

    with pytest.raises(AmbiguousTypes):
        import_entities(storage, ImportRequest(table=unique_name("dst")), FileSource(path))
    result = import_entities(storage, ImportRequest(table=unique_name("dst"), types=RULES), FileSource(path))

    assert (result.format, result.shape, result.imported) == ("json", "azure-cli", 2)


@requires_az
def test_over_http_a_cli_export_is_refused_naming_the_properties_then_imported_with_rules(
    storage, functions, unique_name, cli_export
):
    body = cli_export.whole.read_bytes()
    target = unique_name("dst")

    def post(**params) -> func.HttpResponse:
        request = func.HttpRequest(
            "POST", f"http://localhost/api/import/{target}", body=body, params=params, route_params={"table": target}
        )
        return functions["import_table"].get_user_function()(request)

    refused = post()
    imported = post(types="joined=Edm.DateTime,photo=Edm.Binary", inferTypes="true")

    assert refused.status_code == 400
    assert set(orjson.loads(refused.get_body())["ambiguous"]) == {"id", "joined", "photo"}
    assert imported.status_code == 200, imported.get_body()
    assert orjson.loads(imported.get_body())["typed"] == {"id": {"Edm.Guid": 1}}
    assert table_state(storage.tables.get_table_client(target)) == table_state(cli_export.source)
