"""Restore and import targets: an empty target is a usage error, never the source table, and the
app's own tables are refused unless explicitly allowed, and then only without deletions. Every
refusal writes nothing; tried over the CLI, HTTP and the restore queue."""

from __future__ import annotations

import json

import azure.functions as func
import orjson
import pytest
from azure.functions.queue import QueueMessage

from localdev.host import QueueOutput, invoke
from localdev.sample import seed_table
from tablebackup.backup.archiver import backup_table
from tablebackup.core.clients import Storage
from tablebackup.core.settings import get_settings
from tablebackup.repository import catalog
from tablebackup.repository.erasures import key_digest
from tablebackup.storage.targets import app_tables
from tests.test_cli import run_cli
from tests.wire import table_state

APP_TABLE_SETTINGS = (
    "AUDIT_TABLE",
    "AUDIT_REJECTED_TABLE",
    "ERASURES_TABLE",
    "BACKUP_RUNS_TABLE",
    "VERIFICATIONS_TABLE",
    "DRILLS_TABLE",
    "RESTORE_OPERATIONS_TABLE",
)


@pytest.fixture
def own_tables(env, monkeypatch, unique_name):
    """Every app table named for this test alone."""
    names = {setting: unique_name(setting.split("_")[0].lower()) for setting in APP_TABLE_SETTINGS}
    for setting, name in names.items():
        monkeypatch.setenv(setting, name)
    get_settings.cache_clear()
    return names


@pytest.fixture
def storage(own_tables) -> Storage:
    """Storage whose app tables are this test's own."""
    return Storage.from_settings()


@pytest.fixture
def changed_after_backup(storage, unique_name):
    """A table backed up, then changed: restoring into it would be visible."""
    table = unique_name("src")
    seed_table(storage.tables, table, 30)
    client = storage.tables.get_table_client(table)
    manifest = backup_table(storage, table)
    client.upsert_entity({"PartitionKey": "new", "RowKey": "after-backup"})
    return client, manifest


def _one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def _post_restore(functions, body: dict) -> func.HttpResponse:
    request = func.HttpRequest("POST", "http://localhost/api/restore", body=json.dumps(body).encode())
    return functions["restore_table"].get_user_function()(request, QueueOutput())


def _import(functions, table: str, body: bytes, **params) -> func.HttpResponse:
    request = func.HttpRequest(
        "POST", f"http://localhost/api/import/{table}", body=body, params=params, route_params={"table": table}
    )
    return functions["import_table"].get_user_function()(request)


def _attempts(storage, table: str) -> list:
    return catalog.backup_attempts(storage.backups, table)


@pytest.mark.parametrize("target", ["", "   "])
@pytest.mark.parametrize("mode", ["replace", "mirror"])
def test_cli_restore_with_an_empty_target_exits_2_and_writes_nothing(storage, changed_after_backup, target, mode):
    client, _ = changed_after_backup
    before, attempts = table_state(client), _attempts(storage, client.table_name)

    result = run_cli("restore", "-t", client.table_name, "-b", "latest", "--target", target, "--mode", mode)

    assert result.returncode == 2
    assert "'--target': is empty" in _one_line_error(result)
    assert table_state(client) == before  # the after-backup entity is still there: no mirror ran
    assert _attempts(storage, client.table_name) == attempts  # no safety backup either


@pytest.mark.parametrize("command", ["restore", "undelete", "import"])
def test_cli_empty_table_exits_2(storage, own_tables, tmp_path, command):
    data = tmp_path / "x.ndjson"
    data.write_text('{"PartitionKey":"p","RowKey":"1"}\n')
    args = {
        "restore": ["restore", "--table", "", "-b", "latest"],
        "undelete": ["undelete", "--table", "", "--partition-key", "p", "--row-key", "1"],
        "import": ["import", "--table", "", "--input", str(data)],
    }[command]

    result = run_cli(*args)

    assert result.returncode == 2
    assert "'--table' / '-t': is empty" in _one_line_error(result)


def test_cli_undelete_with_an_empty_target_exits_2(storage, changed_after_backup):
    client, _ = changed_after_backup
    client.delete_entity("CANDIDATE", "0000001")

    result = run_cli(
        "undelete", "-t", client.table_name, "--partition-key", "CANDIDATE", "--row-key", "0000001", "--target", ""
    )

    assert result.returncode == 2
    assert "'--target': is empty" in _one_line_error(result)
    assert not list(client.query_entities("RowKey eq '0000001'"))


@pytest.mark.parametrize("target", ["", " ", "\t"])
def test_http_restore_with_an_empty_target_is_400_and_writes_nothing(functions, storage, changed_after_backup, target):
    client, _ = changed_after_backup
    before, attempts = table_state(client), _attempts(storage, client.table_name)

    response = _post_restore(
        functions, {"table": client.table_name, "backup": "latest", "target": target, "mode": "mirror"}
    )

    assert response.status_code == 400
    assert orjson.loads(response.get_body()) == {
        "error": "the target is empty: give a table name, or leave the target out"
    }
    assert table_state(client) == before
    assert _attempts(storage, client.table_name) == attempts


