"""Retention against real Azurite: restic-style daily/weekly/monthly picks over simulated dates, the
guards (newest complete backup, incremental chains, incomplete attempts), dry runs, real deletion,
and the `prune` command as users run it."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from localdev.azurite import connection_string, free_port
from localdev.sample import seed_table
from tablebackup.backup.archiver import backup_table
from tablebackup.backup.retention import delete_backup, plan, prune
from tablebackup.core.clients import Storage
from tablebackup.core.errors import InvalidInput, StorageUnavailable
from tablebackup.core.settings import get_settings
from tablebackup.repository import catalog
from tablebackup.repository.backupformat import (
    DataBlobWriter,
    Manifest,
    manifest_blob_name,
    new_backup_id,
    write_manifest,
)
from tests.test_cli import ROOT, _one_line_error


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _backup_at(storage: Storage, table: str, at: datetime, *, parent: str | None = None, complete=True) -> str:
    """A backup as the archiver writes it, taken at a chosen instant: data blob, then manifest."""
    backup_id = new_backup_id(table, at)
    writer = DataBlobWriter(storage.backups, backup_id)
    writer.write_lines([b'{"PartitionKey":"p","RowKey":"r"}\n'])
    size, sha256 = writer.finish()
    if complete:
        manifest = Manifest(
            backup=backup_id,
            table=table,
            source_account="devstoreaccount1",
            kind="incremental" if parent else "full",
            parent=parent,
            started_at=at,
            finished_at=at + timedelta(seconds=1),
            entities=1,
            bytes=size,
            sha256=sha256,
            data_blob=writer.name,
        )
        write_manifest(storage.backups, manifest)
    return backup_id


def _backups_at(storage: Storage, table: str, instants: list[datetime]) -> list[str]:
    storage.ensure_backup_container()
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda at: _backup_at(storage, table, at), instants))


def _ids(table: str, *texts: str) -> set[str]:
    return {new_backup_id(table, _at(text)) for text in texts}


def _at_two(table: str, days: str) -> set[str]:
    """Ids of the 02:00 backups of the given days; a bare `mm-dd` is in the year of the day before it."""
    ids, year = set(), ""
    for day in days.split():
        if len(day) > len("mm-dd"):
            year, day = day[:4], day[5:]
        ids.add(new_backup_id(table, _at(f"{year}-{day}T02:00:00")))
    return ids


def _blob_names(storage: Storage) -> list[str]:
    return sorted(blob.name for blob in storage.backups.list_blobs())


def test_a_year_of_daily_backups_keeps_30_days_12_weeks_and_12_months(storage, unique_name):
    table = unique_name("year")
    first = _at("2025-01-01T02:00:00")
    _backups_at(storage, table, [first + timedelta(days=day) for day in range(400)])  # to 2026-02-04, a Wednesday

    planned = plan(storage, table, now=_at("2026-02-04T12:00:00"))  # the production defaults 30/12/12

    daily = {new_backup_id(table, _at("2026-02-04T02:00:00") - timedelta(days=day)) for day in range(30)}
    # The newest of each ISO week: this Wednesday, then the Sundays before it.
    weekly = _at_two(table, "2026-02-04 02-01 01-25 01-18 01-11 01-04 2025-12-28 12-21 12-14 12-07 11-30 11-23")
    # The newest of each month: today, then each month's last day.
    monthly = _at_two(table, "2026-02-04 01-31 2025-12-31 11-30 10-31 09-30 08-31 07-31 06-30 05-31 04-30 03-31")
    assert set(planned.keep) == daily | weekly | monthly
    # Overlaps are counted once: 30 daily, 7 more weekly (to 2026-01-04 and before), 9 more monthly.
    assert (len(planned.keep), len(planned.delete)) == (46, 354)
    assert planned.keep == sorted(planned.keep, reverse=True)
    newest = new_backup_id(table, _at("2026-02-04T02:00:00"))
    assert planned.reasons[newest] == ["daily", "weekly", "monthly", "newest complete"]
    assert planned.reasons[new_backup_id(table, _at("2025-11-30T02:00"))] == ["weekly", "monthly"]
    assert all(planned.reasons[backup_id] == ["expired"] for backup_id in planned.delete)


def test_now_plans_as_of_an_earlier_date_and_later_backups_are_kept_uncounted(storage, unique_name):
    table = unique_name("asof")
    _backups_at(storage, table, [_at("2026-03-01T02:00") + timedelta(days=day) for day in range(20)])

    planned = plan(storage, table, keep_daily=3, keep_weekly=0, keep_monthly=0, now=_at("2026-03-10T12:00"))

    after = {new_backup_id(table, _at("2026-03-11T02:00") + timedelta(days=day)) for day in range(10)}
    assert set(planned.keep) == after | _ids(table, "2026-03-10T02:00", "2026-03-09T02:00", "2026-03-08T02:00")
    assert all(planned.reasons[backup_id] == ["after now"] for backup_id in after)
    assert planned.reasons[new_backup_id(table, _at("2026-03-10T02:00"))] == ["daily", "newest complete"]
    assert len(planned.delete) == 7


@pytest.mark.parametrize(
    ("daily", "weekly", "monthly", "kept"),
    [
        # Midnight UTC splits days, even by a microsecond.
        (2, 0, 0, {"2025-01-06T00:00:00", "2025-01-05T23:59:59.999999"}),
        # ISO weeks start on Monday and 2025-W01 starts on 2024-12-30, in the old year.
        (0, 3, 0, {"2025-01-06T00:00:00", "2025-01-05T23:59:59.999999", "2024-12-29T23:00:00"}),
        # Calendar months: the newest of December is the Monday in 2025-W01.
        (0, 0, 2, {"2025-01-06T00:00:00", "2024-12-30T01:00:00"}),
        # A backup kept by several rules uses one slot of each.
        (1, 1, 2, {"2025-01-06T00:00:00", "2024-12-30T01:00:00"}),
    ],
)
def test_day_iso_week_and_month_boundaries_in_utc(storage, unique_name, daily, weekly, monthly, kept):
    table = unique_name("edges")
    instants = "2024-12-29T23:00 2024-12-30T01:00 2025-01-01T10:00 2025-01-05T23:59:59.999999 2025-01-06T00:00"
    _backups_at(storage, table, [_at(text) for text in instants.split()])

    planned = plan(storage, table, keep_daily=daily, keep_weekly=weekly, keep_monthly=monthly, now=_at("2025-01-07"))

    assert set(planned.keep) == _ids(table, *kept)


def test_several_backups_on_one_day_keep_only_that_days_newest(storage, unique_name):
    table = unique_name("sameday")
    instants = ["2026-05-01T01:00", "2026-05-01T23:00", "2026-05-02T01:00", "2026-05-02T09:30", "2026-05-02T17:45"]
    _backups_at(storage, table, [_at(text) for text in instants])

    planned = plan(storage, table, keep_daily=2, keep_weekly=0, keep_monthly=0, now=_at("2026-05-03"))

    assert planned.keep == sorted(_ids(table, "2026-05-02T17:45", "2026-05-01T23:00"), reverse=True)
    assert len(planned.delete) == 3


def test_the_newest_complete_backup_is_kept_even_when_every_count_is_zero(storage, unique_name):
    table = unique_name("newest")
    older, newest = _backups_at(storage, table, [_at("2026-01-01T02:00"), _at("2026-01-02T02:00")])
    crashed = _backup_at(storage, table, _at("2026-01-03T02:00"), complete=False)  # newer, never finished

    planned = plan(storage, table, keep_daily=0, keep_weekly=0, keep_monthly=0, now=_at("2026-02-01"))

    assert planned.keep == [newest]
    assert planned.reasons == {crashed: ["incomplete"], newest: ["newest complete"], older: ["expired"]}


def test_a_kept_incremental_keeps_its_whole_parent_chain(storage, unique_name):
    table = unique_name("chain")
    storage.ensure_backup_container()
    old_full = _backup_at(storage, table, _at("2026-01-01T02:00"))
    old_incremental = _backup_at(storage, table, _at("2026-01-02T02:00"), parent=old_full)
    full = _backup_at(storage, table, _at("2026-01-10T02:00"))
    middle = _backup_at(storage, table, _at("2026-01-11T02:00"), parent=full)
    newest = _backup_at(storage, table, _at("2026-01-12T02:00"), parent=middle)

    result = prune(storage, [table], keep_daily=1, keep_weekly=0, keep_monthly=0, now=_at("2026-02-01"))

    assert result["keep"] == [newest, middle, full]
    assert result["reasons"][middle] == [f"parent of {newest}"]
    assert result["reasons"][full] == [f"parent of {middle}"]
    assert result["delete"] == result["deleted"] == [old_incremental, old_full]  # children before parents
    assert [m.backup for m in catalog.list_backups(storage.backups, table)] == [newest, middle, full]


def test_incomplete_backups_older_than_a_day_are_deleted_and_newer_ones_left_alone(storage, unique_name):
    table = unique_name("crashed")
    now = _at("2026-06-10T12:00")
    storage.ensure_backup_container()
    complete = _backup_at(storage, table, now - timedelta(days=2))
    stale = _backup_at(storage, table, now - timedelta(hours=25), complete=False)
    running = _backup_at(storage, table, now - timedelta(hours=23), complete=False)

    result = prune(storage, [table], now=now)

    assert result["deleted"] == [stale]
    assert result["reasons"][stale] == ["incomplete"]
    assert result["reasons"][running] == ["in progress"]
    assert _blob_names(storage) == sorted(
        [f"{complete}/data.ndjson.gz", f"{complete}/manifest.json", f"{running}/data.ndjson.gz"]
    )


def test_dry_run_deletes_nothing(storage, unique_name):
    table = unique_name("dry")
    _backups_at(storage, table, [_at("2026-01-01T02:00") + timedelta(days=day) for day in range(5)])
    before = _blob_names(storage)

    result = prune(storage, [table], keep_daily=1, keep_weekly=0, keep_monthly=0, dry_run=True)

    assert len(result["delete"]) == 4 and result["deleted"] == [] and result["dry_run"] is True
    assert _blob_names(storage) == before


def test_pruning_deletes_both_blobs_and_the_backup_leaves_the_catalog(storage, unique_name):
    table, other = unique_name("real"), unique_name("other")
    ids = _backups_at(storage, table, [_at("2026-01-01T02:00") + timedelta(days=day) for day in range(4)])
    (untouched,) = _backups_at(storage, other, [_at("2025-01-01T02:00")])

    result = prune(storage, None, keep_daily=2, keep_weekly=0, keep_monthly=0, now=_at("2026-01-05"))

    assert result["tables"] == sorted([table, other])
    assert result["deleted"] == [ids[1], ids[0]]
    assert [m.backup for m in catalog.list_backups(storage.backups, table)] == [ids[3], ids[2]]
    assert catalog.backup_ids(storage.backups, other) == [untouched]  # its newest complete backup
    assert not [name for name in _blob_names(storage) if name.startswith((ids[0], ids[1]))]


def test_deleting_is_idempotent_and_removes_every_blob_under_the_id(storage, unique_name):
    table = unique_name("again")
    (backup_id,) = _backups_at(storage, table, [_at("2026-01-01T02:00")])
    storage.backups.upload_blob(f"{backup_id}/keys.ndjson.gz", b"")  # an incremental's further blobs go too
    storage.backups.delete_blob(manifest_blob_name(backup_id))  # interrupted after the manifest went

    delete_backup(storage.backups, backup_id)
    delete_backup(storage.backups, backup_id)

    assert _blob_names(storage) == []


def test_real_and_safety_backups_of_one_day_follow_the_same_policy(storage, unique_name):
    table = unique_name("actual")
    seed_table(storage.tables, table, 3)
    first, safety = backup_table(storage, table), backup_table(storage, table)  # a restore's safety backup is one

    result = prune(storage, [table], keep_daily=1, keep_weekly=1, keep_monthly=1)

    assert result["keep"] == [safety.backup] and result["deleted"] == [first.backup]


@pytest.mark.parametrize(
    ("tables", "counts", "message"),
    [
        (["no-dashes"], {}, "invalid table name 'no-dashes'"),
        (["good123", "ab"], {}, "invalid table name 'ab'"),
        (None, {"keep_weekly": -1}, "invalid keep_weekly -1"),
        (None, {"keep_daily": 1.5}, "invalid keep_daily 1.5"),
    ],
)
def test_bad_input_is_refused_before_storage_is_touched(env, monkeypatch, tables, counts, message):
    dead = free_port()
    monkeypatch.setenv("BACKUP_BLOB_CONNECTION_STRING", connection_string(dead, dead, dead))
    get_settings.cache_clear()

    with pytest.raises(InvalidInput, match=message):
        prune(Storage.from_settings(), tables, **counts)


def test_unreachable_backup_storage_is_a_clear_error(env, monkeypatch, unique_name):
    dead = free_port()
    monkeypatch.setenv("BACKUP_BLOB_CONNECTION_STRING", connection_string(dead, dead, dead))
    monkeypatch.setenv("STORAGE_RETRIES", "0")
    get_settings.cache_clear()
    storage = Storage.from_settings()

    with pytest.raises(StorageUnavailable, match="unreachable"):
        plan(storage, unique_name("any"))
    result = prune(storage, [unique_name("any")])
    assert "unreachable" in result["failed"][0]["error"]


def run_prune(*args: str) -> subprocess.CompletedProcess:
    """`python -m tablebackup prune ...`, registering the command first if tablebackup/cli/app.py does not yet."""
    code = (
        "import sys\nfrom tablebackup.cli.app import app, main\nfrom tablebackup.cli.prunes import prune\n"
        "if 'prune' not in app.commands:\n    app.add_command(prune)\nsys.exit(main(sys.argv[1:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "prune", *args],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def test_cli_prune_json_dry_run_then_for_real(storage, unique_name):
    table = unique_name("cliprune")
    ids = _backups_at(storage, table, [_at("2026-01-01T02:00") + timedelta(days=day) for day in range(3)])
    args = ["--table", table, "--keep-daily", "1", "--keep-weekly", "0", "--keep-monthly", "0"]

    dry = run_prune(*args, "--now", "2026-01-04T00:00:00Z", "--dry-run", "--json")
    human = run_prune(*args, "--now", "2026-01-04", "--dry-run")
    real = run_prune(*args, "--json")

    assert dry.returncode == 0, dry.stderr
    body = orjson.loads(dry.stdout)
    assert (body["keep"], body["delete"], body["deleted"]) == ([ids[2]], [ids[1], ids[0]], [])
    assert body["now"] == "2026-01-04T00:00:00Z" and body["reasons"][ids[0]] == ["expired"]
    assert human.returncode == 0
    assert f"KEEP   {ids[2]}  daily, newest complete" in human.stdout
    assert f"DELETE {ids[0]}  expired" in human.stdout and "would delete 2" in human.stdout
    assert real.returncode == 0 and orjson.loads(real.stdout)["deleted"] == [ids[1], ids[0]]
    assert catalog.backup_ids(storage.backups, table) == [ids[2]]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--table", "no-dashes", "--json"], 1, "invalid table name 'no-dashes'"),
        (["--keep-daily", "-1"], 2, "'--keep-daily': -1 is not in the range x>=0"),
        (["--now", "yesterday"], 2, "'yesterday' is not an ISO-8601 instant"),
    ],
)
def test_cli_prune_refuses_bad_input_with_one_line(storage, args, code, message):
    result = run_prune(*args)

    assert result.returncode == code
    assert message in _one_line_error(result)
    if "--json" in args:  # the failure is the one JSON document
        assert orjson.loads(result.stdout)["exit_code"] == code
    else:
        assert result.stdout == ""
    assert not storage.backups.exists()
