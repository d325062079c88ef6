"""Tables in each state the status tells apart, made the way the product makes them: real backups,
verifications and drills against Azurite, then the one thing that went wrong."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from localdev.sample import seed_table
from tablebackup.backup.archiver import backup_table
from tablebackup.core.clients import Storage
from tablebackup.core.settings import get_settings
from tablebackup.repository.backupformat import DataBlobWriter, Manifest, manifest_blob_name, new_backup_id
from tablebackup.verify.checker import verify_and_record
from tablebackup.verify.drills import run_drill


def _age_manifest(storage: Storage, manifest: Manifest, hours: float) -> None:
    """Move a backup's times back, as if it had been taken `hours` earlier."""
    data = json.loads(manifest.model_dump_json())
    for name in ("started_at", "finished_at"):
        data[name] = (getattr(manifest, name) - timedelta(hours=hours)).isoformat()
    storage.backups.upload_blob(manifest_blob_name(manifest.backup), json.dumps(data), overwrite=True)


def _protected(storage: Storage, table: str, entities: int = 40) -> Manifest:
    seed_table(storage.tables, table, entities)
    manifest = backup_table(storage, table)
    [outcome] = verify_and_record(storage, table)
    assert outcome.ok
    assert run_drill(storage, table).ok
    return manifest


def build(storage: Storage, monkeypatch, unique_name) -> dict[str, str]:
    """A table in each case, by case name; BACKUP_TABLES names them all. Returns {case: table}."""
    tables = {
        case: unique_name(case[:6])
        for case in ("protected", "stale", "aging", "badverify", "baddrill", "nobackup", "inprogress")
    }
    monkeypatch.setenv("BACKUP_TABLES", ",".join(tables.values()))
    get_settings.cache_clear()
    storage = Storage.from_settings()

    _protected(storage, tables["protected"])

    # Verified and drilled, then no backup for 40 hours (the RPO is 26).
    _age_manifest(storage, _protected(storage, tables["stale"]), 40)
    # 22 hours old: within the RPO but past 80% of it.
    _age_manifest(storage, _protected(storage, tables["aging"]), 22)

    # A drilled backup whose data is then damaged: the next verification fails on its checksum.
    manifest = _protected(storage, tables["badverify"])
    blob = storage.backups.get_blob_client(manifest.data_blob)
    data = bytearray(blob.download_blob().readall())
    data[len(data) // 2] ^= 0x01
    blob.upload_blob(bytes(data), overwrite=True)
    [outcome] = verify_and_record(storage, tables["badverify"])
    assert not outcome.ok

    # A drill against an RTO no restore can meet.
    _protected(storage, tables["baddrill"])
    monkeypatch.setenv("RTO_MINUTES", "0.000001")
    get_settings.cache_clear()
    assert not run_drill(Storage.from_settings(), tables["baddrill"]).ok
    monkeypatch.delenv("RTO_MINUTES")
    get_settings.cache_clear()

    seed_table(storage.tables, tables["nobackup"], 10)

    # A complete backup, and a newer attempt that has written its data but not yet its manifest.
    _protected(storage, tables["inprogress"])
    writer = DataBlobWriter(storage.backups, new_backup_id(tables["inprogress"], datetime.now(UTC)))
    writer.write_lines([b'{"PartitionKey":"a","RowKey":"b"}\n'])
    writer.finish()
    return tables


# What each case must say: its verdict and words its reason contains.
EXPECTED = {
    "protected": ("protected", "verified, drills passed"),
    "stale": ("unprotected", "beyond the RPO of 26 h"),
    "aging": ("at risk", "over 80% of the RPO of 26 h"),
    "badverify": ("unprotected", "verification"),
    "baddrill": ("unprotected", "entity drill"),
    "nobackup": ("unprotected", "no complete backup"),
    "inprogress": ("protected", "a backup is in progress"),
}
