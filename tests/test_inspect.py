"""show, diff and history against a real Azurite: a table changed in known ways gives exactly those
differences, against the live table and between backups (an incremental link included); one
entity's history across backups; the CLI's exit codes; GET /api/backups/{id} through the app."""

from __future__ import annotations

from datetime import UTC, datetime

import azure.functions as func
import orjson
import pytest
from azure.data.tables import EdmType, EntityProperty, UpdateMode

from tablebackup.audit.entries import write_event
from tablebackup.audit.messages import instant_text, parse_message
from tablebackup.backup.archiver import backup_table
from tablebackup.inspect.diff import diff_table
from tablebackup.inspect.history import entity_history
from tablebackup.inspect.show import describe_backup
from tablebackup.repository import erasures
from tablebackup.repository.backupformat import BackupReason
from tests.test_cli import run_cli


def _known_table(storage, table: str) -> None:
    client = storage.tables.create_table(table)
    for row, name in (("a", "same"), ("b", "same too"), ("c", "to remove"), ("d", "old name")):
        client.upsert_entity({"PartitionKey": "P", "RowKey": row, "name": name, "n": 1})
    client.upsert_entity({"PartitionKey": "P", "RowKey": "e", "name": "retyped", "n": 2})  # Int32 2


def _change_known_ways(storage, table: str) -> None:
    client = storage.tables.get_table_client(table)
    client.upsert_entity({"PartitionKey": "P", "RowKey": "f", "name": "added", "n": 1})
    client.delete_entity("P", "c")
    client.update_entity({"PartitionKey": "P", "RowKey": "d", "name": "new name"}, UpdateMode.MERGE)
    # Only the type changes: Int32 2 becomes Double 2.0.
    client.update_entity(
        {"PartitionKey": "P", "RowKey": "e", "n": EntityProperty(2.0, EdmType.DOUBLE)}, UpdateMode.MERGE
    )


def _by_key(result: dict) -> dict:
    return {(r["PartitionKey"], r["RowKey"]): r for r in result["differences"]}


def _assert_known_differences(result: dict) -> None:
    counts = {name: result[name] for name in ("added", "removed", "changed", "unchanged")}
    assert counts == {"added": 1, "removed": 1, "changed": 2, "unchanged": 2}
    found = _by_key(result)
    assert set(found) == {("P", "f"), ("P", "c"), ("P", "d"), ("P", "e")}
    assert found["P", "f"]["change"] == "added"
    assert found["P", "f"]["properties"]["name"] == {"old": None, "new": {"value": "added", "type": "Edm.String"}}
    assert found["P", "c"]["change"] == "removed"
    assert found["P", "c"]["properties"]["name"]["old"] == {"value": "to remove", "type": "Edm.String"}
    assert found["P", "d"]["properties"] == {
        "name": {"old": {"value": "old name", "type": "Edm.String"}, "new": {"value": "new name", "type": "Edm.String"}}
    }
    assert found["P", "e"]["properties"] == {
        "n": {"old": {"value": 2, "type": "Edm.Int32"}, "new": {"value": 2.0, "type": "Edm.Double"}}
    }


def test_diff_reports_exactly_the_known_changes_against_the_live_table_and_between_backups(storage, unique_name):
    table = unique_name("diff")
    _known_table(storage, table)
    full = backup_table(storage, table)
    assert diff_table(storage, table, full.backup)["identical"]

    _change_known_ways(storage, table)
    lines = []
    live = diff_table(storage, table, full.backup, on_difference=lines.append)
    _assert_known_differences(live)
    assert live["to"]["live"] and not live["identical"]
    assert sorted((line["change"], line["RowKey"]) for line in lines) == [
        ("added", "f"),
        ("changed", "d"),
        ("changed", "e"),
        ("removed", "c"),
    ]

    link = backup_table(storage, table, incremental=True)
    assert link.kind == "incremental" and link.parent == full.backup
    between = diff_table(storage, table, full.backup, link.backup)
    _assert_known_differences(between)
    assert diff_table(storage, table, link.backup)["identical"]  # the link's state is the live table
    assert diff_table(storage, table, "latest")["from"]["backup"] == link.backup

    narrowed = diff_table(storage, table, full.backup, link.backup, filter_text="RowKey eq 'e' or RowKey eq 'a'")
    assert (narrowed["changed"], narrowed["unchanged"], narrowed["added"], narrowed["removed"]) == (1, 1, 0, 0)

    # An erased entity is on neither side.
    erasures.erase(storage, table, "P", "d", reason="request 7", actor="test", record_audit=lambda _: None)
    erased = diff_table(storage, table, full.backup, link.backup)
    assert (erased["changed"], erased["erased_left_out"]) == (1, 2)
    assert ("P", "d") not in _by_key(erased)


