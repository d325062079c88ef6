"""`python -m bench.import_order [--entities N]`: `tablebackup import` of input in key order against
the same entities shuffled, as whole `python -m tablebackup import` processes on an in-memory Azurite
of its own, ROUNDS runs alternating, each into a new empty table.

Batches hold one partition, so shuffled input is grouped by partition first (an external sort through
temporary runs, tablebackup.transfer.keyorder); the goal is shuffled input in at most SPEED_GOAL times
the time of sorted input, with peak RSS near the sorted import's. Every import must report all the
entities written and none failed, and the table must hold them all. Exits non-zero if one does not."""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from azure.data.tables import TableServiceClient

from bench import machine
from bench.process import BenchFailed, Run, run
from localdev import azurite
from localdev.sample import candidates
from tablebackup.core import wirejson
from tablebackup.core.entities import service_order
from tablebackup.transfer import keyorder

ENTITIES = 40_000
ROUNDS = 3
SPEED_GOAL = 1.5  # shuffled input at most this many times the time of sorted input
MEMORY_GOAL = 1.2  # and its peak RSS at most this many times the sorted import's
PER_PARTITION = 1_000  # Azurite slows down as one partition grows


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def write_inputs(folder: Path, count: int) -> tuple[Path, Path]:
    """The same `count` sample entities as NDJSON twice: in key order, and shuffled."""
    entities = []
    for index, entity in enumerate(candidates(count)):
        entity["PartitionKey"] = f"{entity['PartitionKey']} {index // PER_PARTITION:04d}"
        entities.append(entity)
    entities.sort(key=service_order)
    in_order, shuffled = folder / "in-order.ndjson", folder / "shuffled.ndjson"
    in_order.write_bytes(b"".join(wirejson.dumps(entity) + b"\n" for entity in entities))
    random.Random(count).shuffle(entities)
    shuffled.write_bytes(b"".join(wirejson.dumps(entity) + b"\n" for entity in entities))
    return in_order, shuffled


def import_file(env: dict[str, str], path: Path, table: str, expected: int) -> tuple[Run, dict]:
    result = run([sys.executable, "-m", "tablebackup", "import", "--table", table, "--input", str(path), "--json"], env)
    try:
        report = json.loads(result.stdout)
    except ValueError:
        raise BenchFailed(f"import of {path.name} printed no report: {result.stdout.strip()[:300]!r}") from None
    if (report.get("imported"), report.get("failed")) != (expected, 0):
        raise BenchFailed(f"import of {path.name} into {table} reported {result.stdout.strip()[:500]}")
    listed = run([sys.executable, "-m", "bench.list_entities", table], env)  # untimed: the table holds them
    if listed.stdout.strip() != str(expected):
        raise BenchFailed(f"{table} holds {listed.stdout.strip()} entities after the import, expected {expected}")
    # Untimed: so every run writes into an Azurite of the same size (in memory, it slows as it grows).
    TableServiceClient.from_connection_string(env["AZURE_STORAGE_CONNECTION_STRING"]).delete_table(table)
    return result, report


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.import_order", description=__doc__)
    parser.add_argument("--entities", type=int, default=ENTITIES)
    args = parser.parse_args()
    if args.entities < 10:
        parser.error("--entities must be at least 10")
    count = args.entities
    say("starting Azurite (in memory)")
    server = azurite.start(in_memory=True)
    sorted_runs: list[Run] = []
    shuffled_runs: list[Run] = []
    note = ""
    try:
        env = {
            **os.environ,
            "AZURE_STORAGE_CONNECTION_STRING": server.connection_string,
            "BACKUP_BLOB_CONNECTION_STRING": server.connection_string,
            "BACKUP_CONTAINER": "bench-backups",
        }
        with tempfile.TemporaryDirectory(prefix="bench-import-order-") as folder:
            in_order, shuffled = write_inputs(Path(folder), count)
            for round_number in range(1, ROUNDS + 1):
                started = time.perf_counter()
                # Which goes first alternates, so neither always follows the other's load.
                order = ((in_order, sorted_runs), (shuffled, shuffled_runs))
                for path, runs in order if round_number % 2 else reversed(order):
                    result, said = import_file(env, path, f"{path.stem.replace('-', '')}{round_number}", count)
                    runs.append(result)
                    note = next((w for w in said["warnings"] if "key order" in w), note)
                say(
                    f"round {round_number}/{ROUNDS}: sorted {sorted_runs[-1].seconds:.2f} s, "
                    f"shuffled {shuffled_runs[-1].seconds:.2f} s ({time.perf_counter() - started:.1f} s with checks)"
                )
    except BenchFailed as error:
        say(f"bench FAILED: {error}")
        return 1
    finally:
        server.stop()
    report(count, sorted_runs, shuffled_runs, note)
    return 0


def report(count: int, sorted_runs: list[Run], shuffled_runs: list[Run], note: str) -> None:
    print("machine")
    for label, value in machine.describe():
        print(f"  {label:<10} {value}")
    print()
    partitions = -(-count // PER_PARTITION)
    print(
        f"cli import of {count:,} sample entities in {partitions} partitions, NDJSON; whole processes, "
        f"{ROUNDS} runs alternating, median time, max peak RSS"
    )
    print(
        f"  sort runs of at most {keyorder.RUN_ENTITIES:,} entities / {keyorder.RUN_BYTES // 2**20} MiB, "
        f"merged {keyorder.MERGE_FAN_IN} at a time"
    )
    print(f"  {'':<18} {'seconds':>8} {'entities/s':>11} {'peak RSS':>10}   runs (s)")
    for label, runs in (("input in order", sorted_runs), ("input shuffled", shuffled_runs)):
        seconds = statistics.median(r.seconds for r in runs)
        rss = max(r.peak_rss_kib for r in runs) / 1024
        each = " ".join(f"{r.seconds:.2f}" for r in runs)
        print(f"  {label:<18} {seconds:>8.2f} {count / seconds:>11,.0f} {rss:>6.1f} MiB   {each}")
    speed = statistics.median(r.seconds for r in shuffled_runs) / statistics.median(r.seconds for r in sorted_runs)
    memory = max(r.peak_rss_kib for r in shuffled_runs) / max(r.peak_rss_kib for r in sorted_runs)
    for label, ratio, goal in (("time", speed, SPEED_GOAL), ("peak RSS", memory, MEMORY_GOAL)):
        verdict = "goal met" if ratio <= goal else "goal NOT met"
        print(f"  {label + ' shuffled/in order':<26} {ratio:>5.2f}x   (goal <= {goal}x)  {verdict}")
    if note:
        print(f"  import said: {note}")


if __name__ == "__main__":
    sys.exit(main())
