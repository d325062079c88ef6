"""The seed's old daily backups, made by the JS SDK from npm as the old function made them: listed as
legacy with their time, restored by name or --as-of, imported when downloaded, typed where their
JSON tells the type and by an explicit rule where it cannot; retention leaves them alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from tablebackup.backup.archiver import backup_table
from tablebackup.backup.retention import prune
from tablebackup.transfer.importer import ImportRequest, import_entities
from tablebackup.transfer.sources import FileSource
from tablebackup.transfer.typerules import AmbiguousTypes
from tests.legacybackups import EARLY_SDK, legacy_backup, sample_entities, write_table
from tests.test_cli import _one_line_error, run_cli
from tests.wire import table_state

AT = datetime(2025, 1, 13, 2, 0, tzinfo=UTC)
# What an old backup cannot tell: a whole number (Int32 or a whole Double), NaN/Infinity (a Double
# or that string), a DateTime-looking string (a DateTime or a String).
RULES = "age=Edm.Int32,score=Edm.Double,joined=Edm.DateTime,missing=Edm.Double,huge=Edm.Double"


def _expected(source_state: dict) -> dict:
    """The source table as an old backup can bring it back: JS Dates keep milliseconds."""
    expected = {key: dict(props) for key, props in source_state.items()}
    for props in expected.values():
        if "joined" in props:
            props["joined"] = ("Edm.DateTime", "2025-01-13T02:00:00.123Z")
    return expected


@pytest.fixture
def old_backup(storage, unique_name, tmp_path):
    """(source table client, blob name, downloaded file) of a table backed up by the old function."""
    table = unique_name("seed")
    client = write_table(storage, table, sample_entities())
    name, body = legacy_backup(storage, table, AT)
    path = tmp_path / name
    path.write_bytes(body)
    return client, name, path


def test_the_old_backup_is_what_the_js_sdk_wrote(old_backup):
    _, name, path = old_backup
    first = orjson.loads(path.read_bytes())[0]

    assert name.endswith("-2025-01-13T02-00-00-000Z.json")
    assert {"partitionKey", "rowKey", "etag", "timestamp"} <= set(first)
    assert first["id"] == {"value": "6f9619ff-8b86-d011-b42d-00c04fc964ff", "type": "Guid"}
    assert first["photo"] == {"type": "Buffer", "data": [0, 1, 254, 255]}
    assert (first["score"], first["joined"], first["missing"]) == (2, "2025-01-13T02:00:00.123Z", "NaN")


def test_import_without_a_rule_names_every_ambiguous_property_and_writes_nothing(storage, old_backup, unique_name):
    _, _, path = old_backup
    target = unique_name("dst")

    result = run_cli("import", "--table", target, "--input", str(path))

    assert result.returncode == 1
    error = _one_line_error(result)
    for name in (
        "age (Edm.Int32 or Edm.Double",
        "score (",
        "joined (Edm.DateTime or Edm.String",
        "missing (",
        "huge (",
    ):
        assert name in error
    assert "--types" in error and "--infer-types" in error
    for unambiguous in ("id (", "photo (", "note (", "name (", "ratio (", "active ("):
        assert unambiguous not in error
    assert target not in {t.name for t in storage.tables.list_tables()}


def test_import_with_explicit_types_brings_back_every_type(storage, old_backup, unique_name):
    source, _, path = old_backup
    target = unique_name("dst")

    result = run_cli("import", "--table", target, "--input", str(path), "--types", RULES, "--json")

    assert result.returncode == 0, result.stderr
    body = orjson.loads(result.stdout)
    assert (body["imported"], body["shape"], body["format"], body["typed"]) == (2, "seed", "json", {})
    state = table_state(storage.tables.get_table_client(target))
    assert state == _expected(table_state(source))
    assert state["candidates", "001"]["id"][0] == "Edm.Guid"
    assert state["candidates", "001"]["photo"] == ("Edm.Binary", "AAH+/w==")
    assert state["candidates", "001"]["note"][0] == "Edm.String"  # a sentence with a date in it stays a String
    assert "etag" not in state["candidates", "001"] and "timestamp" not in state["candidates", "001"]


def test_infer_types_reports_each_property_it_typed(storage, old_backup, unique_name):
    _, _, path = old_backup
    target = unique_name("dst")

    human = run_cli("import", "--table", target, "--input", str(path), "--infer-types")

    assert human.returncode == 0, human.stderr
    assert "typed age as Edm.Int32 (2 entities)" in human.stdout
    assert "typed joined as Edm.DateTime (1 entities)" in human.stdout
    assert "typed score as Edm.Int32 (1 entities)" in human.stdout  # the whole Double, as it looks
    state = table_state(storage.tables.get_table_client(target))
    assert state["candidates", "001"]["score"] == ("Edm.Int32", 2)
    assert state["candidates", "002"]["score"] == ("Edm.Double", 3.5)


def test_a_rule_that_does_not_fit_a_value_is_refused_with_the_property_and_rule(storage, old_backup, unique_name):
    _, _, path = old_backup
    target = unique_name("dst")

    with pytest.raises(Exception, match=r"property 'name': 'Ann' is not a valid Edm.Guid \(--types name=Edm.Guid\)"):
        import_entities(
            storage, ImportRequest(table=target, types={"name": "Edm.Guid"}, infer_types=True), FileSource(path)
        )
    assert target not in {t.name for t in storage.tables.list_tables()}


def test_an_early_sdk_backup_keeps_int64_and_datetime_typed(storage, unique_name, tmp_path):
    table = unique_name("seed")
    source = write_table(storage, table, sample_entities(with_int64=True))
    _, body = legacy_backup(storage, table, AT, sdk=EARLY_SDK)
    path = tmp_path / "old.json"
    path.write_bytes(body)
    target = unique_name("dst")

    assert orjson.loads(body)[0]["big"] == {"value": str(2**40 + 1), "type": "Int64"}
    with pytest.raises(AmbiguousTypes) as refused:
        import_entities(storage, ImportRequest(table=target), FileSource(path))
    assert set(refused.value.properties) == {"age", "score", "missing", "huge"}  # joined and big are typed
    result = import_entities(
        storage,
        ImportRequest(table=target, types={"age": "Edm.Int32", "score": "Edm.Double"}, infer_types=True),
        FileSource(path),
    )

    assert result.typed == {"huge": {"Edm.Double": 1}, "missing": {"Edm.Double": 1}}
    assert table_state(storage.tables.get_table_client(target)) == table_state(source)


def test_list_backups_shows_old_backups_marked_legacy_with_their_time(storage, old_backup):
    source, name, _ = old_backup
    current = backup_table(storage, source.table_name)

    listed = run_cli("list-backups", "--table", source.table_name, "--json")
    human = run_cli("list-backups", "--table", source.table_name)

    assert listed.returncode == 0, listed.stderr
    backups = orjson.loads(listed.stdout)["backups"]
    assert [(b["backup"], b["kind"]) for b in backups] == [(current.backup, "full"), (name, "legacy")]
    assert backups[1]["legacy"] is True and backups[1]["taken_at"] == "2025-01-13T02:00:00.000Z"
    assert f"{name:<40} 2025-01-13T02:00:00.000Z" in human.stdout and "legacy" in human.stdout


def test_restore_by_old_name_and_as_of_picks_the_old_backup_when_it_is_the_right_one(storage, old_backup, unique_name):
    source, name, _ = old_backup
    by_name, as_of_old = unique_name("dst"), unique_name("dst")

    named = run_cli("restore", "-t", source.table_name, "--backup", name, "--target", by_name, "--types", RULES)
    before = run_cli(
        "restore", "-t", source.table_name, "--as-of", "2025-02-01T00:00:00Z", "--target", as_of_old,
        "--types", RULES, "--json",
    )  # fmt: skip
    source.upsert_entity({"PartitionKey": "candidates", "RowKey": "003", "name": "Cy"})
    current = backup_table(storage, source.table_name)
    later = run_cli(
        "restore", "-t", source.table_name, "--as-of", (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        "--target", unique_name("dst"), "--dry-run", "--json",
    )  # fmt: skip
    too_early = run_cli("restore", "-t", source.table_name, "--as-of", "2025-01-01T00:00:00Z", "--target", by_name)

    assert named.returncode == 0, named.stderr
    assert f"restored 2 entities from {name}" in named.stdout
    assert before.returncode == 0, before.stderr
    assert orjson.loads(before.stdout)["backup"] == name
    for target in (by_name, as_of_old):
        assert table_state(storage.tables.get_table_client(target)) == _expected(
            {key: value for key, value in table_state(source).items() if key[1] != "003"}
        )
    assert later.returncode == 0, later.stderr
    assert orjson.loads(later.stdout)["backup"] == current.backup  # the newer backup wins
    assert too_early.returncode == 1
    assert "no complete backup taken at or before" in _one_line_error(too_early)


def test_restoring_an_old_backup_without_rules_names_the_properties_and_writes_nothing(
    storage, old_backup, unique_name
):
    source, name, _ = old_backup
    target = unique_name("dst")

    result = run_cli("restore", "-t", source.table_name, "--backup", name, "--target", target)

    assert result.returncode == 1
    error = _one_line_error(result)
    assert "joined (Edm.DateTime or Edm.String" in error and "--types" in error
    assert target not in {t.name for t in storage.tables.list_tables()}


def test_an_old_backup_of_another_table_is_refused(storage, old_backup, unique_name):
    _, name, _ = old_backup

    result = run_cli("restore", "-t", unique_name("other"), "--backup", name, "--types", RULES)

    assert result.returncode == 1
    assert "is of table" in _one_line_error(result)


def test_retention_never_deletes_old_backups(storage, old_backup):
    source, name, _ = old_backup
    backup_table(storage, source.table_name)

    pruned = prune(storage, [source.table_name], keep_daily=1, keep_weekly=0, keep_monthly=0)

    assert name not in str(pruned)
    assert storage.backups.get_blob_client(name).exists()
