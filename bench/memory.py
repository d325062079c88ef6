"""Peak RSS of each path whose memory could grow with its data, at 1x and 10x that data, as whole
`python -m tablebackup` processes on the bench's Azurite:

- incremental deletion detection: every key of the parent gone before the next live key (a purge);
- verify with a REQUIRED_FIELDS property that no entity has (a typo flags every entity);
- point-in-time replay of as many distinct changed entities (dry run: the collapse, no writes);
- the audit query of the CLI over as many entries (--json, all of it on stdout);
- a dry-run restore of a three-link chain of large blobs (every link's streams open at once);
- a dry-run import of an AzCopy 7.3 export, one data file of all the entities (one JSON document,
  its CRC64 checked, then read value by value).

Each path's data is seeded here, in tables of its own, the way the product makes it: backups by the
CLI, audit entries in the audit table's schema (tablebackup.audit.entries) written as batches."""

from __future__ import annotations

import base64
import json
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from azure.data.tables import TableServiceClient

from bench.process import BenchFailed, Run, run
from tablebackup.audit.entries import partition_for, row_stamp
from tablebackup.audit.messages import instant_text
from tablebackup.storage.tablewriter import submit_operations

MEMORY_GOAL = 1.2  # peak RSS at 10x the data at most this many times that at 1x
FACTOR = 10
# 1x sizes: large enough that a path keeping ~150 B per key would show well above the goal at 10x.
KEYS = 15_000  # deletion detection and verify
CHANGES = 10_000  # replay and audit query: ~1 KB images
CHAIN_ENTITIES = 600  # chain restore: ~3 KB of random text each, ~1.6 MB of gzip per link at 1x
AZCOPY_ENTITIES = 2_000  # AzCopy import: ~3 KB each, a ~6 MB data file at 1x
IMAGE_BYTES = 1000
BLOB_TEXT_BYTES = 3000


@dataclass
class MemoryPath:
    label: str
    unit: str
    counts: tuple[int, int]
    runs: tuple[Run, Run]

    @property
    def ratio(self) -> float:
        return self.runs[1].peak_rss_kib / self.runs[0].peak_rss_kib


def _cli(env: dict[str, str], *args: str, ok_exit: tuple[int, ...] = (0,)) -> tuple[Run, dict]:
    result = run([sys.executable, "-m", "tablebackup", *args, "--json"], env, ok_exit=ok_exit)
    try:
        return result, json.loads(result.stdout)
    except ValueError:
        raise BenchFailed(f"cli {' '.join(args)} printed no JSON report: {result.stdout.strip()[:300]!r}") from None


def _write(service: TableServiceClient, table: str, entities) -> None:
    service.create_table_if_not_exists(table)
    submit_operations(service.get_table_client(table), (("replace", e) for e in entities), workers=4)


def _keys(count: int) -> Iterator[dict]:
    # 1,000 per partition: Azurite slows down as one partition grows.
    return ({"PartitionKey": f"old{index // 1000:05d}", "RowKey": f"{index:08d}"} for index in range(count))


def deletions_and_verify(service, env: dict[str, str], count: int) -> tuple[Run, Run]:
    """A full backup of `count` keys, verified with a required field none has; then every key is
    purged but one later live key, and the incremental records `count` deletions."""
    table = f"memdel{count}"
    _write(service, table, _keys(count))
    _cli(env, "backup", "--table", table)
    verify_env = {**env, "REQUIRED_FIELDS": f"{table}:noSuchField"}
    verified, report = _cli(verify_env, "verify", "--table", table, ok_exit=(0, 1))
    details = [check["detail"] for check in report["checks"] if check["name"] == "required fields"]
    if not details or not details[0].startswith(f"{count} missing"):
        raise BenchFailed(f"verify of {table} did not count {count} missing required fields: {details}")
    service.delete_table(table)
    _write(service, table, [{"PartitionKey": "zzz", "RowKey": "live"}])
    purged, report = _cli(env, "backup", "--table", table, "--incremental")
    [backup] = report["backups"]
    if backup["kind"] != "incremental" or report["failed"]:
        raise BenchFailed(f"the incremental backup of {table} reported {report}")
    return purged, verified


