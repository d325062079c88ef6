"""`python -m bench [--entities N]`: on its own in-memory Azurite, time `python -m cli backup` against a
process that only lists the same table with the SDK's list_entities(), and compare the backup's peak RSS
on a table ten times smaller. Exits non-zero only if a process fails or miscounts."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from azure.data.tables import TableServiceClient

from bench import machine
from bench.process import BenchFailed, Run, run
from localdev import azurite
from localdev.sample import seed_table

ROUNDS = 3
SPEED_GOAL = 2.0  # backup at least this many times as fast as list_entities()
MEMORY_GOAL = 1.2  # backup peak RSS on the big table at most this many times that on the small one
CONTAINER = "bench-backups"


def say(text: str, end: str = "\n") -> None:
    print(text, end=end, file=sys.stderr, flush=True)


def table_name(entities: int) -> str:
    return f"bench{entities // 1000}k" if entities % 1000 == 0 else f"bench{entities}"


def seed(connection_string: str, tables: dict[str, int]) -> None:
    service = TableServiceClient.from_connection_string(connection_string)
    for table, count in tables.items():
        say(f"seeding {table}: {count} entities ...", end="")
        started = time.perf_counter()
        seed_table(service, table, count)
        say(f" {time.perf_counter() - started:.1f} s")


def list_entities(env: dict[str, str], table: str, expected: int) -> Run:
    result = run([sys.executable, "-m", "bench.list_entities", table], env)
    if result.stdout.strip() != str(expected):
        raise BenchFailed(f"list_entities counted {result.stdout.strip()} entities in {table}, expected {expected}")
    return result


def backup(env: dict[str, str], table: str, expected: int) -> Run:
    result = run([sys.executable, "-m", "cli", "backup", "--table", table, "--json"], env)
    try:
        report = json.loads(result.stdout)
        entities = [b["entities"] for b in report["backups"]]
    except (ValueError, KeyError, TypeError):
        raise BenchFailed(f"backup of {table} printed no backup report: {result.stdout.strip()!r}") from None
    if entities != [expected] or report["failed"]:
        raise BenchFailed(f"backup of {table} reported {result.stdout.strip()}, expected {expected} entities")
    return result


def median_seconds(runs: list[Run]) -> float:
    return statistics.median(r.seconds for r in runs)


def max_rss_mib(runs: list[Run]) -> float:
    return max(r.peak_rss_kib for r in runs) / 1024


def verdict(met: bool) -> str:
    return "goal met" if met else "goal NOT met"


def report(entities: int, small: int, baseline: list[Run], big: list[Run], little: list[Run]) -> None:
    print("machine")
    for label, value in machine.describe():
        print(f"  {label:<10} {value}")
    print()
    print(f"{table_name(entities)}: {entities:,} entities; whole processes, {ROUNDS} runs alternating, median time")
    print(f"  {'':<24} {'seconds':>8} {'entities/s':>11}   runs (s)")
    for label, runs in (("list_entities baseline", baseline), ("cli backup", big)):
        seconds = median_seconds(runs)
        each = " ".join(f"{r.seconds:.2f}" for r in runs)
        print(f"  {label:<24} {seconds:>8.2f} {entities / seconds:>11,.0f}   {each}")
    speed = median_seconds(baseline) / median_seconds(big)
    print(f"  {'speed backup/baseline':<24} {speed:>7.2f}x   (goal >= {SPEED_GOAL}x)  {verdict(speed >= SPEED_GOAL)}")
    print()
    print(f"cli backup peak RSS, max of {ROUNDS} runs")
    for table, count, runs in ((table_name(small), small, little), (table_name(entities), entities, big)):
        print(f"  {table + f' ({count:,})':<24} {max_rss_mib(runs):>7.1f} MiB")
    memory = max_rss_mib(big) / max_rss_mib(little)
    print(f"  {'ratio big/small':<24} {memory:>7.2f}x   (goal <= {MEMORY_GOAL}x)  {verdict(memory <= MEMORY_GOAL)}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--entities", type=int, default=30000, help="big table size; the small one is a tenth")
    args = parser.parse_args()
    if args.entities < 10:
        parser.error("--entities must be at least 10")
    entities, small = args.entities, args.entities // 10
    big_table, small_table = table_name(entities), table_name(small)

    say("starting Azurite (in memory)")
    server = azurite.start(in_memory=True)
    try:
        seed(server.connection_string, {small_table: small, big_table: entities})
        env = {
            **os.environ,
            "AZURE_STORAGE_CONNECTION_STRING": server.connection_string,
            "BACKUP_BLOB_CONNECTION_STRING": server.connection_string,
            "BACKUP_CONTAINER": CONTAINER,
        }
        baseline: list[Run] = []
        big: list[Run] = []
        little: list[Run] = []
        for round_number in range(1, ROUNDS + 1):
            baseline.append(list_entities(env, big_table, entities))
            big.append(backup(env, big_table, entities))
            little.append(backup(env, small_table, small))
            say(
                f"round {round_number}/{ROUNDS}: list_entities {baseline[-1].seconds:.2f} s, "
                f"backup {big_table} {big[-1].seconds:.2f} s, backup {small_table} {little[-1].seconds:.2f} s"
            )
    except BenchFailed as error:
        say(f"bench FAILED: {error}")
        return 1
    finally:
        server.stop()
    report(entities, small, baseline, big, little)
    return 0


if __name__ == "__main__":
    sys.exit(main())
