"""Export and import against real Azurite: every EDM value round-trips in every format and from a
downloaded backup blob; filters and select; the import modes; malformed files write nothing and
name each problem's line; an entity the service refuses fails alone."""

from __future__ import annotations

import csv
import gzip
import io
import json

import orjson
import pytest

from tablebackup.backup.archiver import backup_table
from tablebackup.core.errors import InvalidInput, NotFound
from tablebackup.storage.tablewriter import submit_operations, upsert_operations
from tablebackup.transfer.exporter import ExportRequest, export_table
from tablebackup.transfer.importer import ImportRequest, import_entities
from tablebackup.transfer.records import MalformedInput
from tablebackup.transfer.sources import FileSource
from tests.test_backup_fidelity import _entities
from tests.wire import table_state


@pytest.fixture
def fidelity(storage, unique_name):
    """A table holding every EDM case of the backup fidelity test."""
    client = storage.tables.create_table(unique_name("xfer"))
    for entity in _entities():
        client.upsert_entity(entity)
    return client


def _export(storage, table: str, path, **options):
    with path.open("wb") as sink:
        return export_table(storage, ExportRequest(table=table, **options), sink)


def _import(storage, table: str, path, **options):
    return import_entities(storage, ImportRequest(table=table, **options), FileSource(path))


def _tables(storage) -> set[str]:
    return {table.name for table in storage.tables.list_tables()}


def _write(client, entities: list[dict]) -> None:
    submit_operations(client, upsert_operations(entities))


@pytest.mark.parametrize("fmt", ["ndjson", "json", "csv"])
def test_every_format_round_trips_every_edm_value_exactly(storage, fidelity, unique_name, tmp_path, fmt):
    path = tmp_path / f"export.{fmt}"
    target = unique_name("copy")

    exported = _export(storage, fidelity.table_name, path, format=fmt)
    imported = _import(storage, target, path)

    assert exported.entities == imported.imported == len(_entities())
    assert exported.bytes == path.stat().st_size
    assert (imported.format, imported.skipped, imported.failed) == (fmt, 0, 0)
    assert table_state(storage.tables.get_table_client(target)) == table_state(fidelity)


def test_ndjson_export_is_exactly_the_backup_line_encoding(storage, fidelity, tmp_path):
    manifest = backup_table(storage, fidelity.table_name)
    _export(storage, fidelity.table_name, tmp_path / "t.ndjson")

    backup = gzip.decompress(storage.backups.download_blob(manifest.data_blob).readall())
    assert (tmp_path / "t.ndjson").read_bytes() == backup


@pytest.mark.parametrize("name", ["data.ndjson.gz", "downloaded-without-extension"])
def test_a_downloaded_backup_data_blob_imports_exactly(storage, fidelity, unique_name, tmp_path, name):
    manifest = backup_table(storage, fidelity.table_name)
    path = tmp_path / name
    path.write_bytes(storage.backups.download_blob(manifest.data_blob).readall())
    target = unique_name("frombackup")

    result = _import(storage, target, path)

    assert (result.format, result.imported) == ("ndjson", len(_entities()))
    assert table_state(storage.tables.get_table_client(target)) == table_state(fidelity)


def test_csv_cells_carry_their_types(storage, fidelity, tmp_path):
    _export(storage, fidelity.table_name, tmp_path / "t.csv", format="csv")

    with (tmp_path / "t.csv").open(encoding="utf-8", newline="") as text:
        rows = list(csv.reader(text))
    header = rows[0]
    by_key = {(row[0], row[1]): dict(zip(header, row, strict=True)) for row in rows[1:]}
    assert header[:2] == ["PartitionKey", "RowKey"]
    assert {"max@Edm.Int64", "two@Edm.Double", "int32max@Edm.Int32", "guid@Edm.Guid", "yes@Edm.Boolean"} <= set(header)
    assert "Timestamp@Edm.DateTime" in header  # kept for reference, as in backups; never written back
    int64, double, misc = by_key[("types", "int64")], by_key[("types", "double")], by_key[("types", "misc")]
    assert (int64["max@Edm.Int64"], int64["min@Edm.Int64"]) == (str(2**63 - 1), str(-(2**63)))
    assert (double["two@Edm.Double"], double["nan@Edm.Double"], double["ninf@Edm.Double"]) == (
        "2.0",
        "NaN",
        "-Infinity",
    )
    assert by_key[("types", "datetime")]["seven@Edm.DateTime"] == "2024-02-29T23:59:59.1234567Z"
    assert (misc["empty@Edm.String"], misc["typedString@Edm.String"], misc["yes@Edm.Boolean"]) == ("\\", "42", "true")
    assert misc["lines@Edm.String"] == "line1\nline2\r\n\ttab"
    assert int64["empty@Edm.String"] == ""  # absent, not empty
    assert by_key[("\\", "empty partition key")]["RowKey"] == "empty partition key"  # the empty key