def test_history_follows_an_entity_created_changed_deleted_and_recreated(audit_storage, unique_name):
    storage = audit_storage
    table = unique_name("hist")
    client = storage.tables.create_table(table)
    client.upsert_entity({"PartitionKey": "other", "RowKey": "1", "v": 0})
    before = backup_table(storage, table)  # the entity does not exist yet
    client.upsert_entity({"PartitionKey": "P", "RowKey": "x", "v": 1, "name": "first"})
    created = backup_table(storage, table)
    client.update_entity({"PartitionKey": "P", "RowKey": "x", "v": 2}, UpdateMode.MERGE)
    message = {
        "tableName": table,
        "operation": "UPDATE",
        "partitionKey": "P",
        "rowKey": "x",
        "userId": "alice",
        "timestamp": instant_text(datetime.now(UTC)),
        "beforeData": {"PartitionKey": "P", "RowKey": "x", "v": 1, "name": "first"},
        "afterData": {"PartitionKey": "P", "RowKey": "x", "v": 2, "name": "first"},
    }
    write_event(storage, parse_message(orjson.dumps(message)), "message-1")
    changed = backup_table(storage, table, incremental=True)
    client.delete_entity("P", "x")
    deleted = backup_table(storage, table, incremental=True)
    client.upsert_entity({"PartitionKey": "P", "RowKey": "x", "v": 1, "name": "first"})
    recreated = backup_table(storage, table, reason=BackupReason.scheduled())

    history = entity_history(storage, table, "P", "x")
    rows = {row["backup"]: row for row in history["backups"]}
    assert [row["backup"] for row in history["backups"]] == [
        recreated.backup,
        deleted.backup,
        changed.backup,
        created.backup,
        before.backup,
    ]
    assert history["held_in"] == [recreated.backup, changed.backup, created.backup]
    assert history["absent_from"] == [deleted.backup, before.backup]
    assert rows[created.backup]["since_previous"] == "first seen"
    assert rows[changed.backup]["since_previous"] == "changed"
    assert rows[changed.backup]["changes"] == {
        "v": {"old": {"value": 1, "type": "Edm.Int32"}, "new": {"value": 2, "type": "Edm.Int32"}}
    }
    assert rows[recreated.backup]["since_previous"] == "re-created"
    # Re-created as it first was: the same version, so the same digest.
    assert rows[recreated.backup]["digest"] == rows[created.backup]["digest"] != rows[changed.backup]["digest"]
    assert history["live"] == {"holds": True, "digest": rows[recreated.backup]["digest"]}

    [audited] = history["audit"]
    assert (audited["operation"], audited["user"]) == ("UPDATE", "alice")
    assert (audited["after_backup"], audited["before_backup"]) == (created.backup, changed.backup)
    assert audited["changes"] == {
        "v": {"old": {"value": 1, "type": "Edm.Int32"}, "new": {"value": 2, "type": "Edm.Int32"}}
    }

    erasures.erase(storage, table, "P", "x", reason="request 8", actor="test", record_audit=lambda _: None)
    gone = entity_history(storage, table, "P", "x")
    assert gone["erased"] and gone["backups"] == []


