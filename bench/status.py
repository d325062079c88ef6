"""The protection status over a big account: TABLES tables with DAYS days of daily backups each
(manifests only: the status never reads data blobs), each verified and drilled. Times
`python -m tablebackup status --json` as a whole process straight against Azurite, then runs it again
through counting proxies in front of the blob and table endpoints for the requests per table."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient

from bench.process import BenchFailed, Run, run
from localdev.azurite import connection_string
from tablebackup.repository.backupformat import Manifest, new_backup_id, write_manifest
from tablebackup.verify.results import newest_first_key
from tests.faultproxy import FaultProxy

TABLES = 200
DAYS = 90
HTTP_LIMIT_SECONDS = 230  # the Functions HTTP answer limit (Azure's load balancer)
CONTAINER = "status-bench"


def table_names(count: int) -> list[str]:
    return [f"stat{index:03d}" for index in range(1, count + 1)]


def _manifests(table: str, days: int, now: datetime) -> list[Manifest]:
    """One full backup a day at 02:00, the newest a few hours ago, the table growing 1% a day."""
    newest = now.replace(hour=2, minute=0, second=0, microsecond=0)
    if newest > now - timedelta(hours=1):
        newest -= timedelta(days=1)
    found = []
    for back in range(days):
        started = newest - timedelta(days=back)
        entities = int(100_000 * 1.01 ** (days - back))
        found.append(
            Manifest(
                backup=new_backup_id(table, started),
                table=table,
                source_account="devstoreaccount1",
                started_at=started,
                finished_at=started + timedelta(minutes=4),
                entities=entities,
                bytes=entities * 23,
                sha256="0" * 64,
                data_blob=f"{new_backup_id(table, started)}/data.ndjson.gz",
                key_samples=[f"p{index:05d}" for index in range(0, 512)],
            )
        )
    return found


def seed(connection: str, tables: list[str], days: int, now: datetime, say: Callable[[str], None]) -> None:
    say(f"seeding {len(tables)} tables x {days} daily manifests, each verified and drilled ...")
    container = BlobServiceClient.from_connection_string(connection).get_container_client(CONTAINER)
    container.create_container()
    service = TableServiceClient.from_connection_string(connection)
    verifications = service.create_table("benchverifications")
    drills = service.create_table("benchdrills")

    def one(table: str) -> None:
        manifests = _manifests(table, days, now)
        for manifest in manifests:
            write_manifest(container, manifest)
        at = manifests[0].finished_at + timedelta(minutes=30)
        checks = json.dumps([{"name": "checksum", "ok": True, "detail": "ok"}])
        row = {"PartitionKey": table, "RowKey": newest_first_key(at), "at": at.isoformat(), "checks": checks}
        verifications.upsert_entity({**row, "ok": True, "backup": manifests[0].backup})
        drills.upsert_entity(
            {**row, "ok": True, "kind": "entity", "restore_seconds": 12.5, "backup": manifests[0].backup}
        )

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, tables))


def _status(env: dict[str, str], tables: int) -> Run:
    result = run([sys.executable, "-m", "tablebackup", "status", "--json"], env)
    document = json.loads(result.stdout)
    if len(document["tables"]) != tables or not document["ok"]:
        raise BenchFailed(f"status reported {len(document['tables'])} tables, verdict {document['verdict']}")
    points = {len(row["trend"]["points"]) for row in document["tables"]}
    if points != {min(DAYS, 91)}:
        raise BenchFailed(f"status drew trends of {points} points, expected {DAYS}")
    return result


def measure(connection: str, ports: tuple[int, int, int], tables: int, say: Callable[[str], None]) -> dict:
    names = table_names(tables)
    seed(connection, names, DAYS, datetime.now(UTC), say)
    settings = {
        "BACKUP_CONTAINER": CONTAINER,
        "BACKUP_TABLES": ",".join(names),
        "VERIFICATIONS_TABLE": "benchverifications",
        "DRILLS_TABLE": "benchdrills",
    }
    env = {**os.environ, "AZURE_STORAGE_CONNECTION_STRING": connection, "BACKUP_BLOB_CONNECTION_STRING": connection}
    direct = _status({**env, **settings}, tables)
    say(f"status of {tables} tables: {direct.seconds:.1f} s")
    blob_port, queue_port, table_port = ports
    with FaultProxy(blob_port) as blobs, FaultProxy(table_port) as table_proxy:
        counted = connection_string(blobs.port, queue_port, table_proxy.port)
        proxied = {**env, "AZURE_STORAGE_CONNECTION_STRING": counted, "BACKUP_BLOB_CONNECTION_STRING": counted}
        _status({**proxied, **settings}, tables)
        requests = {"blob": len(blobs.seen), "table": len(table_proxy.seen)}
    return {"tables": tables, "days": DAYS, "run": direct, "requests": requests}


def report(result: dict) -> None:
    tables, run_ = result["tables"], result["run"]
    blob, table = result["requests"]["blob"], result["requests"]["table"]
    print(f"status of {tables} tables with {result['days']} days of daily backups each; one whole process")
    print(f"  {'seconds':<24} {run_.seconds:>8.1f}   (HTTP limit {HTTP_LIMIT_SECONDS} s)  ", end="")
    print("goal met" if run_.seconds < HTTP_LIMIT_SECONDS else "goal NOT met")
    print(f"  {'seconds per table':<24} {run_.seconds / tables:>8.3f}")
    print(
        f"  {'requests per table':<24} {(blob + table) / tables:>8.1f}   "
        f"({blob / tables:.1f} blob, {table / tables:.1f} table)"
    )
    print(f"  {'peak RSS':<24} {run_.peak_rss_kib / 1024:>8.1f} MiB")
