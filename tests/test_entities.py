"""Entity encoding and validation, without storage."""

from __future__ import annotations

import orjson
import pytest

from tablebackup.core.entities import check_entity, decode_line, edm_type, encode_line, writable
from tablebackup.core.errors import InvalidInput


def test_encode_annotates_every_double_and_drops_the_etag():
    line = encode_line({"odata.etag": "W/x", "PartitionKey": "p", "RowKey": "r", "two": 2.0, "i": 2, "s": "2"})

    entity = orjson.loads(line)
    assert line.endswith(b"\n") and b"\n" not in line[:-1]
    assert "odata.etag" not in entity
    assert (entity["two"], entity["two@odata.type"]) == (2.0, "Edm.Double")
    assert [edm_type(entity, n) for n in ("two", "i", "s")] == ["Edm.Double", "Edm.Int32", "Edm.String"]


def test_decode_accepts_every_valid_type():
    entity = {
        "PartitionKey": "",
        "RowKey": "r",
        "Timestamp": "2026-01-01T00:00:00.1234567Z",
        "i64@odata.type": "Edm.Int64",
        "i64": "-9223372036854775808",
        "d@odata.type": "Edm.Double",
        "d": "NaN",
        "dt@odata.type": "Edm.DateTime",
        "dt": "2024-01-02T03:04:05.1234567Z",
        "g@odata.type": "Edm.Guid",
        "g": "c9da6455-213d-42c9-9a79-3e9149a57833",
        "b@odata.type": "Edm.Binary",
        "b": "AAH/",
        "i": -2147483648,
        "t": True,
        "s": "",
    }
    assert decode_line(orjson.dumps(entity)) == entity


@pytest.mark.parametrize(
    ("entity", "message"),
    [
        ({"RowKey": "r"}, "PartitionKey is missing"),
        ({"PartitionKey": "p", "RowKey": 5}, "RowKey is missing or not a string"),
        ({"PartitionKey": "p", "RowKey": "r", "x@odata.type": "Edm.Int64", "x": "9223372036854775808"}, "Edm.Int64"),
        ({"PartitionKey": "p", "RowKey": "r", "x@odata.type": "Edm.Int64", "x": 5}, "Edm.Int64"),
        ({"PartitionKey": "p", "RowKey": "r", "x": 2147483648}, "Edm.Int32"),
        ({"PartitionKey": "p", "RowKey": "r", "x@odata.type": "Edm.Guid", "x": "nope"}, "Edm.Guid"),
        ({"PartitionKey": "p", "RowKey": "r", "x@odata.type": "Edm.DateTime", "x": "yesterday"}, "Edm.DateTime"),
        ({"PartitionKey": "p", "RowKey": "r", "x@odata.type": "Edm.Binary", "x": "%%%"}, "Edm.Binary"),
        ({"PartitionKey": "p", "RowKey": "r", "x@odata.type": "Edm.Double", "x": "lots"}, "Edm.Double"),
        ({"PartitionKey": "p", "RowKey": "r", "x@odata.type": "Edm.Decimal", "x": "1"}, "unknown type"),
        ({"PartitionKey": "p", "RowKey": "r", "x@odata.type": "Edm.Int64"}, "has no property"),
        ({"PartitionKey": "p", "RowKey": "r", "x": [1]}, "Edm.String"),
    ],
)
def test_check_refuses_malformed_entities(entity, message):
    with pytest.raises(InvalidInput, match=message):
        check_entity(entity)


def test_decode_refuses_non_json_and_non_objects():
    with pytest.raises(InvalidInput, match="not JSON"):
        decode_line(b"{oops")
    with pytest.raises(InvalidInput, match="not a JSON object"):
        decode_line(b"[1]")


def test_writable_form_leaves_out_service_metadata():
    entity = {"PartitionKey": "p", "RowKey": "r", "Timestamp": "t", "odata.etag": "e", "x": 1}
    assert writable(entity) == {"PartitionKey": "p", "RowKey": "r", "x": 1}


def test_an_unannotated_double_is_written_as_a_double(storage, unique_name):
    """The service's minimal-metadata JSON writes a whole Double as 2.0 with no annotation; written
    back bare, the service would store an Int32."""
    from tablebackup.storage.tablewriter import submit_operations
    from tests.wire import table_state

    client = storage.tables.create_table(unique_name("dbl"))
    entity = {"PartitionKey": "p", "RowKey": "r", "whole": 2.0, "typed": 3.0, "typed@odata.type": "Edm.Double", "n": 2}
    assert writable(entity) == {**entity, "whole@odata.type": "Edm.Double"}

    submit_operations(client, iter([("replace", entity)]), workers=1)

    state = table_state(client)[("p", "r")]
    assert (state["whole"], state["typed"], state["n"]) == (("Edm.Double", 2.0), ("Edm.Double", 3.0), ("Edm.Int32", 2))


def test_a_double_that_is_no_number_nor_word_is_refused_not_a_crash():
    from tablebackup.core.entities import decode_line
    from tablebackup.core.errors import InvalidInput

    with pytest.raises(InvalidInput, match=r"is not a valid Edm\.Double"):
        decode_line(b'{"PartitionKey":"p","RowKey":"r","x@odata.type":"Edm.Double","x":[]}')