def test_diff_exit_codes_and_output_file(storage, unique_name, tmp_path):
    table = unique_name("cli")
    _known_table(storage, table)
    full = backup_table(storage, table)

    same = run_cli("diff", "--table", table, "--from", "latest", "--json")
    assert same.returncode == 0, same.stderr
    assert orjson.loads(same.stdout)["identical"] is True

    _change_known_ways(storage, table)
    output = tmp_path / "changes.ndjson"
    different = run_cli("diff", "-t", table, "--from", full.backup, "--output", str(output))
    assert different.returncode == 1, different.stderr
    assert different.stderr == ""  # different is an answer (exit 1), not an error
    assert "1 added, 1 removed, 2 changed, 2 unchanged" in different.stdout
    lines = [orjson.loads(line) for line in output.read_bytes().splitlines()]
    assert sorted(line["RowKey"] for line in lines) == ["c", "d", "e", "f"]
    assert not (tmp_path / "changes.ndjson.partial").exists()

    for bad in (
        ("diff", "-t", table),  # no --from
        ("diff", "-t", table, "--from", full.backup, "--filter", "RowKey eq"),
        ("diff", "-t", table, "--from", "not-an-id"),
    ):
        refused = run_cli(*bad)
        assert refused.returncode == 2, (bad, refused.stderr)
        assert refused.stderr.startswith("error: ") and len(refused.stderr.strip().splitlines()) == 1

    missing = run_cli("diff", "-t", table, "--from", f"{table.lower()}-20200101T000000.000000Z", "--json")
    assert missing.returncode == 3, missing.stderr
    assert orjson.loads(missing.stdout)["exit_code"] == 3

    shown = run_cli("show", "-t", table, "--backup", "latest")
    assert shown.returncode == 0, shown.stderr
    assert full.backup in shown.stdout and "on demand" in shown.stdout
    history = run_cli("history", "-t", table, "--partition-key", "P", "--row-key", "c", "--json")
    assert history.returncode == 0, history.stderr
    assert orjson.loads(history.stdout)["held_in"] == [full.backup]


def _get(backup: str, params: dict | None = None) -> func.HttpRequest:
    return func.HttpRequest(
        "GET", f"http://localhost/api/backups/{backup}", params=params or {}, route_params={"id": backup}, body=b""
    )


def test_show_and_get_backup_by_id(functions, storage, unique_name):
    table = unique_name("show")
    _known_table(storage, table)
    full = backup_table(storage, table, reason=BackupReason.scheduled())
    _change_known_ways(storage, table)
    link = backup_table(storage, table, incremental=True)
    erasures.erase(storage, table, "P", "a", reason="request 9", actor="test", record_audit=lambda _: None)

    shown = describe_backup(storage, table, "latest")
    assert shown["backup"] == link.backup and shown["latest"] and shown["kind"] == "incremental"
    assert [entry["backup"] for entry in shown["chain"]["links"]] == [full.backup, link.backup]
    assert shown["chain"]["links"][0]["reason"] == "scheduled" and shown["reason"]["kind"] == "on-demand"
    assert shown["table_entities"] == 5 and shown["read_from_secondary"] is False
    assert shown["parts"][0]["entities"] == link.entities
    assert shown["verification"] is None
    assert shown["erasures"]["registered_keys"] == 1
    assert shown["key_range"]["first"] == {"PartitionKey": "P", "RowKey": "b"}  # P/a is erased: never shown
    older = describe_backup(storage, table, full.backup)
    assert not older["latest"] and older["chain"]["links"][0]["backup"] == full.backup

    show_backup = functions["show_backup"].get_user_function()
    response = show_backup(_get(full.backup))
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert orjson.loads(response.get_body()) == orjson.loads(orjson.dumps(older))
    latest = show_backup(_get("latest", {"table": table}))
    assert orjson.loads(latest.get_body())["backup"] == link.backup

    for backup, params, status in (
        (f"{table.lower()}-20200101T000000.000000Z", {}, 404),
        ("no-such-thing", {}, 400),
        ("latest", {}, 400),
        (full.backup, {"table": "othertable"}, 400),
    ):
        refused = show_backup(_get(backup, params))
        assert refused.status_code == status, (backup, refused.get_body())
        assert set(orjson.loads(refused.get_body())) == {"error"}


@pytest.mark.parametrize("value", ["RowKey eq", "nonsense"])
def test_a_bad_filter_is_refused_before_anything_is_read(storage, unique_name, value):
    from tablebackup.core.errors import InvalidInput

    with pytest.raises(InvalidInput):
        diff_table(storage, unique_name("never"), "latest", filter_text=value)


def _part_keys(storage, manifest) -> list[set]:
    from tablebackup.core.entities import decode_line
    from tablebackup.repository.backupformat import read_data_lines

    return [
        {(e["PartitionKey"], e["RowKey"]) for e in map(decode_line, read_data_lines(storage.backups, manifest, p.blob))}
        for p in manifest.parts
    ]