def _audit_entity(table: str, index: int, at: str, rng: random.Random) -> dict:
    """One INSERT entry in the audit table's schema (tablebackup.audit.entries)."""
    key = ("p", f"{index:08d}")
    image = {"PartitionKey": key[0], "RowKey": key[1], "text": rng.randbytes(IMAGE_BYTES // 2).hex()}
    return {
        "PartitionKey": partition_for(at),
        "RowKey": f"{row_stamp(at)}_{uuid.UUID(int=rng.getrandbits(128))}",
        "tableName": table,
        "operation": "INSERT",
        "entityKey": f"{key[0]}:{key[1]}",
        "partitionKey": key[0],
        "rowKey": key[1],
        "userId": "bench@example.com",
        "timestamp@odata.type": "Edm.DateTime",
        "timestamp": at,
        "beforeData": "null",
        "afterData": json.dumps(image),
        "messageId": f"bench-{index}",
    }


def replay_and_audit(service, env: dict[str, str], count: int) -> tuple[Run, Run]:
    """`count` audited INSERTs of distinct entities after a backup; a dry-run point-in-time restore
    replays them all, and `cli audit` lists them all."""
    table, audit_table = f"mempit{count}", f"memaudit{count}"
    env = {**env, "AUDIT_TABLE": audit_table}
    _write(service, table, [{"PartitionKey": "p", "RowKey": "seed"}])
    _cli(env, "backup", "--table", table)
    # 1,000 entries a day (an entry's day is its partition, and Azurite slows down as one grows), on
    # the days after the backup; the instant may be later than now.
    first = datetime.now(UTC) + timedelta(seconds=1)
    rng = random.Random(count)
    stamps = [instant_text(first + timedelta(days=i // 1000, microseconds=i % 1000)) for i in range(count)]
    _write(service, audit_table, (_audit_entity(table, i, at, rng) for i, at in enumerate(stamps)))
    as_of = stamps[-1]
    command = ["restore", "--table", table, "--as-of", as_of, "--replay-audit", "--target", f"{table}x", "--dry-run"]
    replayed, report = _cli(env, *command)
    if report["replayed"] != count:
        raise BenchFailed(f"the replay of {table} planned {report['replayed']} changes, expected {count}")
    listed, report = _cli(env, "audit", "--table", table, "--since", stamps[0], "--until", as_of)
    if len(report["entries"]) != count:
        raise BenchFailed(f"cli audit listed {len(report['entries'])} entries of {table}, expected {count}")
    return replayed, listed


def _write_large(service, table: str, count: int) -> None:
    """`count` entities of ~BLOB_TEXT_BYTES of random (incompressible) text each."""
    rng = random.Random(count)
    text = BLOB_TEXT_BYTES * 3 // 4
    _write(service, table, (
        {"PartitionKey": f"p{i // 1000:03d}", "RowKey": f"{i:08d}", "text": base64.b64encode(rng.randbytes(text)).decode()}  # noqa: E501
        for i in range(count)
    ))  # fmt: skip


def chain_restore(service, env: dict[str, str], count: int) -> Run:
    """A full backup and two incrementals, each holding all `count` entities (they all changed within
    the incremental overlap), restored as a dry run."""
    table = f"memchain{count}"
    _write_large(service, table, count)
    _cli(env, "backup", "--table", table)
    for _ in range(2):
        _cli(env, "backup", "--table", table, "--incremental")
    restored, report = _cli(
        env, "restore", "--table", table, "--backup", "latest", "--target", f"{table}x", "--dry-run"
    )
    if report["restored"] != count:
        raise BenchFailed(f"the dry-run restore of {table} counted {report['restored']}, expected {count}")
    return restored


def azcopy_import(service, env: dict[str, str], count: int) -> Run:
    """An AzCopy export of `count` large entities in one data file (tests.azcopyexport writes it as
    AzCopy's docs describe), imported as a dry run."""
    from tests.azcopyexport import azcopy_export

    table = f"memazcopy{count}"
    _write_large(service, table, count)
    with tempfile.TemporaryDirectory() as folder:
        manifest = azcopy_export(service.get_table_client(table), Path(folder), datetime.now(UTC))
        imported, report = _cli(env, "import", "--table", f"{table}x", "--input", str(manifest), "--dry-run")
    if report["imported"] != count or report["azcopy"]["checksums"] != "verified":
        raise BenchFailed(f"the dry-run import of {table}'s AzCopy export counted {report['imported']} of {count}")
    return imported


def measure(connection_string: str, env: dict[str, str], scale: float, say: Callable[[str], None]) -> list:
    service = TableServiceClient.from_connection_string(connection_string)
    sizes = {name: (max(1, round(n * scale)), max(1, round(n * scale)) * FACTOR) for name, n in (
        ("keys", KEYS), ("changes", CHANGES), ("chain", CHAIN_ENTITIES), ("azcopy", AZCOPY_ENTITIES))}  # fmt: skip
    measured: dict[str, list[Run]] = {}
    for count in sizes["keys"]:
        started = time.perf_counter()
        for label, result in zip(("deletions", "verify"), deletions_and_verify(service, env, count), strict=True):
            measured.setdefault(label, []).append(result)
        say(f"memory: {count:,} keys purged and verified in {time.perf_counter() - started:.1f} s")
    for count in sizes["changes"]:
        started = time.perf_counter()
        for label, result in zip(("replay", "audit"), replay_and_audit(service, env, count), strict=True):
            measured.setdefault(label, []).append(result)
        say(f"memory: {count:,} audited changes replayed and listed in {time.perf_counter() - started:.1f} s")
    for count in sizes["chain"]:
        started = time.perf_counter()
        measured.setdefault("chain", []).append(chain_restore(service, env, count))
        say(f"memory: a 3-link chain of {count:,} large entities restored in {time.perf_counter() - started:.1f} s")
    for count in sizes["azcopy"]:
        started = time.perf_counter()
        measured.setdefault("azcopy", []).append(azcopy_import(service, env, count))
        say(f"memory: an AzCopy export of {count:,} large entities imported in {time.perf_counter() - started:.1f} s")
    return [
        MemoryPath("incremental: deleted keys", "keys", sizes["keys"], tuple(measured["deletions"])),
        MemoryPath("verify: missing field", "entities", sizes["keys"], tuple(measured["verify"])),
        MemoryPath("point-in-time replay", "changes", sizes["changes"], tuple(measured["replay"])),
        MemoryPath("cli audit --json", "entries", sizes["changes"], tuple(measured["audit"])),
        MemoryPath("chain restore, 3 links", "entities", sizes["chain"], tuple(measured["chain"])),
        MemoryPath("AzCopy export import", "entities", sizes["azcopy"], tuple(measured["azcopy"])),
    ]


def report(paths: list[MemoryPath]) -> None:
    print(f"peak RSS by path at 1x and {FACTOR}x its data; whole processes, one run each")
    print(f"  {'':<27} {'1x':>17} {f'{FACTOR}x':>19} {'ratio':>7}")
    for path in paths:
        small, big = (f"{c:,} {path.unit}" for c in path.counts)
        mib = [r.peak_rss_kib / 1024 for r in path.runs]
        met = "goal met" if path.ratio <= MEMORY_GOAL else "goal NOT met"
        print(
            f"  {path.label:<27} {mib[0]:>6.1f} MiB {small:>9} {mib[1]:>6.1f} MiB {big:>11} {path.ratio:>6.2f}x"
            f"   (goal <= {MEMORY_GOAL}x)  {met}"
        )
