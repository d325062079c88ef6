"""Restore and import into another storage account (issue #22), against two Azurite instances: the
data account A (the app's own, from conftest) and a target account B named by a setting that holds
its connection string. The data lands in B exactly, erased people stay out, A is untouched, the
safety backup of an existing B table is taken from B and its undo works there, the audit entries and
the app's records stay in A, and `latest` of the source table does not change. Every refusal is one
line (CLI exit 2, HTTP 400) that never shows a connection string, and writes nothing."""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess

import azure.functions as func
import orjson
import pytest
from azure.data.tables import TableServiceClient

from localdev.host import QueueOutput
from localdev.sample import seed_table
from tablebackup.backup.archiver import backup_table
from tablebackup.core.accounts import parse_target_account
from tablebackup.core.errors import InvalidInput
from tablebackup.core.settings import get_settings
from tablebackup.repository import catalog
from tablebackup.repository.erasures import erase
from tablebackup.storage.targets import in_target_account
from tests.test_empty_options import run_cli_here as run_here
from tests.wire import table_state

SETTING = "DR_STORAGE_CONNECTION_STRING"
KEY = ("O'Brien & Sons", "0000021")  # one of the 40 sample entities


@pytest.fixture
def account_b(audit_storage, other_account, monkeypatch) -> TableServiceClient:
    monkeypatch.setenv(SETTING, other_account)
    return TableServiceClient.from_connection_string(other_account)


@pytest.fixture
def erased_in_a(audit_storage, unique_name):
    """A table of A with a backup that still holds an entity erased after it."""
    table = unique_name("orders")
    seed_table(audit_storage.tables, table, 40)
    client = audit_storage.tables.get_table_client(table)
    backed_up = table_state(client)
    assert KEY in backed_up
    manifest = backup_table(audit_storage, table)
    erase(audit_storage, table, *KEY, reason="request 22", actor="dpo")
    return table, backed_up, manifest, table_state(client)


def _post_restore(functions, body: dict, jobs: QueueOutput | None = None) -> func.HttpResponse:
    request = func.HttpRequest("POST", "http://localhost/api/restore", body=json.dumps(body).encode())
    return functions["restore_table"].get_user_function()(request, jobs or QueueOutput())


def _post_import(functions, table: str, body: bytes, **params) -> func.HttpResponse:
    request = func.HttpRequest(
        "POST", f"http://localhost/api/import/{table}", body=body, params=params, route_params={"table": table}
    )
    return functions["import_table"].get_user_function()(request)


def _audit(storage) -> list[dict]:
    """A's audit entries of the app's own operations: (operation, phase, afterData)."""
    client = storage.tables.get_table_client(storage.settings.audit_table)
    with contextlib.suppress(Exception):
        return [
            {"operation": e["operation"], **orjson.loads(e["afterData"])}
            for e in client.list_entities()
            if e["operation"] in ("RESTORE", "IMPORT")
        ]
    return []


def _tables(service: TableServiceClient) -> set[str]:
    return {t.name for t in service.list_tables()}


def _one_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_cli_restore_into_another_account(audit_storage, account_b, other_account, erased_in_a):
    table, backed_up, manifest, in_a = erased_in_a
    # B already holds the table, under another spelling: the restore finds it and backs it up first.
    existing = table.upper()
    seed_table(account_b, existing, 5)
    account_b.get_table_client(existing).upsert_entity({"PartitionKey": "b-only", "RowKey": "1", "kept": "B"})
    in_b_before = table_state(account_b.get_table_client(existing))
    latest_before = catalog.newest_state(audit_storage.backups, table)

    result = run_here("restore", "-t", table, "-b", "latest", "--mode", "mirror", "--target-account", SETTING, "--json")

    assert result.returncode == 0, result.stderr
    answer = orjson.loads(result.stdout)
    assert other_account not in result.stdout + result.stderr
    assert answer["target"] == existing and answer["target_account"] == SETTING
    expected = {k: v for k, v in backed_up.items() if k != KEY}
    assert answer["erased"] == 1 and answer["restored"] == len(expected)
    assert answer["deleted"] == len(set(in_b_before) - set(expected)) > 0
    # B holds the backup exactly, without the erased person; A is untouched, and has no B table.
    assert table_state(account_b.get_table_client(existing)) == expected
    assert table_state(audit_storage.tables.get_table_client(table)) == in_a
    assert existing not in _tables(audit_storage.tables)
    # Not a restore of the source table: A's `latest` is still its backup, no restore recorded.
    latest = catalog.newest_state(audit_storage.backups, table)
    assert latest.manifest.backup == latest_before.manifest.backup == manifest.backup and latest.restore is None
    # The audit pair is in A (naming B), none in B.
    entries = [e for e in _audit(audit_storage) if e["operation"] == "RESTORE"]
    assert [e["phase"] for e in entries] == ["ended", "started"] or [e["phase"] for e in entries] == [
        "started",
        "ended",
    ]
    assert all(e["target_account"] == SETTING and e["target"] == existing for e in entries)
    assert audit_storage.settings.audit_table not in _tables(account_b)

    # The safety backup is B's table as it was, and its undo command puts B back.
    safety = catalog.read_manifest(audit_storage.backups, answer["safety_backup"])
    assert safety.safety and safety.entities == len(in_b_before)
    assert f"--target-account {SETTING}" in answer["undo"]
    undo = run_here(*shlex.split(answer["undo"])[1:])
    assert undo.returncode == 0, undo.stderr
    assert table_state(account_b.get_table_client(existing)) == in_b_before
    assert table_state(audit_storage.tables.get_table_client(table)) == in_a


