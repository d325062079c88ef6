"""What the status reads besides the verdict's basics, each made the way the product makes it: the
trend over days (from manifest metadata, or the manifest when it has none), failed and queued work
items of the run record, a broken incremental chain, legacy backups, erasures and the newest audit
event. The clock is injected wherever an age matters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from localdev.sample import seed_table
from tablebackup.audit.entries import write_event
from tablebackup.audit.messages import AuditEvent, instant_text
from tablebackup.backup.archiver import backup_table
from tablebackup.backup.runs import run_queued_item, start_run
from tablebackup.core.clients import Storage
from tablebackup.core.settings import get_settings
from tablebackup.repository import catalog, erasures
from tablebackup.repository.backupformat import manifest_blob_name, new_backup_id
from tablebackup.status.report import account_status
from tests import statuscases


def _row(storage, table: str, now: datetime | None = None) -> dict:
    return account_status(storage, [table], now=now)["tables"][0]


def _backup_at(storage, table: str, at: datetime, **options):
    return backup_table(storage, table, backup_id=new_backup_id(table, at), started=at, **options)


def test_the_trend_has_one_point_a_day_from_metadata_or_the_manifest(storage, unique_name):
    table = unique_name("trend")
    client = storage.tables.create_table(table)
    now = datetime.now(UTC)
    days = [now - timedelta(days=back, hours=1) for back in (3, 2, 1)]
    for number, at in enumerate(days, start=1):
        for row in range(10):
            client.upsert_entity({"PartitionKey": "p", "RowKey": f"{number}-{row}"})
        _backup_at(storage, table, at)
    # A second backup on the last day: the trend keeps the day's newest only.
    newest = _backup_at(storage, table, days[-1] + timedelta(minutes=30))
    # A manifest written before manifests carried metadata: the status reads the manifest.
    first = catalog.backup_ids(storage.backups, table)[-1]
    storage.backups.get_blob_client(manifest_blob_name(first)).set_blob_metadata({})

    row = _row(storage, table, now)

    points = row["trend"]["points"]
    assert [p["entities"] for p in points] == [10, 20, 30]
    assert points[-1]["backup"] == newest.backup == row["newest_backup"]["backup"]
    assert [p["taken_at"][:10] for p in points] == [f"{at:%Y-%m-%d}" for at in days]
    growth = row["trend"]["growth"]
    assert growth["entities_percent"] == 200.0 and 9 < growth["entities_per_day"] < 11
    assert row["retention"]["complete_backups"] == 4
    assert row["retention"]["oldest_restorable"]["backup"] == first


def test_a_failed_work_item_and_a_queued_run_show_in_the_status(functions, storage, monkeypatch, unique_name):
    table = unique_name("runs")
    statuscases._protected(storage, table)
    monkeypatch.setenv("BACKUP_TABLES", table)
    get_settings.cache_clear()
    storage = Storage.from_settings()
    # The next daily run's only item fails on every delivery: the table is gone.
    run, messages = start_run(storage)
    storage.tables.delete_table(table)
    for delivery in range(1, 6):
        with pytest.raises(Exception):  # noqa: B017 - the queue sees any failure
            run_queued_item(storage, messages[0], delivery)

    row = _row(storage, table)

    assert row["verdict"] == "at risk"
    assert row["reason"].startswith("the newest backup attempt ") and " failed: " in row["reason"]
    [failure] = row["failures"]
    assert failure["run"] == run and failure["error"]
    assert row["in_progress"] == []

    # Another run, planned and queued but not yet picked up, of a table never backed up.
    fresh = unique_name("queued")
    seed_table(storage.tables, fresh, 5)
    monkeypatch.setenv("BACKUP_TABLES", fresh)
    get_settings.cache_clear()
    _run, [message] = start_run(Storage.from_settings())

    queued = _row(Storage.from_settings(), fresh)

    assert queued["verdict"] == "unprotected"
    assert queued["reason"] == "no complete backup; the first backup is in progress"
    assert [a["backup"] for a in queued["in_progress"]] == [orjson_loads(message)["backup"]]


def orjson_loads(text):
    import orjson

    return orjson.loads(text)


def test_an_incremental_whose_parent_is_gone_is_unprotected(storage, unique_name):
    table = unique_name("chain")
    seed_table(storage.tables, table, 20)
    full = backup_table(storage, table)
    storage.tables.get_table_client(table).upsert_entity({"PartitionKey": "new", "RowKey": "1"})
    incremental = backup_table(storage, table, incremental=True)
    assert incremental.kind == "incremental" and incremental.parent == full.backup
    storage.backups.delete_blob(manifest_blob_name(full.backup))

    row = _row(storage, table)

    assert row["verdict"] == "unprotected"
    assert (
        row["reason"]
        == f"the newest backup {incremental.backup} cannot be restored: its parent {full.backup!r} is missing"
    )
    # The table's size from the incremental's key index; what the incremental itself holds apart.
    assert row["newest_backup"]["entities"] == incremental.keys.lines == 21
    assert row["newest_backup"]["changed_entities"] == incremental.entities
    assert row["retention"]["oldest_restorable"] is None


def test_legacy_backups_erasures_and_the_newest_audit_event_are_reported(audit_storage, unique_name):
    storage = audit_storage
    table = unique_name("extra")
    seed_table(storage.tables, table, 10)
    backup_table(storage, table)
    # The old daily function's backup blob, as it named them.
    storage.backups.upload_blob(f"{table}-2025-01-13T02-00-00-000Z.json", b"[]")
    erasures.erase(storage, table, "p0", "0000000", reason="GDPR request 17", actor="test")
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    for moment in (day + timedelta(seconds=5), day + timedelta(hours=13, minutes=14, seconds=15)):
        event = AuditEvent(
            table=table,
            operation="UPDATE",
            partition_key="p",
            row_key="r",
            user_id="someone",
            timestamp=instant_text(moment + timedelta(microseconds=250_000)),
            before_data="null",
            after_data='{"a":1}',
        )
        write_event(storage, event, message_id=f"m{moment.timestamp()}")

    # The clock at today's midnight: the erasure's own audit entry (written now) is still to come.
    row = _row(storage, table, now=day + timedelta(days=1))

    assert row["legacy_backups"] == {"count": 1, "oldest": "2025-01-13T02:00:00Z", "newest": "2025-01-13T02:00:00Z"}
    assert row["erasures"] == 1
    assert row["audit"]["newest_event"] == f"{day:%Y-%m-%d}T13:14:15Z"
    # Two days later nothing is within the look-back.
    assert _row(storage, table, now=day + timedelta(days=3))["audit"]["newest_event"] is None


def test_one_row_per_table_whatever_the_spelling(storage, monkeypatch, unique_name):
    """Table names are case-insensitive: a table configured as `Orders…` whose backups are keyed
    `orders…` is one row, under the configured name, with its backup."""
    table = unique_name("Orders")
    seed_table(storage.tables, table, 12)
    manifest = backup_table(storage, table)
    monkeypatch.setenv("BACKUP_TABLES", table.upper())
    get_settings.cache_clear()

    document = account_status(Storage.from_settings())

    [row] = document["tables"]
    assert row["table"] == table.upper()
    assert row["newest_backup"]["backup"] == manifest.backup and row["newest_backup"]["entities"] == 12


def test_a_refused_newest_manifest_falls_back_to_the_newest_usable_backup(storage, unique_name):
    table = unique_name("refused")
    seed_table(storage.tables, table, 8)
    older = backup_table(storage, table)
    newest = backup_table(storage, table)
    # The newest manifest copied from the older backup: it names another backup, so it is refused.
    storage.backups.upload_blob(manifest_blob_name(newest.backup), older.model_dump_json().encode(), overwrite=True)

    row = _row(storage, table)

    assert row["newest_backup"]["backup"] == older.backup
    assert row["refused_backups"] == [newest.backup]
    assert row["verdict"] == "at risk"
    assert row["reason"] == (
        f"the manifest of the newest backup {newest.backup} is refused (run verify); "
        f"the newest usable one is {older.backup}"
    )
    assert newest.backup not in [p["backup"] for p in row["trend"]["points"]]