def test_csv_keeps_a_property_with_a_different_type_on_each_entity(storage, unique_name, tmp_path):
    client = storage.tables.create_table(unique_name("mixed"))
    _write(
        client,
        [
            {"PartitionKey": "p", "RowKey": "1", "v": 2},
            {"PartitionKey": "p", "RowKey": "2", "v": 2.0, "v@odata.type": "Edm.Double"},
            {"PartitionKey": "p", "RowKey": "3", "v": "2"},
            {"PartitionKey": "p", "RowKey": "4", "v": "2", "v@odata.type": "Edm.Int64"},
            {"PartitionKey": "p", "RowKey": "5", "v": "\\starts with a backslash"},
            {"PartitionKey": "p", "RowKey": "6"},
        ],
    )
    path = tmp_path / "mixed.csv"
    target = unique_name("mixedcopy")

    _export(storage, client.table_name, path, format="csv")
    _import(storage, target, path)

    header = path.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert [cell for cell in header if cell.startswith("v@")] == [
        "v@Edm.Int32",
        "v@Edm.Double",
        "v@Edm.String",
        "v@Edm.Int64",
    ]
    assert "\\\\starts with a backslash" in path.read_text(encoding="utf-8")
    state = table_state(storage.tables.get_table_client(target))
    assert state == table_state(client)
    assert [state[("p", str(n))].get("v") for n in range(1, 7)] == [
        ("Edm.Int32", 2),
        ("Edm.Double", 2.0),
        ("Edm.String", "2"),
        ("Edm.Int64", "2"),
        ("Edm.String", "\\starts with a backslash"),
        None,
    ]


def test_a_hand_made_csv_with_untyped_columns_imports_strings(storage, unique_name, tmp_path):
    path = tmp_path / "people.csv"
    path.write_text("PartitionKey,RowKey,name,age@Edm.Int32,note\r\nstaff,1,Ada,36,\r\nstaff,2,Grace,,\\\r\n")
    target = unique_name("handmade")

    _import(storage, target, path)

    state = table_state(storage.tables.get_table_client(target))
    assert state[("staff", "1")] == {
        "PartitionKey": ("Edm.String", "staff"),
        "RowKey": ("Edm.String", "1"),
        "name": ("Edm.String", "Ada"),
        "age": ("Edm.Int32", 36),
    }
    assert state[("staff", "2")]["note"] == ("Edm.String", "")
    assert "age" not in state[("staff", "2")]


def test_json_export_is_one_array_and_any_json_array_imports(storage, fidelity, unique_name, tmp_path):
    path = tmp_path / "t.json"
    _export(storage, fidelity.table_name, path, format="json")
    exported = json.loads(path.read_bytes())
    assert isinstance(exported, list) and len(exported) == len(_entities())
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(exported, indent=4, ensure_ascii=True))
    target = unique_name("pretty")

    _import(storage, target, pretty)

    assert table_state(storage.tables.get_table_client(target)) == table_state(fidelity)