def test_diff_across_parts_and_an_incremental_link_reports_exactly_the_known_changes(storage, monkeypatch, unique_name):
    """A backup written in two parts, changed in known ways in both parts' key ranges, then an
    incremental on top of it: the same counts and details against the live table and between them."""
    import tablebackup.backup.fanout
    from localdev.sample import candidates, seed_table
    from tablebackup.backup.archiver import backup_tables
    from tablebackup.storage.tablewriter import submit_operations

    monkeypatch.setattr(tablebackup.backup.fanout, "STREAMS_MIN_ENTITIES", 100)
    table = unique_name("parts")
    seed_table(storage.tables, table, 600)
    single = backup_table(storage, table)  # no key samples yet: one blob
    [parts] = backup_tables(storage, [table]).backups  # read in two streams: two parts
    assert single.parts is None and parts.parts and len(parts.parts) == 2
    same = diff_table(storage, table, single.backup, parts.backup)
    assert same["identical"] and same["unchanged"] == 600

    seeded = list(candidates(600))
    keys = [{"PartitionKey": e["PartitionKey"], "RowKey": e["RowKey"]} for e in seeded]
    removed, renamed, retyped = (seeded[0], seeded[599]), (seeded[130], seeded[490]), seeded[370]
    added = [
        {"PartitionKey": seeded[250]["PartitionKey"], "RowKey": "zz added", "n": 1},
        {"PartitionKey": seeded[599]["PartitionKey"], "RowKey": "zz added", "n": 2},
    ]
    operations = [("delete", keys[index]) for index in (0, 599)]
    operations += [("merge", {**keys[index], "name": "renamed"}) for index in (130, 490)]
    operations.append(("merge", {**keys[370], "age": float(retyped["age"]), "age@odata.type": "Edm.Double"}))
    operations += [("replace", entity) for entity in added]
    submit_operations(storage.tables.get_table_client(table), operations)

    changed = {(e["PartitionKey"], e["RowKey"]) for e in (*removed, *renamed, retyped, *added)}
    in_parts = _part_keys(storage, parts)
    assert all(changed & keys_of_part for keys_of_part in in_parts)  # both parts hold changed keys

    def assert_known(result: dict) -> None:
        counts = {name: result[name] for name in ("added", "removed", "changed", "unchanged")}
        assert counts == {"added": 2, "removed": 2, "changed": 3, "unchanged": 595}
        found = _by_key(result)
        assert set(found) == changed
        for entity in removed:
            record = found[entity["PartitionKey"], entity["RowKey"]]
            assert record["change"] == "removed"
            assert record["properties"]["name"] == {"old": {"value": entity["name"], "type": "Edm.String"}, "new": None}
        for entity in renamed:
            assert found[entity["PartitionKey"], entity["RowKey"]]["properties"] == {
                "name": {
                    "old": {"value": entity["name"], "type": "Edm.String"},
                    "new": {"value": "renamed", "type": "Edm.String"},
                }
            }
        age = retyped["age"]
        assert found[retyped["PartitionKey"], retyped["RowKey"]]["properties"] == {
            "age": {"old": {"value": age, "type": "Edm.Int32"}, "new": {"value": float(age), "type": "Edm.Double"}}
        }
        for entity in added:
            record = found[entity["PartitionKey"], entity["RowKey"]]
            assert record["change"] == "added"
            assert record["properties"] == {"n": {"old": None, "new": {"value": entity["n"], "type": "Edm.Int32"}}}

    assert_known(diff_table(storage, table, parts.backup))
    link = backup_table(storage, table, incremental=True)
    assert link.kind == "incremental" and link.parent == parts.backup
    assert_known(diff_table(storage, table, parts.backup, link.backup))
    assert_known(diff_table(storage, table, single.backup, "latest"))
    assert diff_table(storage, table, "latest")["identical"]
    # The other way round, added and removed swap and each change's old and new.
    back = diff_table(storage, table, link.backup, parts.backup)
    assert (back["added"], back["removed"], back["changed"]) == (2, 2, 3)
    assert _by_key(back)[retyped["PartitionKey"], retyped["RowKey"]]["properties"]["age"]["new"] == {
        "value": retyped["age"],
        "type": "Edm.Int32",
    }


