"""AzCopy 7.3 table exports (tests/azcopyexport.py builds them as AzCopy's documentation describes)
import with every type, after the checks AzCopy makes before it imports: the file list against the
manifest, each data file against the CRC64 in its name. Every refusal is one line and writes nothing."""

from __future__ import annotations

import json
import os
import random
from datetime import UTC, datetime

import pytest
from azure.data.tables import EdmType, EntityProperty

from tablebackup.transfer import azcopy
from tablebackup.transfer.importer import ImportRequest, import_entities
from tests.azcopyexport import azcopy_export, reference_crc64
from tests.legacybackups import sample_entities, write_table
from tests.test_cli import _one_line_error, run_cli
from tests.wire import table_state

WHEN = datetime(2025, 1, 13, 2, 0, 0, 123456, tzinfo=UTC)
EMPTY_CELLS = "empty String cells were read as absent properties, as AzCopy's CSV cannot tell them from empty strings"


def _entities() -> list[dict]:
    extra = [
        {"PartitionKey": "", "RowKey": "empty partition", "n": EntityProperty(-(2**63), EdmType.INT64)},
        {"PartitionKey": 'it\'s "quoted"', "RowKey": "a b", "text": "line\u2028break\u2029 𝄞 ünï"},
        {"PartitionKey": "zeta", "RowKey": "ключ", "when": datetime(1601, 1, 1, tzinfo=UTC), "flag": False},
    ]
    extra += [{"PartitionKey": "many", "RowKey": f"{i:03d}", "i": i, "d": i / 4} for i in range(7)]
    return sample_entities(with_int64=True) + extra


def _sample(storage, unique_name):
    return write_table(storage, unique_name("src"), _entities())


def _absent(storage, table: str) -> bool:
    return not any(t.name == table for t in storage.tables.list_tables())


def test_the_crc64_is_the_azure_storage_crc64():
    assert reference_crc64(b"123456789") == 0xAE8B14860A799888  # the published check value
    data = random.Random(7).randbytes(300_000)
    import io

    assert azcopy.crc64(io.BytesIO(data)) == reference_crc64(data)


def test_an_export_in_several_files_imports_with_every_type(storage, unique_name, tmp_path):
    source = _sample(storage, unique_name)
    manifest = azcopy_export(source, tmp_path / "export", WHEN, split_every=3, pk_ranges=["m"])
    files = sorted(p.name for p in manifest.parent.glob("*.json"))
    assert len(files) == 5 and any("_1_2_" in name for name in files)  # ranges of 4 and 8, split every 3
    target = unique_name("dst")

    result = run_cli("import", "--table", target, "--input", str(manifest.parent), "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["imported"], report["failed"], report["shape"]) == (len(_entities()), 0, "azcopy")
    assert report["azcopy"] == {
        "manifest": manifest.name,
        "account": "devstoreaccount1",
        "table": source.table_name,
        "exported_at": "2025-01-13T02:00:00.1234560Z",
        "payload": "json",
        "data_files": 5,
        "checksums": "verified",
    }
    assert table_state(storage.tables.get_table_client(target)) == table_state(source)


def test_the_manifest_itself_can_be_the_input_and_other_exports_beside_it_are_left_alone(
    storage, unique_name, tmp_path
):
    source = _sample(storage, unique_name)
    folder = tmp_path / "daily"
    older = azcopy_export(source, folder, datetime(2025, 1, 12, 2, tzinfo=UTC), split_every=4)
    source.delete_entity("many", "000")
    newer = azcopy_export(source, folder, WHEN, split_every=5)
    target = unique_name("dst")

    refused = run_cli("import", "--table", target, "--input", str(folder))
    imported = run_cli("import", "--table", target, "--input", str(newer), "--json")

    assert refused.returncode == 1
    assert "holds 2 AzCopy manifests" in _one_line_error(refused) and older.name in refused.stderr
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["imported"] == len(_entities()) - 1
    assert table_state(storage.tables.get_table_client(target)) == table_state(source)


def _refused(storage, folder, target: str, *extra: str) -> str:
    result = run_cli("import", "--table", target, "--input", str(folder), *extra)
    assert result.returncode == 1, result.stdout
    assert _absent(storage, target)  # nothing was written, not even the table
    return _one_line_error(result)


def test_a_damaged_data_file_is_refused_by_name(storage, unique_name, tmp_path):
    manifest = azcopy_export(_sample(storage, unique_name), tmp_path / "e", WHEN, split_every=4)
    damaged = sorted(manifest.parent.glob("*_0_1_*.json"))[0]
    body = damaged.read_bytes()
    assert b'"i":1,' in body
    damaged.write_bytes(body.replace(b'"i":1,', b'"i":9,'))  # still valid JSON, other content

    error = _refused(storage, manifest.parent, unique_name("dst"))

    assert f"{damaged.name} is damaged: its CRC64 is" in error and "--skip-azcopy-checksums" in error


def test_a_missing_or_renamed_data_file_is_refused(storage, unique_name, tmp_path):
    manifest = azcopy_export(_sample(storage, unique_name), tmp_path / "e", WHEN, split_every=4)
    files = sorted(manifest.parent.glob("*.json"))
    last = files[-1]
    moved = last.read_bytes()
    last.unlink()

    missing = _refused(storage, manifest.parent, unique_name("dst"))
    last.write_bytes(moved)
    middle = files[1]
    middle.rename(middle.with_name(middle.name.replace("_0_1_", "_0_7_")))
    gap = _refused(storage, manifest.parent, unique_name("dst"))

    assert f"lists {len(files)} data files, but" in missing and f"holds {len(files) - 1} of this export" in missing
    assert "data file range 0 split 1 is missing" in gap


def test_a_manifest_of_another_export_fails_the_list_checksum(storage, unique_name, tmp_path):
    manifest = azcopy_export(_sample(storage, unique_name), tmp_path / "e", WHEN, split_every=4)
    fields = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**fields, "Checksum": fields["Checksum"] ^ 1}))

    error = _refused(storage, manifest, unique_name("dst"))

    assert "does not match its data files' CRCs" in error