def test_filter_and_select(storage, fidelity, unique_name, tmp_path):
    path = tmp_path / "some.ndjson"
    target = unique_name("selected")

    result = _export(
        storage, fidelity.table_name, path, filter="PartitionKey eq 'types'", select=("max", "nan", "guid", "RowKey")
    )
    _import(storage, target, path)

    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert result.entities == len(lines) == 4
    assert {tuple(sorted(n for n in line if "@" not in n)) for line in lines} == {
        ("PartitionKey", "RowKey"),
        ("PartitionKey", "RowKey", "max"),
        ("PartitionKey", "RowKey", "nan"),
        ("PartitionKey", "RowKey", "guid"),
    }
    original = table_state(fidelity)
    copied = table_state(storage.tables.get_table_client(target))
    assert copied[("types", "int64")]["max"] == original[("types", "int64")]["max"]
    assert copied[("types", "double")]["nan"] == ("Edm.Double", "NaN")


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"filter": "PartitionKey eq"}, InvalidInput, "invalid filter at position 16"),
        ({"select": ("ok", "not-a-name")}, InvalidInput, "invalid property name 'not-a-name'"),
        ({"format": "xml"}, InvalidInput, "unknown format 'xml'"),
        ({"table": "bad-name"}, InvalidInput, "invalid table name"),
        ({"table": "nosuchtable1"}, NotFound, "does not exist"),
    ],
)
def test_bad_export_requests_are_refused_before_anything_is_written(storage, fidelity, options, error, message):
    sink = io.BytesIO()
    request = ExportRequest(**{"table": fidelity.table_name, **options})

    with pytest.raises(error, match=message):
        export_table(storage, request, sink)
    assert sink.getvalue() == b""


@pytest.fixture
def modes(storage, unique_name, tmp_path):
    """An export of three entities, and a target that holds an older version of one of them."""
    source = storage.tables.create_table(unique_name("modesrc"))
    _write(
        source,
        [
            {"PartitionKey": "p", "RowKey": "1", "a": 1, "b": "new"},
            {"PartitionKey": "p", "RowKey": "2", "a": 2},
            {"PartitionKey": "q", "RowKey": "1", "a": 3},
        ],
    )
    path = tmp_path / "modes.ndjson"
    _export(storage, source.table_name, path)
    target = storage.tables.create_table(unique_name("modetgt"))
    _write(
        target, [{"PartitionKey": "p", "RowKey": "1", "a": 100, "extra": "kept"}, {"PartitionKey": "z", "RowKey": "9"}]
    )
    return source, target, path


@pytest.mark.parametrize(
    ("mode", "counts", "entity"),
    [
        ("replace", (3, 0), {"a": 1, "b": "new"}),
        ("merge", (3, 0), {"a": 1, "b": "new", "extra": "kept"}),
        ("missing", (2, 1), {"a": 100, "extra": "kept"}),
    ],
)
def test_import_modes(storage, modes, mode, counts, entity):
    source, target, path = modes
    before = table_state(target)

    planned = _import(storage, target.table_name, path, mode=mode, dry_run=True)
    assert table_state(target) == before  # a dry run writes nothing
    result = _import(storage, target.table_name, path, mode=mode)

    assert (planned.imported, planned.skipped, planned.dry_run) == (*counts, True)
    assert (result.imported, result.skipped, result.failed) == (*counts, 0)
    state = table_state(target)
    assert {
        name: value for name, (_, value) in state[("p", "1")].items() if name not in ("PartitionKey", "RowKey")
    } == (entity)
    assert state[("p", "2")] == table_state(source)[("p", "2")]
    assert ("z", "9") in state  # import never deletes


def test_a_dry_run_into_a_missing_table_does_not_create_it(storage, modes, unique_name):
    _, _, path = modes
    target = unique_name("never")

    result = _import(storage, target, path, dry_run=True, mode="missing")

    assert (result.imported, result.skipped) == (3, 0)
    assert target not in _tables(storage)


def test_missing_mode_imports_a_file_out_of_key_order_as_it_would_the_sorted_file(storage, modes, tmp_path):
    _, target, path = modes
    lines = path.read_bytes().splitlines(keepends=True)
    shuffled = tmp_path / "shuffled.ndjson"
    shuffled.write_bytes(lines[2] + lines[0] + lines[1])
    before = table_state(target)

    planned = _import(storage, target.table_name, shuffled, mode="missing", dry_run=True)
    assert (planned.imported, planned.skipped) == (2, 1) and table_state(target) == before
    result = _import(storage, target.table_name, shuffled, mode="missing")

    assert (result.imported, result.skipped, result.failed) == (2, 1, 0)
    assert any("not in key order" in warning for warning in result.warnings)
    assert table_state(target)[("p", "1")] == before[("p", "1")]  # missing overwrites nothing