def test_the_cheap_sameness_test_never_hides_a_change():
    from tablebackup.inspect.versions import changed_properties, from_wire, same_version

    base = {
        "PartitionKey": "P",
        "RowKey": "r",
        "Timestamp": "2026-01-01T00:00:00.0000000Z",
        "n": 2,
        "one": 1,
        "b": True,
    }
    cases = {
        "Int32 2 to Double 2.0": {**base, "n": 2.0, "n@odata.type": "Edm.Double"},
        "Int32 1 to Boolean true": {**base, "one": True},
        "Boolean true to Int32 1": {**base, "b": 1},
        "a property added": {**base, "x": ""},
        "a property removed": {k: v for k, v in base.items() if k != "b"},
    }
    for name, other in cases.items():
        assert not same_version(base, other), name
        assert changed_properties(base, other), name
    rewritten = {**base, "Timestamp": "2026-02-01T00:00:00.0000000Z", "odata.etag": "W/x"}
    reordered = dict(reversed(list(base.items())))
    for name, other in {"only the Timestamp": rewritten, "another order": reordered}.items():
        assert not changed_properties(base, other), name
    assert same_version(base, rewritten) is False  # the etag: looked at closer, found the same
    assert same_version(base, reordered) is True
    # A whole Double read live is annotated as a backup line annotates it.
    live = from_wire({"PartitionKey": "P", "RowKey": "r", "odata.etag": "W/x", "d": 2.0})
    assert live == {"PartitionKey": "P", "RowKey": "r", "d": 2.0, "d@odata.type": "Edm.Double"}


def test_the_live_read_ahead_is_bounded_stops_with_its_reader_and_raises_its_errors():
    from tablebackup.inspect.diff import _read_ahead

    read = []

    def pages(count: int, fail_at: int | None = None):
        for number in range(count):
            if number == fail_at:
                raise NotFoundError("the table went away")
            read.append(number)
            yield [{"page": number}]

    class NotFoundError(Exception):
        pass

    assert [page[0]["page"] for page in _read_ahead(pages(10), depth=2)] == list(range(10))

    read.clear()
    ahead = _read_ahead(pages(1000), depth=2)
    assert next(ahead) == [{"page": 0}]
    ahead.close()  # the caller stops early: the reader stops too, at most a few pages on
    assert len(read) <= 5

    with pytest.raises(NotFoundError, match="went away"):
        list(_read_ahead(pages(10, fail_at=3), depth=2))


def test_diff_against_a_table_that_does_not_exist_could_not_compare(storage, unique_name):
    table = unique_name("gone")
    _known_table(storage, table)
    full = backup_table(storage, table)
    storage.tables.delete_table(table)

    result = run_cli("diff", "-t", table, "--from", full.backup, "--json")
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "does not exist" in result.stderr
    assert orjson.loads(result.stdout)["exit_code"] == 3


def test_history_lists_the_newest_audited_changes_and_counts_them_all(audit_storage, unique_name, monkeypatch):
    import tablebackup.inspect.history

    storage = audit_storage
    table = unique_name("hot")
    client = storage.tables.create_table(table)
    client.upsert_entity({"PartitionKey": "P", "RowKey": "x", "v": 0})
    backup_table(storage, table)
    now = datetime.now(UTC)
    for number in (1, 2, 3):
        message = {
            "tableName": table,
            "operation": "UPDATE",
            "partitionKey": "P",
            "rowKey": "x",
            "userId": "bob",
            "timestamp": instant_text(now),
            "sequence": number,
            "beforeData": {"PartitionKey": "P", "RowKey": "x", "v": number - 1},
            "afterData": {"PartitionKey": "P", "RowKey": "x", "v": number},
        }
        write_event(storage, parse_message(orjson.dumps(message)), f"hot-{number}")
    monkeypatch.setattr(tablebackup.inspect.history, "MAX_AUDIT_LISTED", 2)

    history = entity_history(storage, table, "P", "x", now=now)

    assert history["audit_total"] == 3 and len(history["audit"]) == 2
    assert [change["changes"]["v"]["new"]["value"] for change in history["audit"]] == [2, 3]
    assert history["audit_note"] == "the newest 2 of 3 audited changes are listed"
