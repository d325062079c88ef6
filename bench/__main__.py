"""`python -m bench [--entities N] [--parallel-entities N]`: on its own in-memory Azurite, time
`python -m tablebackup backup` against a process that only lists the same table with the SDK's list_entities(), and
compare the backup's peak RSS on a table ten times smaller. Then time `python -m tablebackup restore` of the big
table's latest backup against a process that copies the small table with one upsert_entity() per entity,
both as entities/s. Then back up 20 small tables in one `python -m tablebackup backup --parallel N` for N = 1, 2
and 4. Last, `python -m tablebackup status` over 200 tables with 90 days of daily backups each (`--only-status`
runs just that). Then the peak RSS of each path whose memory could grow with its data at 1x and 10x
that data (bench.memory; `--only-memory` runs just that). Then `python -m tablebackup diff` of a 60k-entity
table against the live table beside a backup of it, and its peak RSS against a table ten times smaller
(bench.diff; `--only-diff` runs just that). Exits non-zero only if a process fails or miscounts."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from azure.data.tables import TableServiceClient

from bench import diff as diff_bench
from bench import machine, memory, parallel
from bench import status as status_bench
from bench.process import BenchFailed, Run, run
from localdev import azurite
from localdev.sample import seed_table

ROUNDS = 3
SPEED_GOAL = 2.0  # backup at least this many times as fast as list_entities()
MEMORY_GOAL = 1.2  # backup peak RSS on the big table at most this many times that on the small one
RESTORE_GOAL = 4.0  # restore at least this many times as many entities/s as one upsert_entity() per entity
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
    result = run([sys.executable, "-m", "tablebackup", "backup", "--table", table, "--json"], env)
    try:
        report = json.loads(result.stdout)
        entities = [b["entities"] for b in report["backups"]]
    except (ValueError, KeyError, TypeError):
        raise BenchFailed(f"backup of {table} printed no backup report: {result.stdout.strip()!r}") from None
    if entities != [expected] or report["failed"]:
        raise BenchFailed(f"backup of {table} reported {result.stdout.strip()}, expected {expected} entities")
    return result


def restore(env: dict[str, str], table: str, target: str, expected: int) -> Run:
    command = [
        sys.executable,
        "-m",
        "tablebackup",
        "restore",
        "--table",
        table,
        "--backup",
        "latest",
        "--target",
        target,
    ]
    result = run([*command, "--json"], env)
    try:
        report = json.loads(result.stdout)
        restored, written_to = report["restored"], report["target"]
    except (ValueError, KeyError, TypeError):
        raise BenchFailed(f"restore of {table} printed no restore report: {result.stdout.strip()!r}") from None
    if restored != expected or written_to != target:
        raise BenchFailed(f"restore of {table} reported {result.stdout.strip()}, expected {expected} into {target}")
    list_entities(env, target, expected)  # untimed: the target really holds what the report claims
    return result


def upsert_entities(env: dict[str, str], table: str, target: str, expected: int) -> Run:
    result = run([sys.executable, "-m", "bench.upsert_entities", table, target], env)
    if result.stdout.strip() != str(expected):
        raise BenchFailed(f"upsert_entities wrote {result.stdout.strip()} entities into {target}, expected {expected}")
    return result


def median_seconds(runs: list[Run]) -> float:
    return statistics.median(r.seconds for r in runs)


def max_rss_mib(runs: list[Run]) -> float:
    return max(r.peak_rss_kib for r in runs) / 1024


def verdict(met: bool) -> str:
    return "goal met" if met else "goal NOT met"


def report(
    entities: int,
    small: int,
    baseline: list[Run],
    big: list[Run],
    little: list[Run],
    restores: list[Run],
    upserts: list[Run],
) -> None:
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
    print()
    # The naive baseline runs on the small table to keep the bench short; entities/s makes the two comparable.
    print(f"restore into a new empty table each run; whole processes, {ROUNDS} runs alternating, median time")
    print(f"  {'':<24} {'table':<10} {'entities':>8} {'seconds':>8} {'entities/s':>11}   runs (s)")
    rates = []
    for label, table, count, runs in (
        ("upsert_entity baseline", table_name(small), small, upserts),
        ("cli restore", table_name(entities), entities, restores),
    ):
        seconds = median_seconds(runs)
        rates.append(count / seconds)
        each = " ".join(f"{r.seconds:.2f}" for r in runs)
        print(f"  {label:<24} {table:<10} {count:>8,} {seconds:>8.2f} {count / seconds:>11,.0f}   {each}")
    speed = rates[1] / rates[0]
    print(
        f"  {'speed restore/baseline':<24} {speed:>7.2f}x   (entities/s; goal >= {RESTORE_GOAL}x)  "
        f"{verdict(speed >= RESTORE_GOAL)}"
    )
    print(f"  {'cli restore peak RSS':<24} {max_rss_mib(restores):>7.1f} MiB   (max of {ROUNDS} runs)")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--entities", type=int, default=30000, help="big table size; the small one is a tenth")
    parser.add_argument(
        "--parallel-entities",
        type=int,
        default=1500,
        help=f"entities in each of the {parallel.TABLES} tables of the parallel backup",
    )
    parser.add_argument(
        "--status-tables",
        type=int,
        default=status_bench.TABLES,
        help=f"tables (with {status_bench.DAYS} days of daily backups each) in the status measurement",
    )
    parser.add_argument("--only-status", action="store_true", help="measure only the protection status")
    parser.add_argument(
        "--memory-scale",
        type=float,
        default=1.0,
        help="multiplies the 1x data of every memory path (the 10x data is always ten times that)",
    )
    parser.add_argument("--only-memory", action="store_true", help="measure only the memory of each path")
    parser.add_argument(
        "--diff-entities",
        type=int,
        default=diff_bench.ENTITIES,
        help=f"entities in the table diffed against the live table (its memory is compared with a table "
        f"{diff_bench.FACTOR} times smaller)",
    )
    parser.add_argument("--only-diff", action="store_true", help="measure only diff")
    args = parser.parse_args()
    if args.status_tables < 1:
        parser.error("--status-tables must be at least 1")
    if not 0 < args.memory_scale <= 100:
        parser.error("--memory-scale must be above 0 and at most 100")
    if args.diff_entities < 10 * diff_bench.FACTOR:
        parser.error(f"--diff-entities must be at least {10 * diff_bench.FACTOR}")
    if args.only_status:
        return alone(
            lambda server: status_bench.measure(server.connection_string, server.ports, args.status_tables, say),
            status_bench.report,
        )
    if args.only_memory:
        return alone(
            lambda server: memory.measure(server.connection_string, env_for(server), args.memory_scale, say),
            memory.report,
        )
    if args.only_diff:
        return alone(
            lambda server: diff_bench.measure(server.connection_string, env_for(server), args.diff_entities, say),
            diff_bench.report,
        )
    if args.entities < 10:
        parser.error("--entities must be at least 10")
    if args.parallel_entities < 1:
        parser.error("--parallel-entities must be at least 1")
    fanout_tables, per_table = parallel.table_names(), args.parallel_entities
    entities, small = args.entities, args.entities // 10
    big_table, small_table = table_name(entities), table_name(small)

    say("starting Azurite (in memory)")
    server = azurite.start(in_memory=True)
    try:
        seed(server.connection_string, {small_table: small, big_table: entities})
        env = env_for(server)
        baseline: list[Run] = []
        big: list[Run] = []
        little: list[Run] = []
        restores: list[Run] = []
        upserts: list[Run] = []
        for round_number in range(1, ROUNDS + 1):
            baseline.append(list_entities(env, big_table, entities))
            big.append(backup(env, big_table, entities))
            little.append(backup(env, small_table, small))
            # Fresh targets each round, so both write every entity into an empty table.
            restores.append(restore(env, big_table, f"restore{big_table}n{round_number}", entities))
            upserts.append(upsert_entities(env, small_table, f"upsert{small_table}n{round_number}", small))
            say(
                f"round {round_number}/{ROUNDS}: list_entities {baseline[-1].seconds:.2f} s, "
                f"backup {big_table} {big[-1].seconds:.2f} s, backup {small_table} {little[-1].seconds:.2f} s, "
                f"restore {big_table} {restores[-1].seconds:.2f} s, upsert {small_table} {upserts[-1].seconds:.2f} s"
            )
        # Seeded only now, so the sections above run on exactly the Azurite they always did.
        seed(server.connection_string, dict.fromkeys(fanout_tables, per_table))
        azurite_pid = server.process.pid if server.process else None
        fanout = parallel.measure(env, fanout_tables, per_table, ROUNDS, azurite_pid, say)
        status = status_bench.measure(server.connection_string, server.ports, args.status_tables, say)
        paths = memory.measure(server.connection_string, env, args.memory_scale, say)
        diffed = diff_bench.measure(server.connection_string, env, args.diff_entities, say)
    except BenchFailed as error:
        say(f"bench FAILED: {error}")
        return 1
    finally:
        server.stop()
    report(entities, small, baseline, big, little, restores, upserts)
    print()
    parallel.report(fanout_tables, per_table, fanout, ROUNDS)
    print()
    status_bench.report(status)
    print()
    memory.report(paths)
    print()
    diff_bench.report(diffed)
    return 0


def env_for(server) -> dict[str, str]:
    """The measured processes' settings: both accounts on the bench's Azurite."""
    return {
        **os.environ,
        "AZURE_STORAGE_CONNECTION_STRING": server.connection_string,
        "BACKUP_BLOB_CONNECTION_STRING": server.connection_string,
        "BACKUP_CONTAINER": CONTAINER,
    }


def alone(measure, report_section) -> int:
    """One section of the bench on an Azurite of its own."""
    say("starting Azurite (in memory)")
    server = azurite.start(in_memory=True)
    try:
        measured = measure(server)
    except BenchFailed as error:
        say(f"bench FAILED: {error}")
        return 1
    finally:
        server.stop()
    report_section(measured)
    return 0


if __name__ == "__main__":
    sys.exit(main())