_GOOD = '{"PartitionKey":"p","RowKey":"%d","n":1}'


@pytest.mark.parametrize(
    ("name", "content", "line", "reason"),
    [
        ("bad.ndjson", f'{_GOOD % 1}\n{_GOOD % 2}\n{{"PartitionKey": "p",\n{_GOOD % 4}\n', 3, "not JSON"),
        ("bad.ndjson", f'{_GOOD % 1}\n{{"PartitionKey":"p","n":1}}\n', 2, "RowKey is missing"),
        (
            "bad.ndjson",
            f'{_GOOD % 1}\n\n{_GOOD % 2}\n{{"PartitionKey":"p","RowKey":"3","big":"9223372036854775808",'
            '"big@odata.type":"Edm.Int64"}\n',
            4,
            "not a valid Edm.Int64",
        ),
        ("bad.ndjson", '{"PartitionKey":"p","RowKey":"a/b"}\n', 1, "does not allow in keys"),
        # orjson would read it as the Double 1e+20; a whole number no Edm type holds is refused by name.
        (
            "bad.ndjson",
            f'{_GOOD % 1}\n{{"PartitionKey":"p","RowKey":"2","n":100000000000000000000}}\n',
            2,
            "property 'n': 100000000000000000000 fits no Edm type",
        ),
        (
            "bad.json",
            f'[{_GOOD % 1},\n{{"PartitionKey":"p","RowKey":"2","n":-100000000000000000000}}]',
            2,
            "property 'n': -100000000000000000000 fits no Edm type",
        ),
        ("bad.csv", "PartitionKey,RowKey,n@Edm.Int32\np,1,5\np,2,five\n", 3, "column 'n@Edm.Int32': 'five'"),
        ("bad.csv", 'PartitionKey,RowKey,s\np,1,"two\nlines"\np,2,x,extra\n', 4, "4 cells, but the header has 3"),
        ("bad.csv", "PartitionKey,RowKey,n@Edm.Integer\np,1,5\n", 1, "unknown type 'Edm.Integer'"),
        ("bad.csv", "RowKey,PartitionKey\n1,p\n", 1, "must start with PartitionKey,RowKey"),
        ("bad.csv", "PartitionKey,RowKey,d@Edm.DateTime\np,1,yesterday\n", 2, "not a valid Edm.DateTime"),
        ("bad.json", f"[\n{_GOOD % 1},\n{_GOOD % 2}\n{_GOOD % 3}\n]\n", 4, "expected ',' or ']'"),
        ("bad.json", f'[\n{_GOOD % 1},\n{{"PartitionKey":"p"}}\n]', 3, "RowKey is missing"),
        ("bad.json", f"[{_GOOD % 1},\n  NaN]", 2, "not JSON"),
        # NDJSON in a .json file is read as NDJSON (the content decides); what is neither is refused.
        ("bad.json", "true\n", 1, "expected a JSON array"),
        ("bad.ndjson.gz", "not gzip at all", 1, "not JSON"),
    ],
)
def test_a_malformed_file_writes_nothing_and_names_the_line(
    storage, unique_name, tmp_path, name, content, line, reason
):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    target = unique_name("malformed")

    with pytest.raises(MalformedInput) as refused:
        _import(storage, target, path)

    assert refused.value.problems[0].line == line
    assert reason in refused.value.problems[0].reason
    assert str(refused.value).startswith(f"{path} is malformed: ")
    assert f"; line {line}: " in str(refused.value) and "\n" not in str(refused.value)
    assert target not in _tables(storage)


def test_every_problem_is_counted_and_the_first_hundred_listed(storage, modes, tmp_path):
    _, target, _ = modes
    before = table_state(target)
    path = tmp_path / "many.ndjson"
    lines = [_GOOD % n if n % 3 else '{"PartitionKey":"p"}' for n in range(1, 451)]
    path.write_text("\n".join(lines) + "\n")

    with pytest.raises(MalformedInput) as refused:
        _import(storage, target.table_name, path)

    assert refused.value.total == 150 and len(refused.value.problems) == 100
    assert [p.line for p in refused.value.problems[:3]] == [3, 6, 9]
    assert str(refused.value).startswith(f"{path} is malformed: 150 problems; line 3: RowKey is missing")
    assert table_state(target) == before