def test_http_restore_into_another_account_queued(
    functions, audit_storage, account_b, other_account, erased_in_a, monkeypatch
):
    table, backed_up, _, in_a = erased_in_a
    monkeypatch.setenv("RESTORE_HTTP_MAX_ENTITIES", "0")  # queued: the request survives the message's JSON
    get_settings.cache_clear()
    jobs = QueueOutput()

    accepted = _post_restore(functions, {"table": table, "backup": "latest", "targetAccount": SETTING}, jobs)

    assert accepted.status_code == 202, accepted.get_body()
    assert other_account not in jobs.value
    assert orjson.loads(jobs.value)["request"]["target_account"] == SETTING
    worker = functions["restore_worker"].get_user_function()
    worker(func.QueueMessage(id="m1", body=jobs.value.encode()), ranges := QueueOutput())
    assert not ranges.value  # 40 entities: one stream
    operation = orjson.loads(accepted.get_body())["operation"]
    status = functions["restore_status"].get_user_function()(
        func.HttpRequest("GET", "http://localhost/api/restore/x", body=b"", route_params={"operation": operation})
    )
    done = orjson.loads(status.get_body())
    assert done["status"] == "succeeded", done
    assert done["result"]["target_account"] == SETTING and done["result"]["erased"] == 1
    assert table_state(account_b.get_table_client(table)) == {k: v for k, v in backed_up.items() if k != KEY}
    assert table_state(audit_storage.tables.get_table_client(table)) == in_a
    # The operation's record and the audit entries are the app's, in A.
    operations_table = audit_storage.settings.restore_operations_table
    assert operations_table not in _tables(account_b) and operations_table in _tables(audit_storage.tables)
    assert {e["phase"] for e in _audit(audit_storage)} == {"started", "ended"}
    assert catalog.newest_state(audit_storage.backups, table).restore is None


def test_import_into_another_account(functions, audit_storage, account_b, other_account, unique_name, tmp_path):
    table = unique_name("imported")
    audit_storage.tables.create_table(table).upsert_entity({"PartitionKey": "p", "RowKey": "erased"})
    erase(audit_storage, table, "p", "erased", reason="request 23", actor="dpo")
    lines = b'{"PartitionKey":"p","RowKey":"1","v":1}\n{"PartitionKey":"p","RowKey":"erased","v":2}\n'
    data = tmp_path / "in.ndjson"
    data.write_bytes(lines)

    cli = run_here("import", "-t", table, "-i", str(data), "--target-account", SETTING, "--json")
    http = _post_import(functions, table, lines, mode="merge", targetAccount=SETTING)

    assert cli.returncode == 0, cli.stderr
    assert http.status_code == 200, http.get_body()
    assert orjson.loads(cli.stdout)["target_account"] == orjson.loads(http.get_body())["target_account"] == SETTING
    assert other_account not in cli.stdout + cli.stderr + http.get_body().decode()
    assert [(e["RowKey"], e["v"]) for e in account_b.get_table_client(table).list_entities()] == [("1", 1)]
    assert list(audit_storage.tables.get_table_client(table).list_entities()) == []
    imports = [e for e in _audit(audit_storage) if e["operation"] == "IMPORT"]
    assert len(imports) == 4 and all(e["target_account"] == SETTING for e in imports)


