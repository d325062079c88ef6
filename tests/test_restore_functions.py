"""Restore over HTTP and from the CLI: the registered functions with real azure.functions objects,
the queue path for large restores, and `python -m tablebackup restore` as a separate process."""

from __future__ import annotations

import json

import azure.functions as func
import orjson
import pytest

from localdev.host import QueueOutput, invoke
from localdev.sample import seed_table
from tablebackup.backup.archiver import backup_table
from tablebackup.core.clients import Storage
from tablebackup.core.settings import get_settings
from tests.test_cli import run_cli
from tests.wire import table_state


def _post(body) -> func.HttpRequest:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return func.HttpRequest("POST", "http://localhost/api/restore", body=data)


def _status(functions, operation: str) -> func.HttpResponse:
    request = func.HttpRequest(
        "GET", f"http://localhost/api/restore/{operation}", body=b"", route_params={"operation": operation}
    )
    return functions["restore_status"].get_user_function()(request)


@pytest.fixture
def backed_up(storage, unique_name):
    table = unique_name("httpsrc")
    seed_table(storage.tables, table, 120)
    client = storage.tables.get_table_client(table)
    return client, table_state(client), backup_table(storage, table)


def test_restore_functions_are_registered_with_their_bindings(functions):
    post = functions["restore_table"]
    assert post.get_trigger().route == "restore"
    assert post.get_trigger().auth_level == func.AuthLevel.FUNCTION
    [queue_out] = [b for b in post.get_bindings() if b.get_dict_repr()["type"] == "queue"]
    assert queue_out.get_dict_repr()["queueName"] == "restore-jobs"
    assert queue_out.get_dict_repr()["connection"] == "AzureWebJobsStorage"
    assert functions["restore_status"].get_trigger().route == "restore/{operation}"
    assert functions["restore_status"].get_trigger().auth_level == func.AuthLevel.FUNCTION
    worker = functions["restore_worker"].get_trigger().get_dict_repr()
    assert (worker["type"], worker["queueName"], worker["connection"]) == (
        "queueTrigger",
        "restore-jobs",
        "AzureWebJobsStorage",
    )
    # The worker sends the key ranges of a large restore back onto its own queue.
    [ranges_out] = [
        b.get_dict_repr() for b in functions["restore_worker"].get_bindings() if b.get_dict_repr()["type"] == "queue"
    ]
    assert (ranges_out["type"], ranges_out["name"], ranges_out["queueName"]) == ("queue", "jobs", "restore-jobs")


def test_a_small_restore_answers_200_with_the_cli_json(functions, storage, backed_up):
    client, original, manifest = backed_up
    client.delete_entity("CANDIDATE", "0000003")
    jobs = QueueOutput()

    response = functions["restore_table"].get_user_function()(
        _post({"table": client.table_name, "backup": "latest", "filter": "PartitionKey eq 'CANDIDATE'"}), jobs
    )

    assert response.status_code == 200
    body = orjson.loads(response.get_body())
    assert set(body) >= {"backup", "target", "mode", "restored", "deleted", "skipped", "safety_backup", "seconds"}
    assert (body["backup"], body["restored"], body["mode"]) == (manifest.backup, 24, "replace")
    assert jobs.value is None
    assert table_state(client) == original


def test_as_of_and_dry_run_over_http(functions, storage, backed_up):
    client, _, manifest = backed_up
    response = functions["restore_table"].get_user_function()(
        _post({"table": client.table_name, "asOf": manifest.finished_at.isoformat(), "mode": "mirror", "dryRun": True}),
        QueueOutput(),
    )

    body = orjson.loads(response.get_body())
    assert response.status_code == 200
    assert (body["backup"], body["dry_run"], body["safety_backup"]) == (manifest.backup, True, None)


def test_a_large_restore_is_queued_and_the_worker_runs_it(functions, storage, env, monkeypatch, backed_up, unique_name):
    client, original, manifest = backed_up
    monkeypatch.setenv("RESTORE_HTTP_MAX_ENTITIES", "100")
    get_settings.cache_clear()
    target = unique_name("queued")
    jobs = QueueOutput()

    response = functions["restore_table"].get_user_function()(
        _post({"table": client.table_name, "backup": manifest.backup, "target": target}), jobs
    )

    assert response.status_code == 202
    accepted = orjson.loads(response.get_body())
    operation = accepted["operation"]
    assert accepted["statusUrl"] == f"/api/restore/{operation}" and accepted["entities"] == 120
    assert orjson.loads(_status(functions, operation).get_body())["status"] == "queued"
    assert target not in [t.name for t in storage.tables.list_tables()]  # nothing ran yet

    message = func.QueueMessage(id="m1", body=jobs.value.encode())
    invoke(functions["restore_worker"].get_user_function(), message)

    status = orjson.loads(_status(functions, operation).get_body())
    assert status["status"] == "succeeded"
    assert status["result"]["restored"] == 120 and status["result"]["target"] == target
    assert table_state(storage.tables.get_table_client(target)) == original


