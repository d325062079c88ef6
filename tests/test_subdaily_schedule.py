"""BACKUP_MODE=incremental on a sub-daily schedule: the kind of each table's backup is decided per
table from its own full backups, with an injected clock, through the timer's plan and the
registered queue worker on real Azurite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from localdev.host import deliver
from localdev.sample import seed_table
from tablebackup.backup import runs
from tablebackup.core.clients import Storage
from tablebackup.core.settings import get_settings
from tablebackup.repository import catalog

# Any instant: each test names FULL_BACKUP_DAY relative to it, so no weekday is assumed.
BASE = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def _weekday(at: datetime) -> str:
    return at.strftime("%A").lower()


@pytest.fixture
def incremental_mode(env, monkeypatch):
    def configure(full_day: datetime, *tables: str) -> Storage:
        monkeypatch.setenv("BACKUP_MODE", "incremental")
        monkeypatch.setenv("FULL_BACKUP_DAY", _weekday(full_day))
        monkeypatch.setenv("BACKUP_TABLES", ",".join(tables))
        get_settings.cache_clear()
        return Storage.from_settings()

    return configure


def _run(storage: Storage, functions, now: datetime) -> dict[str, str]:
    """One scheduled run at `now`: each table's planned kind, after checking what the worker wrote."""
    run, messages = runs.start_run(storage, now=now)
    assert deliver(functions["backup_worker"].get_user_function(), messages) == {}
    assert runs.run_status(storage, run)["status"] == "succeeded"
    kinds = {}
    for message in messages:
        item = orjson.loads(message)
        kinds[item["table"]] = "incremental" if item["incremental"] else "full"
        assert catalog.read_manifest(storage.backups, item["backup"]).kind == kinds[item["table"]]
    return kinds


def test_an_hourly_schedule_takes_one_full_backup_on_the_full_backup_day(incremental_mode, functions, unique_name):
    table = unique_name("hourly")
    storage = incremental_mode(BASE, table)
    seed_table(storage.tables, table, 5)

    hours = [BASE + timedelta(hours=offset) for offset in range(-2, 24)]
    kinds = [(hour, _run(storage, functions, hour)[table]) for hour in hours]

    assert kinds[0][1] == "full"  # the day before: the table had no full backup yet
    assert [kind for _, kind in kinds[1:2]] == ["incremental"]
    on_full_day = [kind for hour, kind in kinds if hour.date() == BASE.date()]
    assert len(on_full_day) == 24 and on_full_day[0] == "full" and on_full_day.count("full") == 1


def test_a_table_whose_newest_full_is_over_a_week_old_takes_a_full_one(incremental_mode, functions, unique_name):
    table, new = unique_name("weekold"), unique_name("new")
    # A FULL_BACKUP_DAY none of these runs falls on.
    storage = incremental_mode(BASE + timedelta(days=3), table)
    seed_table(storage.tables, table, 5)
    assert _run(storage, functions, BASE) == {table: "full"}
    assert _run(storage, functions, BASE + timedelta(days=6)) == {table: "incremental"}

    storage = incremental_mode(BASE + timedelta(days=3), table, new)
    seed_table(storage.tables, new, 5)

    # Eight days on: the old table's newest full is too old; the new table has none yet.
    assert _run(storage, functions, BASE + timedelta(days=8)) == {table: "full", new: "full"}
    assert _run(storage, functions, BASE + timedelta(days=8, hours=1)) == {table: "incremental", new: "incremental"}


def test_a_full_backup_still_running_an_hour_later_is_not_planned_again(incremental_mode, functions, unique_name):
    table = unique_name("longfull")
    storage = incremental_mode(BASE, table)
    seed_table(storage.tables, table, 5)
    assert _run(storage, functions, BASE - timedelta(days=1)) == {table: "full"}

    # The full day's first run plans the full backup; its work is still queued an hour later.
    _, queued = runs.start_run(storage, now=BASE)
    assert [orjson.loads(m)["incremental"] for m in queued] == [False]
    assert _run(storage, functions, BASE + timedelta(hours=1)) == {table: "incremental"}

    assert deliver(functions["backup_worker"].get_user_function(), queued) == {}
    assert _run(storage, functions, BASE + timedelta(hours=2)) == {table: "incremental"}