def test_a_damaged_gzip_is_refused(storage, fidelity, unique_name, tmp_path):
    manifest = backup_table(storage, fidelity.table_name)
    data = storage.backups.download_blob(manifest.data_blob).readall()
    path = tmp_path / "data.ndjson.gz"
    path.write_bytes(data[: len(data) // 2])
    target = unique_name("damaged")

    with pytest.raises(MalformedInput, match="unreadable"):
        _import(storage, target, path)
    assert target not in _tables(storage)


def test_a_file_whose_format_cannot_be_told_is_refused(storage, unique_name, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")

    with pytest.raises(InvalidInput, match=r"cannot tell the format of .*notes\.txt"):
        _import(storage, unique_name("unknown"), path)
    with pytest.raises(MalformedInput, match="line 1: the header must start with PartitionKey,RowKey"):
        _import(storage, unique_name("given"), path, format="csv")


def test_an_entity_the_service_refuses_fails_alone(storage, unique_name, tmp_path):
    path = tmp_path / "one-too-big.ndjson"
    entities = [{"PartitionKey": "p", "RowKey": f"{n}", "n": n} for n in range(5)]
    # 40,000 characters are 80,000 bytes in UTF-16: over the service's 64 KiB property limit.
    entities.insert(2, {"PartitionKey": "p", "RowKey": "2-big", "s": "x" * 40_000})
    path.write_bytes(b"".join(orjson.dumps(entity) + b"\n" for entity in entities))
    target = unique_name("refused")

    result = _import(storage, target, path)

    assert (result.imported, result.skipped, result.failed) == (5, 0, 1)
    assert "RowKey='2-big'" in result.errors[0] and "HTTP 400" in result.errors[0]
    assert sorted(table_state(storage.tables.get_table_client(target))) == [("p", str(n)) for n in range(5)]


def test_inserts_of_entities_that_already_exist_are_counted_not_failed(storage, unique_name):
    client = storage.tables.create_table(unique_name("race"))
    _write(client, [{"PartitionKey": "p", "RowKey": "2", "v": "first"}])
    inserts = [("insert", {"PartitionKey": "p", "RowKey": f"{n}", "v": "second"}) for n in range(1, 4)]

    outcome = submit_operations(client, inserts, workers=2, isolate_refusals=True)

    assert (outcome.written, outcome.existing, outcome.failed) == (2, 1, 0)
    assert table_state(client)[("p", "2")]["v"] == ("Edm.String", "first")


def test_a_large_double_literal_is_still_a_double(storage, unique_name, tmp_path):
    path = tmp_path / "doubles.ndjson"
    path.write_text('{"PartitionKey":"p","RowKey":"1","n":1e20,"m":-1.0E19}\n')
    target = unique_name("bigdouble")

    _import(storage, target, path)

    entity = storage.tables.get_table_client(target).get_entity("p", "1")
    assert (entity["n"], entity["m"]) == (1e20, -1e19)


@pytest.mark.parametrize("fmt", ["ndjson", "json"])
def test_a_property_named_etag_round_trips_in_the_products_own_formats(storage, unique_name, tmp_path, fmt):
    """Only real Azure CLI output has the CLI's shape; an application's own `etag` property, even one
    in the service's etag form beside a Timestamp, is kept with its type."""
    from datetime import UTC, datetime

    from azure.data.tables import EdmType, EntityProperty

    source = storage.tables.create_table(unique_name("etagprop"))
    source.upsert_entity({"PartitionKey": "p", "RowKey": "1", "etag": "v1", "n": 5})
    source.upsert_entity({"PartitionKey": "p", "RowKey": "2", "etag": datetime(2026, 1, 2, tzinfo=UTC)})
    source.upsert_entity(
        {
            "PartitionKey": "p",
            "RowKey": "3",
            "etag": "W/\"datetime'2026-01-02T03%3A04%3A05.1234567Z'\"",
            "big": EntityProperty(2**40, EdmType.INT64),
        }
    )
    path = tmp_path / f"etag.{fmt}"
    _export(storage, source.table_name, path, format=fmt)
    target = unique_name("etagcopy")

    report = _import(storage, target, path)

    assert report.imported == 3
    assert table_state(storage.tables.get_table_client(target)) == table_state(source)
