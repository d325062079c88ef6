"""Every string the Table service holds survives backup, restore, export and import exactly: lone
surrogates (written by the JS SDK, which holds strings as UTF-16) and U+2028/U+2029 (which
Azurite's batch parser refuses raw)."""

from __future__ import annotations

import gzip

import azure.functions as func
import orjson
import pytest

from tablebackup.backup.archiver import backup_table
from tablebackup.core.errors import InvalidInput
from tablebackup.restore.restorer import RestoreRequest, restore
from tablebackup.transfer.exporter import ExportRequest, export_table
from tablebackup.transfer.importer import ImportRequest, import_entities
from tablebackup.transfer.sources import FileSource
from tablebackup.verify.checker import verify_backup
from tests.jssdk import write_entities
from tests.wire import table_state, wire_entities

LONE = {
    "high": "a\ud800b",
    "low": "\udc00",
    "reversed": "\udc00\ud800",
    "trailing": "x\udbff",
    "paired": "ok \ud83d\ude00 \U0001f600",  # a proper pair beside them stays one astral character
}


def _js_entities(row: str) -> dict:
    return {"partitionKey": "p", "rowKey": row, **LONE, "n": 5}


def test_lone_surrogates_back_up_and_restore_exactly(storage, azurite_connection_string, unique_name):
    source = unique_name("lone")
    write_entities(
        azurite_connection_string,
        source,
        single=[_js_entities("single")],
        batch=[_js_entities("batch1"), _js_entities("batch2")],
    )
    client = storage.tables.get_table_client(source)
    served = table_state(client)
    assert served[("p", "single")]["high"] == ("Edm.String", "a\ud800b")  # as the service holds it

    manifest = backup_table(storage, source)

    assert manifest.entities == 3
    data = gzip.decompress(storage.backups.download_blob(manifest.data_blob).readall())
    assert b'"a\\ud800b"' in data  # the service's own escape; every line is valid JSON
    target = unique_name("restored")
    result = restore(storage, RestoreRequest(table=source, backup=manifest.backup, target=target))
    assert result.restored == 3
    assert table_state(storage.tables.get_table_client(target)) == served
    assert verify_backup(storage, source, manifest.backup).ok


def test_a_large_cjk_entity_with_a_lone_surrogate_restores(storage, azurite_connection_string, unique_name):
    # ~450 KB as UTF-16, ~670 KB as the service's JSON. Written with every non-ASCII character
    # escaped it would be ~1.3 MB, past the 1 MiB entity limit: only lone surrogates are escaped.
    source = unique_name("bigcjk")
    big = {"partitionKey": "p", "rowKey": "big", "lone": "\ud800", **{f"s{n}": "漢字" * 16_000 for n in range(7)}}
    write_entities(azurite_connection_string, source, single=[big])
    manifest = backup_table(storage, source)

    target = unique_name("restored")
    assert restore(storage, RestoreRequest(table=source, backup=manifest.backup, target=target)).restored == 1

    assert table_state(storage.tables.get_table_client(target)) == table_state(storage.tables.get_table_client(source))


def test_lone_surrogates_export_and_import_exactly(storage, azurite_connection_string, unique_name, tmp_path):
    source = unique_name("lone")
    write_entities(azurite_connection_string, source, batch=[_js_entities("1"), _js_entities("2")])
    path = tmp_path / "lone.ndjson"
    with path.open("wb") as sink:
        assert export_table(storage, ExportRequest(table=source), sink).entities == 2

    target = unique_name("imported")
    import_entities(storage, ImportRequest(table=target), FileSource(path))

    assert table_state(storage.tables.get_table_client(target)) == table_state(storage.tables.get_table_client(source))


def test_a_csv_export_refuses_a_lone_surrogate_clearly(storage, azurite_connection_string, unique_name, tmp_path):
    # A UTF-8 file cannot hold one; NDJSON and JSON keep the escape (above).
    source = unique_name("lone")
    write_entities(azurite_connection_string, source, single=[_js_entities("1")])

    with (tmp_path / "lone.csv").open("wb") as sink, pytest.raises(InvalidInput) as refusal:
        export_table(storage, ExportRequest(table=source, format="csv"), sink)

    assert "RowKey='1' holds a string with a lone surrogate" in str(refusal.value)
    assert "export as ndjson or json" in str(refusal.value)


SEPARATORS = {
    "line": "before\u2028after",
    "paragraph": "before\u2029after",
    "both": "\u2028\u2029",
    "escaped_text": "a literal \\u2028 stays six characters",
}


def test_line_and_paragraph_separators_restore_and_import_on_azurite(storage, unique_name, tmp_path):
    source = storage.tables.create_table(unique_name("separators"))
    for row in ("1", "2"):
        source.upsert_entity({"PartitionKey": "p", "RowKey": f"{row}\u2028", **SEPARATORS})
    served = table_state(source)
    manifest = backup_table(storage, source.table_name)

    target = unique_name("restored")
    restore(storage, RestoreRequest(table=source.table_name, backup=manifest.backup, target=target))
    assert table_state(storage.tables.get_table_client(target)) == served

    path = tmp_path / "separators.ndjson"
    with path.open("wb") as sink:
        export_table(storage, ExportRequest(table=source.table_name), sink)
    imported = unique_name("imported")
    import_entities(storage, ImportRequest(table=imported), FileSource(path))
    assert table_state(storage.tables.get_table_client(imported)) == served
    assert [e["both"] for e in wire_entities(storage.tables.get_table_client(imported))] == ["\u2028\u2029"] * 2


def test_http_csv_export_of_a_lone_surrogate_is_a_400(functions, storage, azurite_connection_string, unique_name):
    source = unique_name("lone")
    write_entities(azurite_connection_string, source, single=[_js_entities("1")])
    request = func.HttpRequest(
        "GET",
        f"http://localhost/api/export/{source}",
        body=b"",
        params={"format": "csv"},
        route_params={"table": source},
    )

    response = functions["export_table"].get_user_function()(request)

    assert response.status_code == 400
    assert "lone surrogate" in orjson.loads(response.get_body())["error"]
