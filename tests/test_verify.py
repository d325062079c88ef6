"""Verification and DR drills against real Azurite: a good backup passes, and each kind of damage
is caught by name."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import re
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import azure.functions as func
import orjson
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.functions.timer import TimerRequest

from localdev.sample import seed_table
from tablebackup.backup.archiver import backup_table
from tablebackup.core.settings import get_settings
from tablebackup.repository.backupformat import DataBlobWriter, Manifest, manifest_blob_name, new_backup_id
from tablebackup.verify.checker import verify_and_record, verify_backup
from tablebackup.verify.drills import run_drill
from tests.test_cli import run_cli
from tests.wire import table_state

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def backed_up(storage, unique_name):
    table = unique_name("ver")
    seed_table(storage.tables, table, 150)
    return table, backup_table(storage, table)


def _scratch_tables(storage) -> list[str]:
    return [t.name for t in storage.tables.list_tables() if re.fullmatch(r"drill[0-9a-f]{20}", t.name)]


def _checks(outcome) -> dict[str, bool]:
    return {check.name: check.ok for check in outcome.checks}


def _failed(outcome) -> set[str]:
    return {name for name, ok in _checks(outcome).items() if not ok}


def _rewrite_data(storage, manifest: Manifest, transform) -> None:
    blob = storage.backups.get_blob_client(manifest.data_blob)
    blob.upload_blob(transform(blob.download_blob().readall()), overwrite=True)


def _rewrite_manifest(storage, manifest: Manifest, **changes) -> None:
    data = {**json.loads(manifest.model_dump_json()), **changes}
    storage.backups.upload_blob(manifest_blob_name(manifest.backup), json.dumps(data), overwrite=True)


def test_a_good_backup_passes_every_check_and_is_recorded(storage, backed_up):
    table, manifest = backed_up

    [outcome] = verify_and_record(storage, table)

    assert outcome.ok and outcome.backup == manifest.backup
    assert set(_checks(outcome)) == {
        "manifest",
        "checksum",
        "entities decode",
        "entity count",
        "key order",
        "live table count",
        "recovery point",
    }
    rows = list(
        storage.tables.get_table_client(storage.settings.verifications_table).query_entities(
            f"PartitionKey eq '{table}'"
        )
    )
    assert len(rows) == 1 and rows[0]["ok"] is True and rows[0]["backup"] == manifest.backup


def test_a_flipped_byte_is_caught(storage, backed_up):
    table, manifest = backed_up

    def flip(data: bytes) -> bytes:
        middle = len(data) // 2
        return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]

    _rewrite_data(storage, manifest, flip)

    assert "checksum" in _failed(verify_backup(storage, table))


def test_a_truncated_data_blob_is_caught(storage, backed_up):
    table, manifest = backed_up
    _rewrite_data(storage, manifest, lambda data: data[: len(data) // 2])

    outcome = verify_backup(storage, table)

    assert {"checksum", "entities decode", "entity count"} <= _failed(outcome)
    assert "not a complete gzip stream" in next(c.detail for c in outcome.checks if c.name == "entities decode")


def _unfinished_attempt(storage, table: str, started: datetime) -> str:
    """A backup attempt that wrote its data blob but no manifest (still running, or crashed)."""
    backup_id = new_backup_id(table, started)
    with contextlib.suppress(ResourceExistsError):
        storage.backups.create_container()
    writer = DataBlobWriter(storage.backups, backup_id)
    writer.write_lines([b'{"PartitionKey":"a","RowKey":"b"}\n'])
    writer.finish()
    return backup_id


def _check(outcome, name: str):
    return next(c for c in outcome.checks if c.name == name)


def test_verification_judges_the_newest_complete_backup_and_reports_one_in_progress(storage, backed_up):
    table, manifest = backed_up
    now = manifest.finished_at + timedelta(hours=1)
    running = _unfinished_attempt(storage, table, now - timedelta(minutes=10))

    outcome = verify_backup(storage, table, now=now)

    assert outcome.ok, outcome.as_json()
    assert outcome.backup == manifest.backup and outcome.warnings == []
    in_progress = _check(outcome, "in progress")
    assert in_progress.ok and not in_progress.warning
    assert f"{running} started 0.2 hours ago and has no manifest yet" in in_progress.detail
    assert "1.0 hours old" in _check(outcome, "recovery point").detail

    # Asked for by name, the attempt cannot be verified, and says why.
    named = verify_backup(storage, table, running, now=now)
    assert _failed(named) == {"manifest"} and "it is in progress" in _check(named, "manifest").detail


def test_debris_older_than_a_day_is_a_warning_that_names_it(storage, env, monkeypatch, backed_up):
    table, manifest = backed_up
    monkeypatch.setenv("BACKUP_MAX_AGE_HOURS", "72")
    get_settings.cache_clear()
    from tablebackup.core.clients import Storage

    now = manifest.finished_at + timedelta(hours=30)
    newer = _unfinished_attempt(storage, table, manifest.finished_at + timedelta(hours=1))
    older = _unfinished_attempt(storage, table, manifest.started_at - timedelta(days=3))

    outcomes = verify_and_record(Storage.from_settings(), every_table=True, now=now)

    [outcome] = [outcome for outcome in outcomes if outcome.table == table]

    assert outcome.ok and outcome.backup == manifest.backup, outcome.as_json()
    debris = _check(outcome, "debris")
    assert debris.ok and debris.warning
    assert debris.detail.startswith("2 attempt(s) without a manifest: ")
    assert f"{newer} started 29.0 hours ago and never finished" in debris.detail and older in debris.detail
    assert outcome.as_json()["warnings"] == [f"debris: {debris.detail}"]
    assert "in progress" not in _checks(outcome)
    assert "passed with warnings" in outcome.summary()


def test_a_table_whose_only_backup_is_in_progress_has_no_recovery_point(storage, unique_name):
    table = unique_name("first")
    now = datetime.now(UTC)
    _unfinished_attempt(storage, table, now - timedelta(minutes=5))

    outcome = verify_backup(storage, table, now=now)

    assert _failed(outcome) == {"manifest", "recovery point"}
    assert "has no complete backup yet (one is in progress)" in _check(outcome, "manifest").detail
    assert _check(outcome, "in progress").ok


def test_the_daily_timer_passes_while_a_backup_is_in_progress_and_warns_of_debris(
    functions, storage, env, monkeypatch, backed_up, caplog
):
    table, manifest = backed_up
    monkeypatch.setenv("BACKUP_TABLES", table)
    get_settings.cache_clear()
    # Dates derived from the clock the timer reads: one attempt just started, one crashed 3 days ago.
    running = _unfinished_attempt(storage, table, datetime.now(UTC))
    debris = _unfinished_attempt(storage, table, manifest.started_at - timedelta(days=3))

    with caplog.at_level(logging.WARNING, logger="tablebackup.verify.checker"):
        functions["verify_daily"].get_user_function()(TimerRequest(past_due=False))

    [row] = storage.tables.get_table_client(storage.settings.verifications_table).query_entities(
        f"PartitionKey eq '{table}'"
    )
    assert row["ok"] is True and row["backup"] == manifest.backup
    checks = {check["name"]: check for check in orjson.loads(row["checks"])}
    assert running in checks["in progress"]["detail"] and checks["debris"]["warning"] is True
    assert any(debris in record.getMessage() for record in caplog.records if record.levelno == logging.WARNING)


def test_a_manifest_with_a_wrong_count_is_caught(storage, backed_up):
    table, manifest = backed_up
    _rewrite_manifest(storage, manifest, entities=manifest.entities + 1)

    outcome = verify_backup(storage, table)

    assert _failed(outcome) == {"entity count"}


def test_an_undecodable_line_is_caught_by_line_number(storage, backed_up):
    table, manifest = backed_up
    lines = []

    def corrupt(data: bytes) -> bytes:
        lines.extend(gzip.decompress(data).splitlines(keepends=True))
        lines[41] = b'{"PartitionKey":"p","RowKey":"r","n@odata.type":"Edm.Int64","n":"12x"}\n'
        return gzip.compress(b"".join(lines))

    _rewrite_data(storage, manifest, corrupt)
    data = storage.backups.download_blob(manifest.data_blob).readall()
    _rewrite_manifest(storage, manifest, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))

    outcome = verify_backup(storage, table)

    assert _failed(outcome) == {"entities decode"}
    assert "line 42" in next(c.detail for c in outcome.checks if c.name == "entities decode")


def test_missing_required_fields_are_caught(storage, env, monkeypatch, unique_name):
    table = unique_name("req")
    client = storage.tables.create_table(table)
    client.upsert_entity({"PartitionKey": "p", "RowKey": "1", "email": "a@example.com", "name": "A"})
    client.upsert_entity({"PartitionKey": "p", "RowKey": "2", "email": "", "name": "B"})
    client.upsert_entity({"PartitionKey": "p", "RowKey": "3", "name": "C"})
    backup_table(storage, table)
    monkeypatch.setenv("REQUIRED_FIELDS", f"{table}:email,name")
    get_settings.cache_clear()
    from tablebackup.core.clients import Storage

    outcome = verify_backup(Storage.from_settings(), table)

    assert _failed(outcome) == {"required fields"}
    detail = next(c.detail for c in outcome.checks if c.name == "required fields")
    assert "2 missing or empty" in detail and "'2'" in detail and "'3'" in detail


def test_a_required_field_missing_everywhere_is_counted_with_a_few_examples(storage, backed_up, monkeypatch):
    """A typo in REQUIRED_FIELDS flags every entity: all are counted, only the first few are kept."""
    from tablebackup.repository import integrity

    table, manifest = backed_up
    monkeypatch.setenv("REQUIRED_FIELDS", f"{table}:emial")
    get_settings.cache_clear()
    from tablebackup.core.clients import Storage

    outcome = verify_backup(Storage.from_settings(), table)

    assert _failed(outcome) == {"required fields"}
    detail = next(c.detail for c in outcome.checks if c.name == "required fields")
    assert detail.startswith("150 missing or empty: ") and detail.count(": emial") == integrity.MAX_REPORTED
    assert f"{manifest.data_blob} line 1 " in detail
    report = integrity.inspect_chain(storage.backups, manifest, ["emial", "name"])
    assert report.problems() is None and report.blobs == 1
    assert report.missing_fields.total == 150 and len(report.missing_fields.named) == integrity.MAX_REPORTED


def test_a_backup_older_than_the_rpo_fails(storage, backed_up):
    table, manifest = backed_up
    two_days_ago = (manifest.finished_at - timedelta(hours=48)).isoformat()
    _rewrite_manifest(storage, manifest, started_at=two_days_ago, finished_at=two_days_ago)

    outcome = verify_backup(storage, table)

    assert _failed(outcome) == {"recovery point"}
    assert "48.0 hours old (limit 26)" in next(c.detail for c in outcome.checks if c.name == "recovery point")


def test_no_backup_at_all_fails(storage, unique_name):
    outcome = verify_backup(storage, unique_name("never"))

    assert not outcome.ok and {"manifest", "recovery point"} <= _failed(outcome)


class _Webhook:
    """A real HTTP endpoint on loopback that records what is posted to it."""

    def __init__(self):
        self.posts: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                hook.posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def test_daily_timer_fails_the_run_and_notifies_when_a_backup_is_bad(
    functions, storage, env, monkeypatch, backed_up, unique_name
):
    table, _manifest = backed_up
    never = unique_name("never")
    hook = _Webhook()
    monkeypatch.setenv("BACKUP_TABLES", f"{table},{never}")
    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", hook.url)
    get_settings.cache_clear()

    with pytest.raises(RuntimeError, match=never):
        functions["verify_daily"].get_user_function()(TimerRequest(past_due=False))

    [post] = hook.posts
    assert "FAILED" in post["text"] and never in post["text"] and post["ok"] is False
    assert {r["table"]: r["ok"] for r in post["results"]}[table] is True
    hook.server.shutdown()


def test_an_unreachable_webhook_never_hides_the_failure(storage, env, monkeypatch, unique_name):
    from localdev.azurite import free_port

    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", f"http://127.0.0.1:{free_port()}/hook")
    get_settings.cache_clear()
    from tablebackup.core.clients import Storage

    [outcome] = verify_and_record(Storage.from_settings(), unique_name("nobackup"))

    assert not outcome.ok


def test_the_verification_and_drill_functions_are_registered(functions):
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    assert functions["verify_daily"].get_trigger().schedule == "%VERIFY_SCHEDULE%"
    assert sample["VERIFY_SCHEDULE"] == "0 30 2 * * *"  # after the 02:00 backup
    assert functions["dr_drill"].get_trigger().schedule == "%DRILL_SCHEDULE%"
    assert sample["DRILL_SCHEDULE"] == "0 0 4 1 * *"  # monthly
    drills = functions["list_drills"].get_trigger()
    assert (drills.route, drills.auth_level) == ("drills", func.AuthLevel.FUNCTION)


def test_an_entity_drill_and_a_full_drill_pass_and_leave_no_scratch_table(functions, storage, backed_up):
    table, manifest = backed_up
    production = table_state(storage.tables.get_table_client(table))

    entity = run_drill(storage, table)
    full = run_drill(storage, table, full=True)

    for drill, restored in ((entity, "1 entities"), (full, "150 entities")):
        assert drill.ok and drill.backup == manifest.backup
        assert [c.name for c in drill.checks] == [
            "restoration successful",
            "integrity verified",
            "recovery time meets RTO",
            "recovery point meets RPO",
        ]
        assert restored in drill.checks[0].detail
    assert not _scratch_tables(storage)
    assert table_state(storage.tables.get_table_client(table)) == production

    response = functions["list_drills"].get_user_function()(
        func.HttpRequest("GET", "http://localhost/api/drills", params={"table": table}, body=b"")
    )
    history = orjson.loads(response.get_body())["drills"]
    assert [d["kind"] for d in history] == ["full", "entity"] and all(d["ok"] for d in history)


def test_a_drill_on_a_damaged_backup_fails_and_cleans_up(storage, backed_up):
    table, manifest = backed_up
    _rewrite_data(storage, manifest, lambda data: data[:-10])

    drill = run_drill(storage, table, full=True)

    assert not drill.ok
    assert not drill.checks[0].ok and "damaged" in drill.checks[0].detail
    assert not _scratch_tables(storage)


def test_drill_history_refuses_bad_queries(functions, env):
    response = functions["list_drills"].get_user_function()(
        func.HttpRequest("GET", "http://localhost/api/drills", params={"limit": "lots"}, body=b"")
    )
    assert response.status_code == 400 and "limit" in orjson.loads(response.get_body())["error"]


def test_cli_verify_and_drill(storage, backed_up, unique_name):
    table, _manifest = backed_up

    good = run_cli("verify", "--table", table, "--json")
    assert good.returncode == 0, good.stderr
    assert orjson.loads(good.stdout)["ok"] is True

    missing = unique_name("none")
    bad = run_cli("verify", "--table", missing, "--json")
    assert bad.returncode == 1 and orjson.loads(bad.stdout)["ok"] is False
    assert bad.stderr.strip().startswith("error: verification of") and len(bad.stderr.strip().splitlines()) == 1

    drill = run_cli("drill", "--table", table, "--full", "--json")
    assert drill.returncode == 0 and orjson.loads(drill.stdout)["kind"] == "full"

    usage = run_cli("verify")
    assert usage.returncode == 2 and "give --table T or --all" in usage.stderr


def test_cli_verify_passes_while_a_backup_is_in_progress_and_shows_debris_as_a_warning(storage, backed_up):
    table, manifest = backed_up
    # Dates derived from the clock the CLI reads.
    running = _unfinished_attempt(storage, table, datetime.now(UTC))
    debris = _unfinished_attempt(storage, table, manifest.started_at - timedelta(days=2))

    as_json = run_cli("verify", "--table", table, "--json")
    human = run_cli("verify", "--table", table)

    assert as_json.returncode == 0, as_json.stderr
    body = orjson.loads(as_json.stdout)
    assert body["ok"] is True and body["backup"] == manifest.backup
    assert len(body["warnings"]) == 1 and debris in body["warnings"][0]
    assert human.returncode == 0, human.stderr
    assert f"{table}: {manifest.backup} passed with 1 warning(s)" in human.stdout
    assert f"  ok   in progress: {running} started" in human.stdout
    assert f"  WARN debris: 1 attempt(s) without a manifest: {debris} started" in human.stdout
