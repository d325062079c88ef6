"""One truth about which backup is good (#21), against Azurite through the CLI (its own process) and
the registered functions: why each backup was taken, what `latest` means after a repair by mirror or
a roll-back, restores pinned to what they first resolved, safety backups' own retention, holds
against prune, verification of the backup `latest` uses, and what the status says."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta

import azure.functions as func
import orjson
import pytest
from azure.data.tables import UpdateMode
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from localdev.host import InvocationContext, QueueOutput, invoke
from localdev.sample import seed_table
from tablebackup.audit.entries import write_event
from tablebackup.audit.messages import AuditEvent, instant_text
from tablebackup.backup import retention
from tablebackup.backup.archiver import backup_table
from tablebackup.core.clients import Storage
from tablebackup.core.errors import StorageUnavailable
from tablebackup.core.settings import get_settings
from tablebackup.repository import attempts, catalog
from tablebackup.repository.backupformat import BackupReason, manifest_blob_name, new_backup_id
from tablebackup.status.page import render
from tablebackup.status.report import account_status
from tests import statuscases
from tests.faultproxy import blobs_through_proxy, tables_through_proxy
from tests.test_cli import run_cli
from tests.wire import table_state


def _json(*args: str, code: int = 0, env: dict | None = None) -> dict:
    result = run_cli(*args, "--json", env=env)
    assert result.returncode == code, (args, result.stdout, result.stderr)
    return orjson.loads(result.stdout)


def _damage(client) -> None:
    """Corrupt one entity, delete one, add one."""
    client.update_entity({"PartitionKey": "CANDIDATE", "RowKey": "0000001", "name": "CORRUPTED"}, UpdateMode.MERGE)
    client.delete_entity("CANDIDATE", "0000002")
    client.upsert_entity({"PartitionKey": "CANDIDATE", "RowKey": "zzz-bad", "name": "written by the bug"})


def _get(functions, name: str, route: str, params: dict) -> func.HttpResponse:
    request = func.HttpRequest("GET", f"http://localhost/api/{route}", params=params, body=b"")
    return functions[name].get_user_function()(request)


@pytest.fixture
def good(storage, unique_name):
    """A 60-entity table, its state, and the id of a backup of it taken with the CLI."""
    table = unique_name("good")
    seed_table(storage.tables, table, 60)
    client = storage.tables.get_table_client(table)
    [taken] = _json("backup", "--table", table)["backups"]
    return client, table_state(client), taken["backup"]


# 2, 4, 5: repair by mirror, loss, `latest`, prune


def test_repair_by_mirror_then_loss_brings_back_the_good_backup_and_prune_keeps_it(storage, good):
    client, original, backup = good
    table = client.table_name
    _damage(client)
    damaged = table_state(client)

    repaired = _json("restore", "--table", table, "--backup", "latest", "--mode", "mirror")

    assert repaired["backup"] == backup and "the newest regular backup" in repaired["chosen"]
    safety = repaired["safety_backup"]
    assert safety and repaired["undo"] == f"tablebackup restore --table {table} --backup {safety} --mode mirror"
    assert table_state(client) == original
    listing = _json("list-backups", "--table", table)
    entries = {entry["backup"]: entry for entry in listing["backups"]}
    assert entries[safety]["safety"] is True and entries[safety]["latest"] is False
    assert entries[safety]["reason"]["kind"] == "safety" and entries[safety]["reason"]["restoring"] == backup
    assert entries[backup]["latest"] is True and listing["latest"]["backup"] == backup

    storage.tables.delete_table(table)
    brought_back = _json("restore", "--table", table, "--backup", "latest")

    assert brought_back["backup"] == backup
    assert table_state(client) == original
    # The safety backup still holds the damage, for whoever needs it, by its id.
    assert catalog.read_manifest(storage.backups, safety).entities == len(damaged)

    pruned = _json("prune", "--table", table)

    assert pruned["deleted"] == [] and pruned["failed"] == []
    assert "newest complete" in pruned["reasons"][backup]
    assert pruned["reasons"][safety] == ["safety backup (kept 30 days)"]


def test_a_roll_back_is_what_latest_means_until_a_newer_backup(storage, functions, good):
    client, first_state, first = good
    table = client.table_name
    client.upsert_entity({"PartitionKey": "CANDIDATE", "RowKey": "0000003", "name": "a later change"})
    second = backup_table(storage, table, reason=BackupReason.on_demand(via="cli"))

    human = run_cli("restore", "--table", table, "--backup", first, "--mode", "mirror")

    assert human.returncode == 0, human.stderr
    undo_line = next(line for line in human.stdout.splitlines() if line.startswith("to undo this restore: "))
    assert undo_line.endswith("--mode mirror") and f"--table {table} --backup {table.lower()}-" in undo_line
    assert table_state(client) == first_state
    document = orjson.loads(_get(functions, "get_status", "status", {"table": table}).get_body())
    [row] = document["tables"]
    assert row["newest_backup"]["backup"] == first and row["newest_backup"]["latest"]["restored_in_place"]
    assert row["restored_in_place"]["backup"] == first and row["restored_in_place"]["whole"] is True
    assert any("restored in place from" in reason and "take a backup" in reason for reason in row["reasons"])
    page = render(account_status(storage, [table]))
    assert "Restored in place since the newest backup" in page and "take a backup" in page

    storage.tables.delete_table(table)
    assert _json("restore", "--table", table, "--backup", "latest")["backup"] == first
    assert table_state(client) == first_state
    as_of = datetime.now(UTC).isoformat()
    assert _json("restore", "--table", table, "--as-of", as_of, "--dry-run")["backup"] == first

    newer = _json("backup", "--table", table)["backups"][0]["backup"]

    assert _json("list-backups", "--table", table)["latest"]["backup"] == newer
    [row] = account_status(Storage.from_settings(), [table])["tables"]
    assert row["restored_in_place"] is None and row["newest_backup"]["backup"] == newer
    assert second.backup != newer


def test_a_rerun_of_an_interrupted_mirror_restore_does_not_take_its_own_safety_backup(
    storage, good, azurite_connection_string
):
    client, original, backup = good
    table = client.table_name
    _damage(client)
    from localdev.azurite import connection_string
    from tests.faultproxy import FaultProxy, _port

    table_port = _port(azurite_connection_string, "TableEndpoint")
    blob_port = _port(azurite_connection_string, "BlobEndpoint")
    with FaultProxy(table_port) as proxy:
        proxy.fail_matching, proxy.fail_matching_status = "$batch", 500  # the safety backup reads; every write fails
        through = {
            "AZURE_STORAGE_CONNECTION_STRING": connection_string(blob_port, blob_port, proxy.port),
            "STORAGE_RETRIES": "0",
        }
        interrupted = run_cli("restore", "-t", table, "-b", "latest", "--mode", "mirror", env=through)
    assert interrupted.returncode == 1, interrupted.stderr
    [safety] = [m.backup for m in catalog.list_backups(storage.backups, table) if m.safety]

    rerun = _json("restore", "--table", table, "--backup", "latest", "--mode", "mirror")

    assert rerun["backup"] == backup and rerun["safety_backup"] != safety
    assert table_state(client) == original


# 3: a queued restore restores what it resolved when asked


def test_a_queued_mirror_restore_whose_first_delivery_fails_restores_what_it_named(
    functions, audit_storage, monkeypatch, azurite_connection_string, unique_name
):
    storage = audit_storage
    table = unique_name("queued")
    seed_table(storage.tables, table, 120)
    client = storage.tables.get_table_client(table)
    original = table_state(client)
    backup = backup_table(storage, table).backup
    _damage(client)
    monkeypatch.setenv("RESTORE_HTTP_MAX_ENTITIES", "50")
    get_settings.cache_clear()
    jobs = QueueOutput()

    response = functions["restore_table"].get_user_function()(
        func.HttpRequest(
            "POST",
            "http://localhost/api/restore",
            body=orjson.dumps({"table": table, "backup": "latest", "mode": "mirror"}),
        ),
        jobs,
    )

    assert response.status_code == 202
    accepted = orjson.loads(response.get_body())
    operation = accepted["operation"]
    assert accepted["backup"] == backup
    # A regular backup (of the damage) completes before the worker runs.
    newer = backup_table(Storage.from_settings(), table).backup
    worker = functions["restore_worker"].get_user_function()
    with tables_through_proxy(monkeypatch, azurite_connection_string) as proxy:
        monkeypatch.setenv("STORAGE_RETRIES", "0")
        get_settings.cache_clear()
        # After the safety backup, the first batch lands and its answer is lost: a transient fault.
        proxy.after("drop", method="POST", path="$batch")
        with pytest.raises(StorageUnavailable):
            invoke(worker, QueueMessage(id="m1", body=jobs.value.encode(), dequeue_count=1))
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_connection_string)
    get_settings.cache_clear()

    def status() -> dict:
        request = func.HttpRequest(
            "GET", f"http://localhost/api/restore/{operation}", body=b"", route_params={"operation": operation}
        )
        got = functions["restore_status"].get_user_function()(request)
        return orjson.loads(got.get_body())

    first = status()
    assert first["status"] == "retrying" and first["backup"] == backup and first["safety_backup"]

    invoke(worker, QueueMessage(id="m1", body=jobs.value.encode(), dequeue_count=2))

    done = status()
    assert done["status"] == "succeeded", done
    assert done["result"]["backup"] == backup != newer and done["request"]["resolved"] == backup
    assert done["result"]["safety_backup"] == first["safety_backup"]  # the state before the operation began
    assert table_state(client) == original
    safeties = [m for m in catalog.list_backups(storage.backups, table) if m.safety]
    assert [m.backup for m in safeties] == [first["safety_backup"]]
    assert safeties[0].reason.operation == operation and safeties[0].reason.restoring == backup
    audit = storage.tables.get_table_client(storage.settings.audit_table)
    rows = sorted(audit.query_entities(f"operation eq 'RESTORE' and tableName eq '{table}'"), key=lambda e: e["RowKey"])
    entries = [orjson.loads(row["afterData"]) for row in rows]
    # Each delivery is one pair: the first ended failed (naming its safety backup), the second succeeded.
    assert [entry["phase"] for entry in entries] == ["started", "ended", "started", "ended"]
    assert entries[1]["outcome"].startswith("failed: ") and entries[3]["outcome"] == "succeeded"
    assert entries[1]["safety_backup"] == entries[3]["safety_backup"] == first["safety_backup"]
    assert {entry["backup"] for entry in entries} == {backup}


# 5, 8: retention of safety backups, holds


def test_safety_backups_keep_their_own_days_and_take_no_slot(storage, unique_name):
    table = unique_name("slots")
    seed_table(storage.tables, table, 5)
    day = datetime(2026, 3, 10, 2, tzinfo=UTC)

    def taken(at: datetime, reason: BackupReason) -> str:
        return backup_table(storage, table, backup_id=new_backup_id(table, at), started=at, reason=reason).backup

    safety_reason = BackupReason.before_restore(table, "x", "mirror", "tester")
    old_safety = taken(day - timedelta(days=40), safety_reason)
    regular = taken(day, BackupReason.scheduled())
    safety = taken(day + timedelta(hours=8), safety_reason)
    now = (day + timedelta(hours=12)).isoformat()

    pruned = _json("prune", "-t", table, "--now", now, "--keep-daily", "1", "--keep-weekly", "0", "--keep-monthly", "0")

    assert pruned["reasons"][regular] == ["daily", "newest complete"]
    assert pruned["reasons"][safety] == ["safety backup (kept 30 days)"]
    assert pruned["reasons"][old_safety] == ["expired safety backup"] and pruned["deleted"] == [old_safety]
    assert _json("prune", "-t", table, "--now", now, "--keep-safety-days", "0", "--dry-run")["delete"] == [safety]


def test_the_prune_timer_reads_safety_backup_keep_days(functions, storage, monkeypatch, good):
    client, _, backup = good
    _damage(client)
    safety = _json("restore", "-t", client.table_name, "-b", "latest", "--mode", "mirror")["safety_backup"]
    monkeypatch.setenv("SAFETY_BACKUP_KEEP_DAYS", "0")
    get_settings.cache_clear()

    functions["prune_daily"].get_user_function()(TimerRequest(past_due=False))

    assert catalog.backup_ids(storage.backups, client.table_name) == [backup]
    assert safety not in catalog.backup_ids(storage.backups, client.table_name)


def test_a_restore_in_progress_holds_its_backup_against_prune(
    storage, monkeypatch, azurite_connection_string, unique_name
):
    table = unique_name("held")
    seed_table(storage.tables, table, 30)
    old = backup_table(storage, table)
    state = table_state(storage.tables.get_table_client(table))
    backup_table(storage, table)
    target = unique_name("heldto")
    pruned = {}
    with tables_through_proxy(monkeypatch, azurite_connection_string) as proxy:

        def prune_meanwhile(method: str, path: str) -> None:
            if "$batch" in path and not pruned:  # the restore's first write: it is reading `old`
                pruned.update(retention.prune(storage, [table], keep_daily=0, keep_weekly=0, keep_monthly=0))

        proxy.before_forward = prune_meanwhile
        from tablebackup.restore.restorer import RestoreRequest, restore

        restore(Storage.from_settings(), RestoreRequest(table=table, backup=old.backup, target=target))

    assert pruned["deleted"] == [] and pruned["reasons"][old.backup] == ["held by a restore in progress"]
    assert table_state(storage.tables.get_table_client(target)) == state
    # Released when the restore ended: the next prune deletes it.
    assert retention.prune(storage, [table], keep_daily=0, keep_weekly=0, keep_monthly=0)["deleted"] == [old.backup]


def test_prune_reads_the_holds_again_before_each_deletion(storage, monkeypatch, azurite_connection_string, unique_name):
    table = unique_name("reread")
    seed_table(storage.tables, table, 3)
    oldest, middle, _newer, _newest = (backup_table(storage, table).backup for _ in range(4))
    held = []
    with blobs_through_proxy(monkeypatch, azurite_connection_string) as proxy:

        def restore_starts(method: str, path: str) -> None:
            if method == "DELETE" and not held:  # prune's first deletion: a restore of `oldest` begins
                held.append(attempts.hold_backup(storage.backups, oldest))

        proxy.before_forward = restore_starts
        pruned = retention.prune(Storage.from_settings(), [table], keep_daily=0, keep_weekly=0, keep_monthly=0)

    assert held and oldest not in pruned["deleted"] and middle in pruned["deleted"]
    assert pruned["reasons"][oldest] == ["held by a restore in progress"]


# 6: verification and the status


def test_a_failed_newest_backup_is_not_hidden_by_verifying_an_older_one(storage, unique_name):
    table = unique_name("hidden")
    older = statuscases._protected(storage, table)  # verified and drilled
    newest = backup_table(storage, table)
    blob = storage.backups.get_blob_client(newest.data_blob)
    blob.upload_blob(gzip.compress(b'{"PartitionKey":"x","RowKey":"y"}\n'), overwrite=True)

    assert run_cli("verify", "--table", table).returncode == 1
    assert _json("verify", "--table", table, "--backup", older.backup)["ok"] is True
    refused = run_cli("restore", "--table", table, "--backup", "latest", "--target", f"{table}x")

    assert refused.returncode == 1 and "is damaged" in refused.stderr
    [row] = _json("status", "--table", table, code=1)["tables"]
    assert row["verdict"] == "unprotected" and row["verification"]["backup"] == newest.backup
    assert "verification" in row["reason"] and "checksum" in row["reason"]


def test_verify_of_a_backup_that_does_not_exist_says_so_and_records_nothing(storage, unique_name):
    table = unique_name("nosuch")
    statuscases._protected(storage, table)
    verifications = storage.tables.get_table_client(storage.settings.verifications_table)
    rows = len(list(verifications.query_entities(f"PartitionKey eq '{table.lower()}'")))
    ghost = new_backup_id(table, datetime(2020, 1, 1, tzinfo=UTC))

    result = run_cli("verify", "--table", table, "--backup", ghost)

    assert result.returncode == 1 and result.stderr == f"error: backup {ghost!r} does not exist " + (
        f"(list-backups --table {table} lists the backups)\n"
    )
    assert len(list(verifications.query_entities(f"PartitionKey eq '{table.lower()}'"))) == rows
    [row] = _json("status", "--table", table)["tables"]
    assert row["verdict"] == "protected"


# 1: why each backup was taken, shown with its verification


def test_every_backup_records_why_it_was_taken(functions, storage, monkeypatch, unique_name):
    table = unique_name("why")
    seed_table(storage.tables, table, 8)
    monkeypatch.setenv("BACKUP_TABLES", table)
    get_settings.cache_clear()
    by_cli = _json("backup", "--table", table)["backups"][0]["backup"]
    posted = functions["backup_now"].get_user_function()(
        func.HttpRequest("POST", "http://localhost/api/backups", body=orjson.dumps({"tables": [table]})),
        InvocationContext("backup_now"),
    )
    by_http = orjson.loads(posted.get_body())["backups"][0]["backup"]
    jobs = QueueOutput()
    functions["backup_daily"].get_user_function()(TimerRequest(past_due=False), jobs)
    for message in jobs.value:
        functions["backup_worker"].get_user_function()(QueueMessage(id="w", body=message.encode(), dequeue_count=1))
    scheduled = catalog.backup_ids(storage.backups, table)[0]
    _json("verify", "--table", table)

    listing = orjson.loads(_get(functions, "list_backups", "backups", {"table": table}).get_body())

    reasons = {entry["backup"]: entry["reason"] for entry in listing["backups"]}
    assert reasons[by_cli]["kind"] == "on-demand" and reasons[by_cli]["via"] == "cli"
    assert reasons[by_http]["kind"] == "on-demand" and reasons[by_http]["via"] == "http"
    assert reasons[scheduled] == {"kind": "scheduled", "via": "timer", "text": "scheduled"}
    verified = {entry["backup"]: entry["verification"] for entry in listing["backups"]}
    assert verified[scheduled]["ok"] is True and verified[by_cli] is None
    human = run_cli("list-backups", "--table", table)
    assert "on-demand" in human.stdout and "scheduled" in human.stdout and "passed" in human.stdout
    [row] = account_status(storage, [table])["tables"]
    assert row["newest_backup"]["reason"] == "scheduled" and row["newest_backup"]["reason_text"] == "scheduled"


def test_a_manifest_without_a_reason_loads_as_a_regular_backup(storage, good):
    client, _, backup = good
    data = json.loads(storage.backups.download_blob(manifest_blob_name(backup)).readall())
    del data["reason"]
    storage.backups.upload_blob(manifest_blob_name(backup), json.dumps(data), overwrite=True)

    [entry] = _json("list-backups", "--table", client.table_name)["backups"]

    assert entry["reason"]["kind"] == "unrecorded" and entry["safety"] is False and entry["latest"] is True
    assert catalog.latest_backup(storage.backups, client.table_name).backup == backup


# 2: every implicit choice passes over safety backups


def test_drills_incrementals_and_undelete_never_take_a_safety_backup(storage, good):
    client, original, backup = good
    table = client.table_name
    _damage(client)
    _json("restore", "--table", table, "--backup", "latest", "--mode", "mirror")

    assert _json("drill", "--table", table)["backup"] == backup
    client.upsert_entity({"PartitionKey": "CANDIDATE", "RowKey": "0000004", "name": "changed"})
    assert backup_table(storage, table, incremental=True).parent == backup

    # An entity whose only record is in backups: its good state in `backup`, a bad one in a safety
    # backup taken after it was corrupted.
    client.update_entity({"PartitionKey": "CANDIDATE", "RowKey": "0000005", "name": "BAD"}, UpdateMode.MERGE)
    backup_table(storage, table, reason=BackupReason.before_restore(table, backup, "replace"))
    client.delete_entity("CANDIDATE", "0000005")

    brought = _json("undelete", "--table", table, "--partition-key", "CANDIDATE", "--row-key", "0000005")

    assert brought["source"] == "backup" and brought["backup"] != backup  # the incremental holds it, good
    entity = table_state(client)[("CANDIDATE", "0000005")]
    assert entity == original[("CANDIDATE", "0000005")]


# 7: point-in-time reach


def test_point_in_time_reach_counts_only_the_applications_changes(functions, audit_storage, unique_name):
    storage = audit_storage
    table = unique_name("reach")
    seed_table(storage.tables, table, 10)
    backup_table(storage, table)
    changed = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    event = AuditEvent(
        table=table,
        operation="UPDATE",
        partition_key="CANDIDATE",
        row_key="0000001",
        user_id="app",
        timestamp=instant_text(changed + timedelta(microseconds=250_000)),
        before_data="null",
        after_data='{"name":"x"}',
    )
    write_event(storage, event, message_id="reach-1")
    # The product's own entries after it: a restore in place (no safety backup: mode missing).
    _json("restore", "--table", table, "--backup", "latest", "--mode", "missing")

    document = orjson.loads(_get(functions, "get_status", "status", {"table": table}).get_body())

    assert document["tables"][0]["audit"]["newest_event"] == changed.isoformat().replace("+00:00", "Z")


# 23: a dry run says what would change


@pytest.mark.parametrize("window", [1000, 7])  # one window, and many (keys cut across partitions)
def test_a_mirror_dry_run_reports_what_would_change(storage, good, monkeypatch, window):
    monkeypatch.setattr("tablebackup.restore.drydiff.WINDOW", window)
    client, _, backup = good
    table = client.table_name
    _damage(client)
    before = table_state(client)

    from tablebackup.restore.restorer import RestoreRequest, restore

    mirror = restore(storage, RestoreRequest(table=table, backup="latest", mode="mirror", dry_run=True))
    replace = restore(storage, RestoreRequest(table=table, backup="latest", dry_run=True))
    scoped = restore(
        storage,
        RestoreRequest(table=table, backup="latest", mode="mirror", dry_run=True, filter="RowKey le '0000001'"),
    )

    assert mirror.changes == {"created": 1, "updated": 1, "unchanged": 58, "deleted": 1}
    assert (mirror.restored, mirror.deleted, mirror.safety_backup) == (60, 1, None)
    assert replace.changes == {"created": 1, "updated": 1, "unchanged": 58, "deleted": 0}
    assert scoped.changes == {"created": 0, "updated": 1, "unchanged": 1, "deleted": 0}
    assert table_state(client) == before and catalog.backup_ids(storage.backups, table) == [backup]


def test_the_cli_dry_run_says_what_would_change(good):
    client, _, backup = good
    _damage(client)

    result = run_cli("restore", "-t", client.table_name, "-b", "latest", "--mode", "mirror", "--dry-run")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        f"dry run: restoring {backup} into {client.table_name} (mode mirror) would create 1, update 1 and "
        "delete 1 entities; 58 unchanged"
    )