def test_skipping_the_checksums_still_checks_the_rest(storage, unique_name, tmp_path):
    source = _sample(storage, unique_name)
    manifest = azcopy_export(source, tmp_path / "e", WHEN, split_every=4)
    fields = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**fields, "Checksum": 12345}))
    renamed = sorted(manifest.parent.glob("*_0_0_*.json"))[0]
    renamed.rename(renamed.with_name(renamed.name.rsplit("_", 1)[0] + "_0123456789ABCDEF.json"))
    target = unique_name("dst")

    result = run_cli("import", "--table", target, "--input", str(manifest), "--skip-azcopy-checksums")
    not_azcopy = run_cli("import", "--table", target, "--input", str(renamed.parent / "x.json"))

    assert result.returncode == 0, result.stderr
    assert "checksums skipped" in result.stdout
    assert table_state(storage.tables.get_table_client(target)) == table_state(source)
    assert not_azcopy.returncode == 2  # click: the path does not exist


def test_format_and_skip_flags_are_refused_where_they_do_not_apply(storage, unique_name, tmp_path):
    manifest = azcopy_export(_sample(storage, unique_name), tmp_path / "e", WHEN)
    other = tmp_path / "plain.ndjson"
    other.write_text('{"PartitionKey":"p","RowKey":"r"}\n')
    target = unique_name("dst")

    with_format = run_cli("import", "--table", target, "--input", str(manifest), "--format", "csv")
    skip_elsewhere = run_cli("import", "--table", target, "--input", str(other), "--skip-azcopy-checksums")

    assert with_format.returncode == 2 and "leave out --format" in with_format.stderr
    assert skip_elsewhere.returncode == 2 and "is for an AzCopy export" in skip_elsewhere.stderr
    assert _absent(storage, target)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"Checksum": "15564613245429458971"}, "Checksum: Input should be a valid integer"),
        ({"TotalDataFiles": -1}, "TotalDataFiles: Input should be greater than or equal to 0"),
        ({"Version": 3}, "version 3; this reader knows version 2"),
        ({"PayloadFormat": "Xml"}, "PayloadFormat 'Xml' is neither Json nor Csv"),
        ({"Timestamp": "2025-01-13 02:00"}, "Timestamp: Value error, Timestamp must be an ISO 8601 UTC time"),
    ],
)
def test_a_bad_manifest_is_refused_naming_the_field(storage, unique_name, tmp_path, change, expected):
    manifest = azcopy_export(_sample(storage, unique_name), tmp_path / "e", WHEN)
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), **change}))

    error = _refused(storage, manifest, unique_name("dst"))

    assert f"{manifest.name}" in error and expected in error


