"""`tablebackup diff` at scale, as whole `python -m tablebackup` processes on the bench's Azurite.

A table of ENTITIES sample entities is backed up once (the `--from` side), then changed in known
ways: one entity in CHANGE_EVERY removed, one changed in a property's value, one changed only in a
property's type (Int32 to Double), and as many added. Then, ROUNDS times alternating, a full
`backup` of the table (what every day costs) and `diff --from <that first backup> --output FILE`
against the live table: the diff reads the same table plus the backup, and should cost about what
the backup does. Every diff must report exactly the known counts, and its file one line each.

Memory: the same diff of a table ten times smaller, whose peak RSS the big table's must stay near,
since diff merges the two sides as streams and writes differences as it finds them."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from azure.data.tables import TableServiceClient

from bench.process import BenchFailed, Run, run
from localdev.sample import candidates, seed_table
from tablebackup.storage.tablewriter import submit_operations

ENTITIES = 60_000
FACTOR = 10  # the memory comparison's small table holds ENTITIES / FACTOR
ROUNDS = 3
SPEED_GOAL = 1.3  # diff against the live table at most this many times the backup's time
MEMORY_GOAL = 1.2  # diff peak RSS on the big table at most this many times that on the small one
CHANGE_EVERY = 100  # of each kind of change: about 1% of the entities


@dataclass
class DiffBench:
    entities: int
    small: int
    differences: dict[str, int]
    backups: list[Run]
    diffs: list[Run]
    small_diff: Run


def table_names(entities: int) -> tuple[str, str]:
    return f"diffbig{entities}", f"diffsmall{entities // FACTOR}"


def _changes(count: int) -> tuple[list[tuple[str, dict]], dict[str, int]]:
    """The operations that change a seeded table of `count` sample entities, and the counts a diff
    must then report. Entities are chosen by their index, spread over every sample partition."""
    operations, expected = [], {"added": 0, "removed": 0, "changed": 0}
    for index, entity in enumerate(candidates(count)):
        keys = {"PartitionKey": entity["PartitionKey"], "RowKey": entity["RowKey"]}
        step = index % CHANGE_EVERY
        if step == 0:
            operations.append(("delete", keys))
            expected["removed"] += 1
        elif step == 1:
            operations.append(("merge", {**keys, "name": entity["name"] + " (renamed)"}))
            expected["changed"] += 1
        elif step == 2:
            # Only the type changes: Int32 age becomes the same number as a Double.
            operations.append(("merge", {**keys, "age": float(entity["age"]), "age@odata.type": "Edm.Double"}))
            expected["changed"] += 1
        elif step == 3:
            operations.append(("replace", {**entity, "RowKey": entity["RowKey"] + " added"}))
            expected["added"] += 1
    expected["unchanged"] = count - expected["removed"] - expected["changed"]
    return operations, expected


def _backup(env: dict[str, str], table: str) -> tuple[Run, str]:
    result = run([sys.executable, "-m", "tablebackup", "backup", "--table", table, "--json"], env)
    try:
        report = json.loads(result.stdout)
        [backup] = report["backups"]
        return result, backup["backup"]
    except (ValueError, KeyError, TypeError):
        raise BenchFailed(f"backup of {table} printed no backup report: {result.stdout.strip()!r}") from None


def _diff(env: dict[str, str], table: str, backup: str, expected: dict[str, int]) -> Run:
    """One diff against the live table, its counts and its output file checked."""
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "differences.ndjson"
        command = ["diff", "--table", table, "--from", backup, "--output", str(output), "--json"]
        result = run([sys.executable, "-m", "tablebackup", *command], env, ok_exit=(1,))  # 1: different
        try:
            report = json.loads(result.stdout)
            counts = {name: report[name] for name in expected}
        except (ValueError, KeyError, TypeError):
            raise BenchFailed(f"diff of {table} printed no diff report: {result.stdout.strip()[:300]!r}") from None
        with output.open("rb") as lines:
            written = sum(1 for _ in lines)
    if counts != expected:
        raise BenchFailed(f"diff of {table} counted {counts}, expected {expected}")
    if written != expected["added"] + expected["removed"] + expected["changed"]:
        raise BenchFailed(f"diff of {table} wrote {written} lines to --output, expected one per difference")
    return result


def measure(connection_string: str, env: dict[str, str], entities: int, say: Callable[[str], None]) -> DiffBench:
    service = TableServiceClient.from_connection_string(connection_string)
    small = max(1, entities // FACTOR)
    sides = {}
    for table, count in zip(table_names(entities), (entities, small), strict=True):
        started = time.perf_counter()
        seed_table(service, table, count)
        _, first = _backup(env, table)
        operations, expected = _changes(count)
        submit_operations(service.get_table_client(table), operations, workers=4)
        sides[table] = (first, expected)
        say(f"diff: {table} seeded, backed up and changed in {time.perf_counter() - started:.1f} s")
    big_table, small_table = table_names(entities)
    backups: list[Run] = []
    diffs: list[Run] = []
    for round_number in range(1, ROUNDS + 1):
        backups.append(_backup(env, big_table)[0])
        diffs.append(_diff(env, big_table, *sides[big_table]))
        say(
            f"diff round {round_number}/{ROUNDS}: backup {big_table} {backups[-1].seconds:.2f} s, "
            f"diff {diffs[-1].seconds:.2f} s"
        )
    small_diff = _diff(env, small_table, *sides[small_table])
    return DiffBench(entities, small, sides[big_table][1], backups, diffs, small_diff)


def _verdict(met: bool) -> str:
    return "goal met" if met else "goal NOT met"


def report(bench: DiffBench) -> None:
    big_table, small_table = table_names(bench.entities)
    counts = ", ".join(f"{bench.differences[name]:,} {name}" for name in ("added", "removed", "changed", "unchanged"))
    print(f"diff against the live table: {big_table}, {bench.entities:,} entities ({counts})")
    print(f"  whole processes, {ROUNDS} runs alternating, median time")
    print(f"  {'':<24} {'seconds':>8} {'entities/s':>11}   runs (s)")
    for label, runs in (("cli backup", bench.backups), ("cli diff --output", bench.diffs)):
        seconds = statistics.median(r.seconds for r in runs)
        each = " ".join(f"{r.seconds:.2f}" for r in runs)
        print(f"  {label:<24} {seconds:>8.2f} {bench.entities / seconds:>11,.0f}   {each}")
    ratio = statistics.median(r.seconds for r in bench.diffs) / statistics.median(r.seconds for r in bench.backups)
    print(f"  {'time diff/backup':<24} {ratio:>7.2f}x   (goal <= {SPEED_GOAL}x)  {_verdict(ratio <= SPEED_GOAL)}")
    big_rss = max(r.peak_rss_kib for r in bench.diffs) / 1024
    small_rss = bench.small_diff.peak_rss_kib / 1024
    print(f"  cli diff peak RSS: {small_table} ({bench.small:,}) one run, {big_table} max of {ROUNDS} runs")
    print(f"  {small_table + f' ({bench.small:,})':<24} {small_rss:>7.1f} MiB")
    print(f"  {big_table + f' ({bench.entities:,})':<24} {big_rss:>7.1f} MiB")
    memory = big_rss / small_rss
    print(f"  {'ratio big/small':<24} {memory:>7.2f}x   (goal <= {MEMORY_GOAL}x)  {_verdict(memory <= MEMORY_GOAL)}")
