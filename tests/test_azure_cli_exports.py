"""Exports the real Azure CLI made (tests/azcliexport.py runs `az storage entity query` against the
test Azurite) import with their types, for every EDM type and key shape that applications write:
round trip table -> az -> import -> compared with the source on the wire. What az itself loses is
written down here (`_as_az_keeps`), and what it leaves untyped needs a typing rule."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from azure.data.tables import EdmType, EntityProperty, TableClient, TableServiceClient

from tablebackup.transfer.importer import ImportRequest, import_entities
from tablebackup.transfer.sources import FileSource
from tablebackup.transfer.typerules import AmbiguousTypes
from tests.azcliexport import AzOutput, az_entity_query, requires_az
from tests.jssdk import write_entities
from tests.test_cli import _one_line_error, run_cli
from tests.wire import table_state

pytestmark = requires_az

GUID = uuid.UUID("6f9619ff-8b86-d011-b42d-00c04fc964ff")
WHEN = datetime(2025, 1, 13, 2, 0, 0, 123456, tzinfo=UTC)

# Written with the Python SDK, as a Python application does.
PYTHON_ENTITIES = [
    {
        "PartitionKey": "types",
        "RowKey": "python",
        "i32": 7,
        "i32min": -(2**31),
        "i32max": 2**31 - 1,
        "i64": EntityProperty(2**40 + 1, EdmType.INT64),
        "i64max": EntityProperty(2**63 - 1, EdmType.INT64),
        "i64min": EntityProperty(-(2**63), EdmType.INT64),
        "i64small": EntityProperty(5, EdmType.INT64),
        "ratio": 0.25,
        "whole": EntityProperty(2.0, EdmType.DOUBLE),
        "huge": 1e300,
        "missing": float("nan"),
        "up": float("inf"),
        "down": float("-inf"),
        "yes": True,
        "no": False,
        "joined": WHEN,
        "midnight": datetime(2025, 1, 13, tzinfo=UTC),
        "id": GUID,
        "photo": b"\x00\x01\xfe\xff",
        "nothing": b"",
        "name": "plain",
        "blank": "",
        "text": 'héllo 😀 \u2028 x\u2029 "q" \\ \t',
        "zdate": "2025-01-13T02:00:00.000Z",  # a String in a form az never prints a DateTime in
        "upperid": str(GUID).upper(),  # nor a Guid in
        "nan": "NaN",
        "digits": "42",
        "isodate": "2025-01-13T02:00:00+00:00",  # Strings in the very form az prints a DateTime,
        "lowerid": str(GUID),  # a Guid
        "word": "true",  # and a Binary in (base64)
        "edm": '{"edm_type": "Edm.Int64", "value": 1}',
    },
    {"PartitionKey": "", "RowKey": "empty partition key", "n": 1},
    {"PartitionKey": "keys", "RowKey": "", "n": 2},
    {"PartitionKey": "", "RowKey": "", "n": 3},
    {"PartitionKey": 'it\'s "quoted" ', "RowKey": " spaced row ", "n": 4},
    {"PartitionKey": "ünïcødé 😀", "RowKey": "\u2028", "n": 5},
    {"PartitionKey": "keys", "RowKey": "a%20b+c&d=e'f", "n": 6},
    {"PartitionKey": "keys", "RowKey": "own etag", "etag": "v1"},
]
# Written with the JS SDK, as a JavaScript application does: values the Python SDK cannot write.
JS_ENTITIES = [
    {
        "partitionKey": "types",
        "rowKey": "js",
        "ticks": {"value": "2025-01-13T02:00:00.1234567Z", "type": "DateTime"},
        "first": {"value": "0001-01-01T00:00:00Z", "type": "DateTime"},
        "last": {"value": "9999-12-31T23:59:59.9999999Z", "type": "DateTime"},
        "tenth": {"value": "2025-01-13T02:00:00.1Z", "type": "DateTime"},
        "shouting": {"value": str(GUID).upper(), "type": "Guid"},
        "beyond": {"value": "-9007199254740993", "type": "Int64"},
        "two": {"value": "2", "type": "Double"},
        "count": 3,
    }
]
# The properties az prints as strings of the form it prints a DateTime, Guid or Binary in.
DATETIMES = {"joined", "midnight", "ticks", "first", "last", "tenth"}
GUIDS = {"id", "shouting"}
BINARIES = {"photo", "nothing"}
LOOKALIKE_STRINGS = {"isodate", "lowerid", "word"}
RULES = (
    {name: "Edm.DateTime" for name in DATETIMES}
    | {name: "Edm.Guid" for name in GUIDS}
    | {name: "Edm.Binary" for name in BINARIES}
    | {name: "Edm.String" for name in LOOKALIKE_STRINGS}
)
_FRACTION = re.compile(r"^(?P<base>[^.Z]+)(?:\.(?P<fraction>\d+))?Z$")


def _instant(text: str, digits: int = 7) -> str:
    """A DateTime as 7 digits, keeping only the first `digits` of its fraction."""
    match = _FRACTION.match(text)
    return f"{match['base']}.{(match['fraction'] or '')[:digits]:0<7}Z"


def _comparable(state: dict, *, digits: int = 7) -> dict:
    """DateTimes as instants (the service keeps 7 digits; `.1Z` and `.100000Z` are one time)."""
    return {
        key: {
            name: (edm, _instant(value, digits)) if edm == "Edm.DateTime" else (edm, value)
            for name, (edm, value) in properties.items()
        }
        for key, properties in state.items()
    }


def _as_az_keeps(state: dict) -> dict:
    """The source as an az export can bring it back: the Python SDK under az keeps a DateTime to the
    microsecond and prints a Guid in lowercase, and az prints the service's etag over an entity's
    own `etag` property."""
    kept = _comparable(state, digits=6)
    for properties in kept.values():
        properties.pop("etag", None)
        for name, (edm, value) in properties.items():
            if edm == "Edm.Guid":
                properties[name] = (edm, value.lower())
    return kept


@dataclass(frozen=True)
class Exported:
    source: TableClient
    folder: Path
    whole: AzOutput
    # A table holding a lone surrogate (a JS application can write one), exported by az.
    lone_surrogate: AzOutput


@pytest.fixture(scope="module")
def exported(azurite_connection_string, tmp_path_factory) -> Exported:
    """One table of every case, exported by az whole and as `--query items`."""
    table, lone = f"azcli{uuid.uuid4().hex[:12]}", f"azclilone{uuid.uuid4().hex[:8]}"
    write_entities(azurite_connection_string, table, single=JS_ENTITIES)
    write_entities(azurite_connection_string, lone, single=[{"partitionKey": "ünï", "rowKey": "1", "s": "a\ud800b"}])
    source = TableServiceClient.from_connection_string(azurite_connection_string).get_table_client(table)
    for entity in PYTHON_ENTITIES:
        source.create_entity(entity)
    folder = tmp_path_factory.mktemp("azcli")
    whole = az_entity_query(azurite_connection_string, table)
    (folder / "whole.json").write_text(whole.stdout)
    (folder / "items.json").write_text(az_entity_query(azurite_connection_string, table, query_items=True).stdout)
    return Exported(source, folder, whole, az_entity_query(azurite_connection_string, lone))


def test_az_writes_what_the_reader_expects(exported):
    """What az really prints, which the reader is built on."""
    document = json.loads(exported.whole.stdout)  # Python's parser: NaN and Infinity are bare
    items = {(item.get("PartitionKey"), item.get("RowKey")): item for item in document["items"]}
    python, js = items["types", "python"], items["types", "js"]

    assert document["nextMarker"] == {} and exported.whole.stderr == ""
    assert (None, "empty partition key") in items and ("keys", None) in items and (None, None) in items
    assert python["i64small"] == {"edm_type": "Edm.Int64", "value": 5} and python["i32"] == 7
    assert python["whole"] == 2.0 and type(python["whole"]) is float
    assert python["joined"] == "2025-01-13T02:00:00.123456+00:00" and python["midnight"] == "2025-01-13T00:00:00+00:00"
    assert python["id"] == str(GUID) and python["photo"] == "AAH+/w==" and python["nothing"] == ""
    assert js["ticks"] == "2025-01-13T02:00:00.123456+00:00" and js["shouting"] == str(GUID)
    assert ": NaN" in exported.whole.stdout and ": -Infinity" in exported.whole.stdout
    assert "😀" in exported.whole.stdout and "\u2028" in exported.whole.stdout  # UTF-8, not escaped
    assert isinstance(python["Timestamp"], str) and python["etag"].startswith('W/"datetime')
    assert items["keys", "own etag"]["etag"].startswith('W/"datetime')  # the entity's own "v1" is gone


def test_a_lone_surrogate_makes_az_drop_every_non_ascii_character_saying_so_only_on_stderr(exported):
    """UTF-8 cannot encode a lone surrogate, and az then prints the whole output as ASCII, keys too
    (knack's output.py): such a file is not the table (docs/migrating.md)."""
    item = json.loads(exported.lone_surrogate.stdout)["items"][0]

    assert (item["PartitionKey"], item["s"]) == ("n", "ab")
    assert "Unable to encode the output with utf-8 encoding" in exported.lone_surrogate.stderr


@pytest.mark.parametrize("export", ["whole.json", "items.json"], ids=["whole-output", "query-items"])
def test_an_az_export_of_every_type_and_key_imports_as_the_source(storage, unique_name, exported, export):
    target = unique_name("dst")

    result = import_entities(storage, ImportRequest(table=target, types=RULES), FileSource(exported.folder / export))

    assert (result.shape, result.warnings) == ("azure-cli", [])
    state = table_state(storage.tables.get_table_client(target))
    assert _comparable(state) == _as_az_keeps(table_state(exported.source))
    assert {("", "empty partition key"), ("keys", ""), ("", "")} <= set(state)
    assert state["types", "python"]["i64max"] == ("Edm.Int64", str(2**63 - 1))
    assert state["types", "python"]["whole"] == ("Edm.Double", 2.0)
    assert state["types", "js"]["two"] == ("Edm.Double", 2.0)


def test_without_rules_each_value_az_leaves_untyped_is_named_and_nothing_is_written(storage, unique_name, exported):
    target = unique_name("dst")

    with pytest.raises(AmbiguousTypes) as refused:
        import_entities(storage, ImportRequest(table=target), FileSource(exported.folder / "whole.json"))

    ambiguous = refused.value.properties
    assert set(ambiguous) == DATETIMES | GUIDS | LOOKALIKE_STRINGS | {"photo"}
    assert ambiguous["photo"].types == ("Edm.String", "Edm.Binary")
    assert ambiguous["joined"].types == ("Edm.DateTime", "Edm.String")
    assert target not in {t.name for t in storage.tables.list_tables()}


def test_infer_types_types_an_az_export_as_it_looks_and_reports_it(env, unique_name, exported):
    path = exported.folder / "whole.json"

    result = run_cli("import", "-t", unique_name("dst"), "-i", str(path), "--infer-types", "--json")

    assert result.returncode == 0, result.stderr
    typed = orjson.loads(result.stdout)["typed"]
    assert typed == (
        {name: {"Edm.DateTime": 1} for name in DATETIMES | {"isodate"}}
        | {name: {"Edm.Guid": 1} for name in GUIDS | {"lowerid"}}
        | {name: {"Edm.String": 1} for name in {"photo", "word"}}
    )


def test_an_az_export_made_with_select_and_without_a_key_is_refused_by_name(
    env, azurite_connection_string, unique_name, exported, tmp_path
):
    path = tmp_path / "select.json"
    path.write_text(az_entity_query(azurite_connection_string, exported.source.table_name, select=["n"]).stdout)
    target = unique_name("dst")

    result = run_cli("import", "-t", target, "-i", str(path))

    assert result.returncode == 1
    error = _one_line_error(result)
    assert "PartitionKey is missing, and this az storage entity query had --select (its Timestamp is null)" in error
    assert "export again without --select" in error