def test_refusals_are_one_line_and_write_nothing(
    functions, audit_storage, account_b, other_account, erased_in_a, monkeypatch, tmp_path
):
    table = erased_in_a[0]
    monkeypatch.setenv("DR_BLANK_CONNECTION_STRING", "  ")
    blob_only = "BlobEndpoint=https://drstore.blob.core.windows.net;SharedAccessSignature=sv=2024&sig=SECRETSIG"
    monkeypatch.setenv("DR_BLOBS_CONNECTION_STRING", blob_only)
    monkeypatch.setenv("DR_STORAGE", other_account)  # fine for the CLI; over HTTP a name must end in _CONNECTION_STRING
    monkeypatch.delenv("DR_UNSET_CONNECTION_STRING", raising=False)
    data = tmp_path / "in.ndjson"
    data.write_bytes(b'{"PartitionKey":"p","RowKey":"1"}\n')
    sas = "https://drstore.table.core.windows.net/?sv=2024&sig=SECRETSIG"
    refused = {
        "DR_UNSET_CONNECTION_STRING": "setting DR_UNSET_CONNECTION_STRING is not set",
        "DR_BLANK_CONNECTION_STRING": "setting DR_BLANK_CONNECTION_STRING is blank",
        "DR_BLOBS_CONNECTION_STRING": "DR_BLOBS_CONNECTION_STRING: the connection string is malformed or has no Table",
        "": "the target account is empty",
        " ": "the target account is empty",
        "DR STORAGE": "neither a setting name nor an endpoint",
        other_account: "neither a setting name nor an endpoint",  # a pasted connection string: not echoed
        "http://drstore.table.core.windows.net": "is not https",
        "https://drstore.blob.core.windows.net": "is not an account's table endpoint",
        "https://drstore.table.core.windows.net/orders": "has a path",
        sas: "holds credentials, a query or a fragment",
        "http://127.0.0.1:10002/a/b": "the path the account name alone",
        "BACKUP_BLOB_CONNECTION_STRING": "is not a target account",
    }
    before_b, before_a = _tables(account_b), _tables(audit_storage.tables)

    for given, message in refused.items():
        for command in (["restore", "-t", table, "-b", "latest"], ["import", "-t", table, "-i", str(data)]):
            cli = run_here(*command, "--target-account", given)
            assert cli.returncode == 2 and message in _one_line(cli), (given, cli.stderr)
            assert "SECRETSIG" not in cli.stderr and "AccountKey" not in cli.stderr
        restore = _post_restore(functions, {"table": table, "backup": "latest", "targetAccount": given})
        imported = _post_import(functions, table, b'{"PartitionKey":"p","RowKey":"1"}\n', targetAccount=given)
        for response in (restore, imported):
            body = response.get_body().decode()
            assert response.status_code == 400 and (message in body or "is empty" in body), (given, body)
            assert "SECRETSIG" not in body and "AccountKey" not in body

    http_only = _post_restore(functions, {"table": table, "backup": "latest", "targetAccount": "DR_STORAGE"})
    assert http_only.status_code == 400 and "must end in _CONNECTION_STRING" in http_only.get_body().decode()
    replay = run_here("restore", "-t", table, "--as-of", "2026-11-25T00:00:00Z", "--replay-audit", "--mode", "mirror",
                      "--target-account", SETTING)  # fmt: skip
    assert replay.returncode == 2 and "point-in-time restore" in _one_line(replay)
    replay_http = _post_restore(
        functions, {"table": table, "asOf": "2026-11-25T00:00:00Z", "replayAudit": True, "targetAccount": SETTING}
    )
    assert replay_http.status_code == 400 and "point-in-time restore" in replay_http.get_body().decode()
    # The app's own tables are refused in B too (exit 1 and HTTP 400, as in the data account).
    own = audit_storage.settings.audit_table
    app_table = run_here("restore", "-t", table, "-b", "latest", "--target", own, "--target-account", SETTING)
    assert app_table.returncode == 1 and "is the app's own AUDIT_TABLE" in _one_line(app_table)
    app_table_http = _post_restore(
        functions, {"table": table, "backup": "latest", "target": own, "targetAccount": SETTING}
    )
    assert app_table_http.status_code == 400 and "AUDIT_TABLE" in app_table_http.get_body().decode()

    assert _tables(account_b) == before_b and _tables(audit_storage.tables) == before_a
    assert _audit(audit_storage) == []


def test_an_endpoint_is_reached_with_the_identity_and_the_data_account_named_again_is_itself(storage, monkeypatch):
    data, account = in_target_account(storage, "https://drstore.table.core.windows.net/")
    assert account.endpoint == "https://drstore.table.core.windows.net" and account.setting is None
    assert data.tables.url.startswith("https://drstore.table.core.windows.net")
    assert type(data.tables.credential).__name__ == "DefaultAzureCredential"
    assert data.backups is storage.backups and data.source_tables is data.tables
    # Azurite on loopback: http, path-style, the path the account name alone.
    assert parse_target_account("http://127.0.0.1:10002/devstoreaccount1/").endpoint == (
        "http://127.0.0.1:10002/devstoreaccount1"
    )
    # The data account's own setting is the data account: an ordinary restore, recorded as one.
    assert in_target_account(storage, "AZURE_STORAGE_CONNECTION_STRING") == (storage, None)
    with pytest.raises(InvalidInput, match="must end in _CONNECTION_STRING"):
        parse_target_account("PATH", over_http=True)