def test_a_malformed_entity_is_reported_with_its_file_and_nothing_is_written(storage, unique_name, tmp_path):
    manifest = azcopy_export(_sample(storage, unique_name), tmp_path / "e", WHEN, split_every=4)
    second = sorted(manifest.parent.glob("*_0_1_*.json"))[0]
    body = second.read_bytes()
    assert b'"RowKey":"001"' in body
    second.write_bytes(body.replace(b'"RowKey":"001"', b'"RowKey":1'))

    error = _refused(storage, manifest, unique_name("dst"), "--skip-azcopy-checksums")

    assert "is malformed: 1 problem;" in error and f"{second.name} line 1:" in error


def test_an_empty_export_and_a_dry_run(storage, unique_name, tmp_path):
    empty = storage.tables.create_table(unique_name("empty"))
    manifest = azcopy_export(empty, tmp_path / "empty", WHEN)
    full = azcopy_export(_sample(storage, unique_name), tmp_path / "full", WHEN, split_every=4)
    storage_target = unique_name("dst")

    nothing = import_entities(storage, ImportRequest(table=storage_target), azcopy.open_export(manifest))
    dry = run_cli("import", "--table", unique_name("dry"), "--input", str(full), "--dry-run", "--json")

    assert json.loads(manifest.read_text())["TotalDataFiles"] == 0 and nothing.imported == 0
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["imported"] == len(_entities())


def test_the_import_is_streamed_from_the_files(storage, unique_name, tmp_path):
    """A data file is read value by value: a file larger than a window still imports."""
    client = storage.tables.create_table(unique_name("big"))
    wide = {f"s{n}": "x" * 30_000 for n in range(3)}
    for start in range(0, 40, 10):
        client.submit_transaction(
            [("upsert", {"PartitionKey": "p", "RowKey": f"{i:03d}", **wide}) for i in range(start, start + 10)]
        )
    manifest = azcopy_export(client, tmp_path / "e", WHEN)
    assert os.path.getsize(next(manifest.parent.glob("*.json"))) > 2 * 1024 * 1024
    target = unique_name("dst")

    result = import_entities(storage, ImportRequest(table=target), azcopy.open_export(manifest))

    assert result.imported == 40 and result.azcopy["checksums"] == "verified"
    assert table_state(storage.tables.get_table_client(target)) == table_state(client)


@pytest.mark.parametrize("schema_layout", ["rows", "pairs"])
def test_a_csv_export_imports_with_the_types_of_its_schema(storage, unique_name, tmp_path, schema_layout):
    source = _sample(storage, unique_name)
    manifest = azcopy_export(source, tmp_path / "csv", WHEN, split_every=4, payload="csv", schema_layout=schema_layout)
    assert len(list(manifest.parent.glob("*.schema.csv"))) == len(list(manifest.parent.glob("*_?_?_*.csv"))) // 2
    target = unique_name("dst")

    result = run_cli("import", "--table", target, "--input", str(manifest), "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["imported"], report["format"], report["azcopy"]["payload"]) == (len(_entities()), "csv", "csv")
    # Sparse columns leave cells empty; none was an empty string here, so nothing is lost.
    assert [w.split(":")[0] for w in report["warnings"]] == [EMPTY_CELLS]
    assert table_state(storage.tables.get_table_client(target)) == table_state(source)


def test_an_empty_csv_string_is_read_as_absent_and_said(storage, unique_name, tmp_path):
    entities = [{"PartitionKey": "p", "RowKey": "1", "note": ""}, {"PartitionKey": "p", "RowKey": "2"}]
    source = write_table(storage, unique_name("src"), entities)
    manifest = azcopy_export(source, tmp_path / "csv", WHEN, payload="csv")

    result = import_entities(storage, ImportRequest(table=unique_name("dst")), azcopy.open_export(manifest))

    assert result.imported == 2  # the empty string, and the entity without the property, look alike
    assert result.warnings == [f"{EMPTY_CELLS}: note (2)"]


def test_a_csv_data_file_without_its_schema_or_with_a_bad_one_is_refused(storage, unique_name, tmp_path):
    manifest = azcopy_export(_sample(storage, unique_name), tmp_path / "csv", WHEN, split_every=4, payload="csv")
    schemas = sorted(manifest.parent.glob("*.schema.csv"))
    schemas[0].write_text("PartitionKey,RowKey,age\nEdm.String,Edm.String,Edm.Number\n")
    saved = schemas[1].read_bytes()
    schemas[1].unlink()

    missing = _refused(storage, manifest, unique_name("dst"))
    schemas[1].write_bytes(saved)
    bad = _refused(storage, manifest, unique_name("dst"))

    assert f"has no {schemas[1].name} beside it" in missing
    assert schemas[0].name in bad and "expected a row of names over a row of types" in bad