def test_a_queued_restore_with_an_empty_target_fails_without_writing(
    functions, storage, changed_after_backup, own_tables
):
    client, _ = changed_after_backup
    storage.tables.create_table(own_tables["RESTORE_OPERATIONS_TABLE"])  # as POST /api/restore does
    before = table_state(client)
    operation = "0" * 31 + "1"
    request = {"table": client.table_name, "backup": "latest", "target": "", "mode": "mirror"}
    message = orjson.dumps({"operation": operation, "request": request})

    invoke(functions["restore_worker"].get_user_function(), QueueMessage(id="m1", body=message, dequeue_count=1))

    status = functions["restore_status"].get_user_function()(
        func.HttpRequest("GET", "http://x/api/restore/op", body=b"", route_params={"operation": operation})
    )
    answer = orjson.loads(status.get_body())
    assert (answer["status"], answer["error"]) == (
        "failed",
        "the target is empty: give a table name, or leave the target out",
    )
    assert table_state(client) == before


@pytest.mark.parametrize("setting", APP_TABLE_SETTINGS)
def test_http_restore_into_an_app_table_is_refused(functions, storage, changed_after_backup, own_tables, setting):
    client, _ = changed_after_backup
    target = own_tables[setting].upper()  # table names are case-insensitive

    response = _post_restore(functions, {"table": client.table_name, "backup": "latest", "target": target})

    assert response.status_code == 400
    error = orjson.loads(response.get_body())["error"]
    assert f"is the app's own {setting}" in error and "refused" in error
    assert target.lower() not in [t.name.lower() for t in storage.tables.list_tables()]


def test_a_mirror_into_the_erasure_register_is_refused_even_when_allowed(functions, storage, own_tables, unique_name):
    people = unique_name("people")
    seed_table(storage.tables, people, 10)
    # A register an earlier version kept in the data account: still read, so still guarded.
    register = storage.tables.create_table(own_tables["ERASURES_TABLE"])
    register.upsert_entity({"PartitionKey": people, "RowKey": key_digest("CANDIDATE", "0000001"), "reason": "t1"})
    kept = table_state(register)
    unrelated = unique_name("other")
    seed_table(storage.tables, unrelated, 5)
    backup_table(storage, unrelated)

    for body in (
        {"table": unrelated, "backup": "latest", "target": own_tables["ERASURES_TABLE"], "mode": "mirror"},
        {
            "table": unrelated,
            "backup": "latest",
            "target": own_tables["ERASURES_TABLE"],
            "mode": "mirror",
            "allowAppTable": True,
        },
    ):
        response = _post_restore(functions, body)
        assert response.status_code == 400, response.get_body()
        assert "ERASURES_TABLE" in orjson.loads(response.get_body())["error"]

    assert table_state(register) == kept
    assert len(kept) == 1


def test_an_app_table_restored_from_its_own_backup_when_allowed(storage, own_tables):
    audit = storage.tables.create_table(own_tables["AUDIT_TABLE"])
    audit.upsert_entity({"PartitionKey": "2026-11-25", "RowKey": "entry-1", "operation": "INSERT"})
    backup_table(storage, own_tables["AUDIT_TABLE"])
    audit.upsert_entity({"PartitionKey": "2026-11-26", "RowKey": "entry-2", "operation": "DELETE"})
    audit.delete_entity("2026-11-25", "entry-1")  # the loss to recover from

    refused = run_cli("restore", "-t", own_tables["AUDIT_TABLE"], "-b", "latest")
    mirror = run_cli(
        "restore", "-t", own_tables["AUDIT_TABLE"], "-b", "latest", "--allow-app-table", "--mode", "mirror"
    )
    assert refused.returncode == mirror.returncode == 1
    assert "is the app's own AUDIT_TABLE" in _one_line_error(refused)
    assert "only written without deletions" in _one_line_error(mirror)
    assert "entry-1" not in {e["RowKey"] for e in audit.list_entities()}

    allowed = run_cli("restore", "-t", own_tables["AUDIT_TABLE"], "-b", "latest", "--allow-app-table", "--json")

    assert allowed.returncode == 0, allowed.stderr
    assert orjson.loads(allowed.stdout)["restored"] == 1
    # Nothing deleted: the entry written after the backup is kept (next to the restore's own entry).
    assert {"entry-1", "entry-2"} <= {e["RowKey"] for e in audit.list_entities()}


def test_import_into_an_app_table_is_refused_unless_allowed(functions, storage, own_tables, tmp_path):
    drills = own_tables["DRILLS_TABLE"]
    line = b'{"PartitionKey":"p","RowKey":"1"}\n'
    data = tmp_path / "drills.ndjson"
    data.write_bytes(line)

    cli = run_cli("import", "-t", drills, "-i", str(data))
    http = _import(functions, drills.capitalize(), line)

    assert cli.returncode == 1 and "is the app's own DRILLS_TABLE" in _one_line_error(cli)
    assert http.status_code == 400 and "is the app's own DRILLS_TABLE" in orjson.loads(http.get_body())["error"]
    assert drills not in [t.name for t in storage.tables.list_tables()]

    allowed = _import(functions, drills, line, allowAppTable="true")

    assert allowed.status_code == 200, allowed.get_body()
    assert [e["RowKey"] for e in storage.tables.get_table_client(drills).list_entities()] == ["1"]


def test_every_app_table_setting_is_guarded(own_tables):
    assert set(app_tables(get_settings())) == set(APP_TABLE_SETTINGS)