def test_an_incremental_is_sized_by_the_state_it_restores_not_its_changes(
    functions, storage, monkeypatch, backed_up, unique_name
):
    """An incremental's `entities` counts what changed since its parent (here 1); restoring it
    writes the whole state (120), so it is queued like the full backup would be."""
    client, _, _ = backed_up
    monkeypatch.setenv("INCREMENTAL_OVERLAP_MINUTES", "0")
    monkeypatch.setenv("RESTORE_HTTP_MAX_ENTITIES", "50")
    get_settings.cache_clear()
    storage = Storage.from_settings()
    client.upsert_entity({"PartitionKey": "CANDIDATE", "RowKey": "0000003", "name": "changed"})
    incremental = backup_table(storage, client.table_name, incremental=True)
    assert (incremental.kind, incremental.entities) == ("incremental", 1)
    target = unique_name("chainsized")
    jobs = QueueOutput()

    response = functions["restore_table"].get_user_function()(
        _post({"table": client.table_name, "backup": incremental.backup, "target": target}), jobs
    )

    assert response.status_code == 202, response.get_body()
    assert orjson.loads(response.get_body())["entities"] == 120
    assert jobs.value is not None
    assert target not in [t.name for t in storage.tables.list_tables()]  # nothing ran inline


def test_a_queued_restore_that_fails_is_recorded_as_failed(functions, storage, env, monkeypatch, backed_up):
    client, _, manifest = backed_up
    monkeypatch.setenv("RESTORE_HTTP_MAX_ENTITIES", "10")
    get_settings.cache_clear()
    jobs = QueueOutput()
    functions["restore_table"].get_user_function()(_post({"table": client.table_name, "backup": "latest"}), jobs)
    operation = orjson.loads(jobs.value)["operation"]
    storage.backups.delete_blob(manifest.data_blob)  # the backup is damaged after it was queued

    invoke(functions["restore_worker"].get_user_function(), func.QueueMessage(id="m2", body=jobs.value.encode()))

    status = orjson.loads(_status(functions, operation).get_body())
    assert status["status"] == "failed" and "is missing" in status["error"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{oops", 400, "not valid JSON"),
        ({"backup": "latest"}, 400, "table"),
        ({"table": "bad-name", "backup": "latest"}, 400, "invalid table name"),
        ({"table": "{table}", "backup": "{table}-20200101T000000.000000Z"}, 404, "not found"),
        ({"table": "{table}", "backup": "latest", "filter": "RowKey eq 'x' or"}, 400, "invalid filter at position 17"),
        ({"table": "{table}", "backup": "latest", "mode": "overwrite"}, 400, "mode"),
        ({"table": "{table}", "backup": "latest", "asOf": "yesterday"}, 400, "asOf"),
        ({"table": "{table}"}, 400, "exactly one"),
        ({"table": "{table}", "backup": "latest", "dryrun": True}, 400, "dryrun"),
        ({"table": "{table}", "backup": "latest", "filter": "x" * 70_000}, 400, "larger than"),
    ],
)
def test_bad_requests_get_a_json_error_and_write_nothing(functions, storage, backed_up, body, status, message):
    client, _, _ = backed_up
    client.delete_entity("CANDIDATE", "0000003")
    before = table_state(client)
    if isinstance(body, dict):
        body = json.loads(json.dumps(body).replace("{table}", client.table_name))
    jobs = QueueOutput()

    response = functions["restore_table"].get_user_function()(_post(body), jobs)

    assert response.status_code == status
    error = orjson.loads(response.get_body())["error"]
    assert message in error and "\n" not in error
    assert jobs.value is None
    assert table_state(client) == before


def test_status_of_unknown_or_invalid_operations(functions, storage, env):
    assert _status(functions, "0" * 32).status_code == 404
    invalid = _status(functions, "../../etc")
    assert invalid.status_code == 400 and "invalid operation id" in orjson.loads(invalid.get_body())["error"]


def test_cli_restore_json_and_exit_codes(storage, backed_up, unique_name):
    client, original, manifest = backed_up
    target = unique_name("clirestore")

    result = run_cli("restore", "--table", client.table_name, "--backup", "latest", "--target", target, "--json")

    assert result.returncode == 0, result.stderr
    body = orjson.loads(result.stdout)
    assert (body["backup"], body["target"], body["restored"]) == (manifest.backup, target, 120)
    assert table_state(storage.tables.get_table_client(target)) == original

    human = run_cli("restore", "-t", client.table_name, "--as-of", "2999-01-01T00:00:00Z", "--dry-run")
    assert human.returncode == 0 and "would create 0, update 0 and delete 0 entities; 120 unchanged" in human.stdout

    for args, code, message in [
        (["restore", "-t", client.table_name], 2, "give --backup ID, --backup latest, or --as-of"),
        (["restore", "-t", client.table_name, "-b", "latest", "--mode", "wipe"], 2, "'wipe' is not one of"),
        (["restore", "-t", client.table_name, "--as-of", "last tuesday"], 2, "not an ISO-8601 instant"),
        (["restore", "-t", client.table_name, "-b", "latest", "--filter", "age gt"], 1, "invalid filter at position"),
        (["restore", "-t", client.table_name, "-b", f"{client.table_name}-20000101T000000.000000Z"], 1, "not found"),
    ]:
        refused = run_cli(*args)
        assert refused.returncode == code, (args, refused.stderr)
        [line] = refused.stderr.strip().splitlines()
        assert line.startswith("error: ") and message in line
