"""Every EDM type and awkward key survives a backup exactly, compared against the service's own
wire representation, and survives being written back from the backup."""

from __future__ import annotations

import base64
import gzip

import orjson
import pytest
from azure.data.tables import EdmType, EntityProperty

from tablebackup.backup.archiver import backup_table
from tablebackup.core.entities import TYPE_SUFFIX
from tablebackup.storage.tablewriter import submit_operations, upsert_operations
from tests.wire import keyed, typed, wire_entities

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def _entities() -> list[dict]:
    """SDK write forms of every case in the brief; EntityProperty keeps exact wire values."""
    big_properties = {f"p{i:03d}": i for i in range(237)}
    # 15 strings of 32K UTF-16 code units (64 KiB each, the property limit): ~960 KiB in all.
    big_properties.update({f"s{i:02d}": chr(ord("a") + i) * 32_000 for i in range(15)})
    return [
        {
            "PartitionKey": "types",
            "RowKey": "int64",
            "max": EntityProperty(str(INT64_MAX), EdmType.INT64),
            "min": EntityProperty(str(INT64_MIN), EdmType.INT64),
            "zero": EntityProperty("0", EdmType.INT64),
            "beyondDouble": EntityProperty(str(2**53 + 1), EdmType.INT64),
        },
        {
            "PartitionKey": "types",
            "RowKey": "datetime",
            "seven": EntityProperty("2024-02-29T23:59:59.1234567Z", EdmType.DATETIME),
            "tick": EntityProperty("1601-01-01T00:00:00.0000001Z", EdmType.DATETIME),
            "last": EntityProperty("9999-12-31T23:59:59.9999999Z", EdmType.DATETIME),
        },
        {
            "PartitionKey": "types",
            "RowKey": "double",
            "nan": float("nan"),
            "inf": float("inf"),
            "ninf": float("-inf"),
            "two": 2.0,
            "tenth": 0.1,
            "huge": 1.7976931348623157e308,
            "tiny": 5e-324,
            "negzero": -0.0,
        },
        {
            "PartitionKey": "types",
            "RowKey": "misc",
            "guid": EntityProperty("c9da6455-213d-42c9-9a79-3e9149a57833", EdmType.GUID),
            "binary": EntityProperty(bytes(range(256)) * 4, EdmType.BINARY),
            "emptyBinary": EntityProperty(b"\x00", EdmType.BINARY),
            "int32max": 2**31 - 1,
            "int32min": -(2**31),
            "yes": True,
            "no": False,
            "empty": "",
            "unicode": "Zoë 李 🚀 Ёлка",
            "lines": "line1\nline2\r\n\ttab",
            "typedString": EntityProperty("42", EdmType.STRING),
        },
        {"PartitionKey": "", "RowKey": "empty partition key"},
        {"PartitionKey": 'O\'Brien "quoted" key', "RowKey": "it's a row with spaces"},
        {"PartitionKey": "ünïcödé 分区 🚀", "RowKey": "行 ключ"},
        {"PartitionKey": "big", "RowKey": "255 properties, ~1 MiB", **big_properties},
    ]


def _backup_lines(storage, manifest) -> list[dict]:
    # Read with the plain SDK and gzip, independently of the app's own reader.
    data = storage.backups.download_blob(manifest.data_blob).readall()
    return [orjson.loads(line) for line in gzip.decompress(data).splitlines()]


@pytest.fixture
def source(storage, unique_name):
    name = unique_name("fidelity")
    client = storage.tables.create_table(name)
    for entity in _entities():
        client.upsert_entity(entity)
    return client


def test_backup_matches_the_service_wire_representation_exactly(storage, source):
    manifest = backup_table(storage, source.table_name)
    lines = _backup_lines(storage, manifest)
    wire = wire_entities(source)

    assert manifest.entities == len(lines) == len(wire) == len(_entities())
    backed_up, served = keyed(lines), keyed(wire)
    assert backed_up.keys() == served.keys()
    for key, entity in served.items():
        assert typed(backed_up[key]) == typed(entity), key

    int64 = backed_up[("types", "int64")]
    assert (int64["max"], int64["min"], int64["beyondDouble"]) == (str(INT64_MAX), str(INT64_MIN), str(2**53 + 1))
    assert int64["max@odata.type"] == "Edm.Int64"
    assert backed_up[("types", "datetime")]["seven"] == "2024-02-29T23:59:59.1234567Z"
    assert backed_up[("types", "datetime")]["tick"] == "1601-01-01T00:00:00.0000001Z"
    double = backed_up[("types", "double")]
    assert double["two"] == 2.0 and type(double["two"]) is float
    assert all(double[f"{name}@odata.type"] == "Edm.Double" for name in ("two", "nan", "inf", "ninf", "tenth"))
    assert (double["nan"], double["inf"], double["ninf"]) == ("NaN", "Infinity", "-Infinity")
    # Azurite (JavaScript) serves -0.0 as 0.0; the type must still be Double.
    assert type(double["negzero"]) is float and double["negzero@odata.type"] == "Edm.Double"
    misc = backed_up[("types", "misc")]
    assert base64.b64decode(misc["binary"]) == bytes(range(256)) * 4
    assert (misc["guid@odata.type"], misc["int32min"], misc["empty"]) == ("Edm.Guid", -(2**31), "")
    assert misc["lines"] == "line1\nline2\r\n\ttab"
    big = backed_up[("big", "255 properties, ~1 MiB")]
    assert len([n for n in big if not n.endswith(TYPE_SUFFIX)]) == 255  # PK, RK, Timestamp + 252
    assert all("Timestamp" in entity for entity in lines)  # kept for reference


def test_entities_written_back_from_a_backup_are_identical(storage, source, unique_name):
    manifest = backup_table(storage, source.table_name)
    copy = storage.tables.create_table(unique_name("copy"))

    submit_operations(copy, upsert_operations(_backup_lines(storage, manifest)))

    original, restored = keyed(wire_entities(source)), keyed(wire_entities(copy))
    assert original.keys() == restored.keys()
    for key, entity in original.items():
        expected = {n: v for n, v in typed(entity).items() if n != "Timestamp"}
        actual = {n: v for n, v in typed(restored[key]).items() if n != "Timestamp"}
        assert actual == expected, key
