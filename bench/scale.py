"""`python -m bench.scale`: backup and restore throughput with 1, 2, 4 and 8 Functions instances
under Azure's throttling, scaled down (localdev.throttleproxy), as a fraction of the simulated
account limit for a table spread over many partitions, and of the partition limit for a table in
one partition.

Each instance is a separate process (bench.instance) that takes messages from the real Azurite
queues and runs the app's registered queue functions, as the Functions host does. The table account
is behind the throttling proxy; blobs (the backups' account) and queues (the host's account) are
direct. Per worker count, on fresh instances:

- backup: the daily run, planned by `runs.start_run` (a full backup, split at the key samples of an
  earlier unmeasured full backup into PART_TARGET_ENTITIES ranges), its messages sent to
  `backup-jobs`; timed from the messages' sending until the run's record says succeeded. Then the
  backup is compared with the table, entity by entity (`tablebackup diff`, untimed).
- restore: `POST /api/restore` of that backup into a new table through the registered `restore_table`
  function (queued: the backup is above RESTORE_HTTP_MAX_ENTITIES), its message sent to
  `restore-jobs`; timed from there until `GET /api/restore/{operation}` says succeeded. Then the
  restored table is compared with the source entity by entity (untimed).

Exits non-zero if an operation fails, a function invocation fails, or the data differs."""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueClient

from bench import machine
from bench.process import BenchFailed
from localdev import azurite
from localdev.sample import candidate
from localdev.throttleproxy import Limits, throttled
from tablebackup.storage.tablewriter import submit_operations, upsert_operations

ROOT = Path(__file__).resolve().parent.parent
WORKERS = (1, 2, 4, 8)
GOAL = 0.85  # of the account limit, at the best worker count
STEADY_STEPS = 8  # counts the proxy must have moved through for a steady rate to mean anything
SPREAD_TABLE = "scalespread"
ONE_TABLE = "scaleone"
CONTAINER = "scale-backups"
BACKUP_QUEUE = "backup-jobs"
RESTORE_QUEUE = "restore-jobs"
# What the measured rows leave out of the comparison: the service sets them on every write.
_SERVICE_SET = {"Timestamp", "Timestamp@odata.type", "odata.etag"}


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Measured:
    seconds: float
    entities: int
    refused: int  # 503s the proxy answered during the run
    setup_seconds: float  # planning the run, or the POST /api/restore (untimed above)
    steady: float  # entities/s while the bulk of the data moved (steady_rate)
    items: int = 0  # the backup's work items

    def fraction(self, limit: float) -> float:
        return self.entities / self.seconds / limit

    def steady_fraction(self, limit: float) -> float:
        return self.steady / limit

    @property
    def fixed_seconds(self) -> float:
        """The time beyond moving the data at the steady rate: starting and finishing."""
        return self.seconds - self.entities / self.steady


@dataclass
class Row:
    workers: int
    backup: Measured | None = None
    restore: Measured | None = None
    failed_invocations: int = 0


def seed(connection_string: str, table: str, entities: int, partitions: int) -> None:
    """`entities` sample entities (every EDM type, ~0.5 KB) in `partitions` partitions, written
    straight to Azurite."""
    service = TableServiceClient.from_connection_string(connection_string)
    with contextlib.suppress(ResourceExistsError):
        service.create_table(table)
    rng = random.Random(11)
    per = -(-entities // partitions)

    def rows():
        index = 0
        for partition in range(partitions):
            key = f"p{partition:04d}" if partitions > 1 else "one"
            for _ in range(min(per, entities - index)):
                yield candidate(index, key, rng)
                index += 1

    written = submit_operations(service.get_table_client(table), upsert_operations(rows())).written
    if written != entities:
        raise BenchFailed(f"seeding {table} wrote {written} entities, expected {entities}")


def settings_env(direct: str, through: str, extra: dict[str, str]) -> dict[str, str]:
    """The app's settings as each instance gets them: tables through the proxy, the rest direct."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("BACKUP", "TABLE", "STORAGE", "AZURE_STORAGE", "BACKUPS__", "TABLES__", "RESTORE"))
    }
    return {
        **env,
        "AZURE_STORAGE_CONNECTION_STRING": through,
        "BACKUP_BLOB_CONNECTION_STRING": direct,
        "AzureWebJobsStorage": direct,
        "BACKUP_CONTAINER": CONTAINER,
        "BACKUP_MODE": "full",
        **extra,
    }


def use_env(env: dict[str, str]) -> None:
    """This process's settings (the planner and the HTTP function run here, as on their instance)."""
    from tablebackup.core.settings import get_settings

    os.environ.clear()
    os.environ.update(env)
    get_settings.cache_clear()


def observer(direct: str):
    """Storage straight to Azurite, for watching and checking: what it reads is not throttled."""
    from tablebackup.core.clients import Storage
    from tablebackup.core.settings import Settings

    return Storage.from_settings(
        Settings(
            AZURE_STORAGE_CONNECTION_STRING=direct, BACKUP_BLOB_CONNECTION_STRING=direct, BACKUP_CONTAINER=CONTAINER
        )
    )


def send(direct: str, queue_name: str, messages: list[str]) -> None:
    queue = QueueClient.from_connection_string(direct, queue_name)
    with contextlib.suppress(ResourceExistsError):
        queue.create_queue()
    for text in messages:
        queue.send_message(base64.b64encode(text.encode()).decode())  # host.json messageEncoding: base64


class Instances:
    """N bench.instance processes on both job queues."""

    def __init__(self, count: int, env: dict[str, str], logs: Path):
        self.processes: list[subprocess.Popen] = []
        self.logs = [logs / f"instance{count}-{index}.log" for index in range(count)]
        for log in self.logs:
            with open(log, "wb") as err:
                self.processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "bench.instance", "--queue", BACKUP_QUEUE, "--queue", RESTORE_QUEUE],
                        cwd=ROOT,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        text=True,
                    )
                )
        for process, log in zip(self.processes, self.logs, strict=True):
            if process.stdout.readline().strip() != "ready":
                self.stop()
                raise BenchFailed(f"an instance did not start:\n{log.read_text()[-2000:]}")

    def stop(self) -> dict[str, dict]:
        """Stop them (running invocations finish) and add up what they did."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        totals: dict[str, dict] = {}
        for process in self.processes:
            out, _ = process.communicate(timeout=300)
            for line in out.splitlines()[-1:]:
                with contextlib.suppress(ValueError):
                    for queue, tally in json.loads(line).items():
                        for name, value in tally.items():
                            totals.setdefault(queue, {}).setdefault(name, 0)
                            totals[queue][name] += value
        return totals

    def errors(self) -> str:
        """The instances' lines that say an invocation failed (their retry lines left out)."""
        lines = [
            line
            for log in self.logs
            if log.exists()
            for line in log.read_text().splitlines()
            if " failed (delivery " in line
        ]
        return "\n".join(lines[-20:])


def wait_for(
    what: str, check: Callable[[], str | None], timeout: float, proxy, table: str, poll: float = 0.1
) -> list[tuple[float, int]]:
    """Poll until check() says succeeded (or failed); a timeout fails the bench. Returns samples of
    (seconds since the start, entities of `table` the proxy let through since). With BENCH_TRACE
    set, the entities each second go to stderr."""
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    base = proxy.counters.by_table.get(table, 0)
    samples: list[tuple[float, int]] = []
    trace, last, mark = os.environ.get("BENCH_TRACE"), base, time.monotonic()
    while True:
        status = check()
        moved = proxy.counters.by_table.get(table, 0)
        samples.append((time.perf_counter() - started, moved - base))
        if trace and time.monotonic() - mark >= 1:
            say(f"    {moved - last:>6} entities/s, {proxy.counters.refused} refused so far")
            last, mark = moved, time.monotonic()
        if status == "succeeded":
            return samples
        if status == "failed":
            raise BenchFailed(f"{what} failed")
        if time.monotonic() > deadline:
            raise BenchFailed(f"{what} did not finish within {timeout:.0f} s (status {status!r})")
        time.sleep(poll)


def steady_rate(samples: list[tuple[float, int]], entities: int) -> float:
    """Entities/s while the bulk of the data moved: from the time 5% of it had gone through the
    proxy to the time 95% had, leaving out the start (instances taking messages, checks before
    the first write) and the finish (last items' records, the manifest)."""
    low = next(((t, n) for t, n in samples if n >= 0.05 * entities), samples[-1])
    high = next(((t, n) for t, n in samples if n >= 0.95 * entities), samples[-1])
    steps = len({n for t, n in samples if low[0] <= t <= high[0]})
    # A table read in a few pages moves in a few steps of 1,000: no rate to speak of in between.
    return (high[1] - low[1]) / (high[0] - low[0]) if steps >= STEADY_STEPS else float("nan")


def backup_run(direct: str, proxy, table: str, entities: int, timeout: float) -> tuple[Measured, str]:
    """The daily run of `table` (this process's settings), its work items on the queue; returns the
    measurement and the backup's id."""
    from tablebackup.backup import runs
    from tablebackup.core.clients import Storage

    watcher = observer(direct)
    started = time.perf_counter()
    run, messages = runs.start_run(Storage.from_settings(), datetime.now(UTC))
    planned = time.perf_counter() - started
    if not messages:
        raise BenchFailed(f"the daily run planned nothing for {table}")
    backup = json.loads(messages[0])["backup"]
    refused = proxy.counters.refused
    started = time.perf_counter()
    send(direct, BACKUP_QUEUE, messages)
    samples = wait_for(
        f"backup run {run} ({len(messages)} items)",
        lambda: runs.run_status(watcher, run)["status"],
        timeout,
        proxy,
        table,
    )
    seconds = time.perf_counter() - started
    say(f"  backup of {table}: {len(messages)} work items, {seconds:.1f} s")
    return Measured(
        seconds, entities, proxy.counters.refused - refused, planned, steady_rate(samples, entities), len(messages)
    ), backup


def check_backup(env: dict[str, str], table: str, backup: str, entities: int) -> None:
    """The backup holds the table exactly: `tablebackup diff` against the live table, untimed."""
    from tablebackup.repository import catalog

    manifest = catalog.read_manifest(observer(env["BACKUP_BLOB_CONNECTION_STRING"]).backups, backup)
    if manifest.entities != entities:
        raise BenchFailed(f"backup {backup} holds {manifest.entities} entities, expected {entities}")
    direct = {**env, "AZURE_STORAGE_CONNECTION_STRING": env["BACKUP_BLOB_CONNECTION_STRING"]}
    result = subprocess.run(
        [sys.executable, "-m", "tablebackup", "diff", "--table", table, "--from", backup, "--json"],
        cwd=ROOT,
        env=direct,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BenchFailed(
            f"backup {backup} differs from {table} (diff exit {result.returncode}): {result.stdout[:500]}"
        )


@functools.cache
def registered() -> dict:
    """The app's registered functions by name (get_functions may be called once per app)."""
    from function_app import app

    return {function.get_function_name(): function for function in app.get_functions()}


def restore_run(direct: str, proxy, table: str, backup: str, target: str, entities: int, timeout: float) -> Measured:
    """POST /api/restore through the registered function, its queued message run by the instances."""
    import azure.functions as func

    from localdev.host import QueueOutput
    from tablebackup.restore import operations

    watcher = observer(direct)
    body = json.dumps({"table": table, "backup": backup, "target": target}).encode()
    jobs = QueueOutput()
    started = time.perf_counter()
    answer = registered()["restore_table"].get_user_function()(
        func.HttpRequest("POST", "http://localhost/api/restore", body=body), jobs=jobs
    )
    posted = time.perf_counter() - started
    if answer.status_code != 202 or not jobs.messages:
        raise BenchFailed(f"POST /api/restore answered {answer.status_code}, not queued: {answer.get_body()[:300]!r}")
    operation = json.loads(answer.get_body())["operation"]
    refused = proxy.counters.refused
    started = time.perf_counter()
    send(direct, RESTORE_QUEUE, jobs.messages)
    last: dict = {}

    def check() -> str:
        last.update(operations.status(watcher, operation))
        return last["status"]

    try:
        samples = wait_for(f"restore {operation}", check, timeout, proxy, target)
    except BenchFailed as failure:
        raise BenchFailed(f"{failure}: {last.get('error')} (ranges {last.get('ranges')})") from None
    seconds = time.perf_counter() - started
    say(f"  restore of {backup} into {target}: {seconds:.1f} s")
    return Measured(seconds, entities, proxy.counters.refused - refused, posted, steady_rate(samples, entities))


def compare_tables(direct: str, source: str, target: str) -> int:
    """Entity by entity, in key order, every property and its type; returns the entities compared."""
    from tablebackup.storage.tablequery import iter_pages

    tables = observer(direct).tables

    def entities(name: str):
        for page in iter_pages(tables.get_table_client(name)):
            for entity in page:
                yield {key: value for key, value in entity.items() if key not in _SERVICE_SET}

    compared = 0
    for one, other in itertools.zip_longest(entities(source), entities(target)):
        if one != other:
            where = (one or other or {}).get("PartitionKey"), (one or other or {}).get("RowKey")
            raise BenchFailed(f"{target} differs from {source} at {where!r} after {compared} equal entities")
        compared += 1
    return compared


def measure(
    workers: int,
    env: dict[str, str],
    proxy,
    table: str,
    entities: int,
    logs: Path,
    timeout: float,
    sides: set[str],
) -> Row:
    direct = env["BACKUP_BLOB_CONNECTION_STRING"]
    use_env({**env, "BACKUP_TABLES": table})
    row = Row(workers)
    instances = Instances(workers, env, logs)
    try:
        row.backup, backup = backup_run(direct, proxy, table, entities, timeout)
        if "restore" in sides:
            target = f"{table}r{workers}x{int(time.time()) % 100000}"
            row.restore = restore_run(direct, proxy, table, backup, target, entities, timeout)
    finally:
        totals = instances.stop()
        errors = instances.errors()
    row.failed_invocations = sum(tally.get("failed", 0) for tally in totals.values())
    if row.failed_invocations:
        raise BenchFailed(f"{row.failed_invocations} function invocations failed:\n{errors}")
    check_backup(env, table, backup, entities)
    if "restore" in sides:
        compared = compare_tables(direct, table, target)
        if compared != entities:
            raise BenchFailed(f"restored {compared} entities into {target}, expected {entities}")
        observer(direct).tables.delete_table(target)
    if "backup" not in sides:
        row.backup = None
    return row


def report(limits: Limits, args, spread: list[Row], single: list[Row]) -> None:
    print("machine")
    for label, value in machine.describe():
        print(f"  {label:<10} {value}")
    print()
    print(limits.describe())
    print(
        f"instances: separate processes running function_app's queue functions as the host does "
        f"(host.json: batchSize {args.batch_size}, newBatchThreshold {args.new_batch_threshold}); tables through "
        "the throttling proxy, blobs and queues direct"
    )
    print()

    def section(title: str, rows: list[Row], limit: float) -> None:
        print(title)
        print(f"  {'':>9}  {'backup':<41}   {'restore':<41}")
        header = f"{'seconds':>7} {'ent./s':>6} {'end-to-end':>10} {'steady':>6} {'fixed s':>7} {'503s':>4}"
        print(f"  {'instances':>9}  {header}   {header}")
        for row in rows:
            cells = []
            for measured in (row.backup, row.restore):
                if measured is None:
                    cells.append(f"{'-':>7} {'-':>6} {'-':>10} {'-':>6} {'-':>7} {'-':>4}")
                    continue
                steady = measured.steady_fraction(limit)
                steady_cells = (
                    f"{'-':>6} {'-':>7}" if steady != steady else f"{steady:>6.2f} {measured.fixed_seconds:>7.1f}"
                )
                cells.append(
                    f"{measured.seconds:>7.1f} {measured.entities / measured.seconds:>6,.0f} "
                    f"{measured.fraction(limit):>10.2f} {steady_cells} {measured.refused:>4}"
                )
            print(f"  {row.workers:>9}  {cells[0]}   {cells[1]}")

    account, partition = limits.account_per_second, limits.partition_per_second
    items = max((row.backup.items for row in spread if row.backup), default=0)
    section(
        f"{SPREAD_TABLE}: {args.entities:,} entities in {args.partitions} partitions; backup in {items} work items "
        f"(PART_TARGET_ENTITIES {args.part_entities:,}), restore in ranges of ~{args.restore_part_entities:,} "
        f"(RESTORE_PART_ENTITIES); fractions of the account limit ({account:,.0f} entities/s)",
        spread,
        account,
    )
    for side in ("backup", "restore"):
        measured = [(row.workers, getattr(row, side)) for row in spread if getattr(row, side)]
        if measured:
            workers, best = max(measured, key=lambda pair: pair[1].steady_fraction(account) or 0)
            met = best.steady_fraction(account) >= GOAL
            print(
                f"  best {side}: {best.steady_fraction(account):.2f} of the account limit steady "
                f"({best.fraction(account):.2f} end to end) with {workers} instance(s); goal >= {GOAL} steady: "
                f"{'goal met' if met else 'goal NOT met'}"
            )
    print()
    if single:
        section(
            f"{ONE_TABLE}: {args.single_entities:,} entities in one partition; fractions of the partition limit "
            f"({partition:,.0f} entities/s)",
            single,
            partition,
        )
        print()
    notes = [
        "seconds: from the work's messages on the queue to the operation's record saying succeeded (planning",
        "the run and the POST /api/restore came before, untimed). end-to-end: entities / seconds / limit.",
        "steady: the rate while the bulk moved (5% to 95% of the entities through the proxy) / limit. fixed s:",
        "seconds - entities / steady rate, the start (taking messages, a restore's checks and split before its",
        "first write) and the finish (the last items' records and stragglers, the manifest), in simulated time,",
        f"{limits.factor:g} times slower than on Azure. '-': the data moved in too few pages for a steady rate.",
        "A bucket lets one request into debt, so a short run can show a little above its limit. 503s: requests",
        "refused (the SDK retried them). No function invocation failed; every backup equals its table",
        "(tablebackup diff) and every restored table equals its source, entity by entity.",
    ]
    print("\n".join(f"  {line}" for line in notes))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=40_000, help="entities of the table spread over partitions")
    parser.add_argument("--partitions", type=int, default=200, help="its partitions")
    parser.add_argument("--part-entities", type=int, default=2_000, help="PART_TARGET_ENTITIES of the backup")
    parser.add_argument("--restore-part-entities", type=int, default=4_000, help="RESTORE_PART_ENTITIES")
    parser.add_argument("--single-entities", type=int, default=3_000, help="entities of the one-partition table")
    parser.add_argument("--single-workers", type=int, default=1, help="instances for the one-partition table")
    parser.add_argument(
        "--partition-limit", type=float, default=100, help="simulated entities/s per partition (the account: 10x)"
    )
    parser.add_argument("--workers", default=",".join(map(str, WORKERS)), help="instance counts, comma-separated")
    parser.add_argument("--sides", default="backup,restore", help="backup, restore or both")
    args = parser.parse_args()
    workers = [int(n) for n in args.workers.split(",") if n.strip()]
    sides = {side.strip() for side in args.sides.split(",") if side.strip()}
    if not workers or min(workers) < 1 or not sides <= {"backup", "restore"} or not sides:
        parser.error("--workers takes counts >= 1; --sides takes backup, restore or both")
    from bench.instance import QueueSettings

    queues = QueueSettings.from_host_json()
    args.batch_size, args.new_batch_threshold = queues.batch_size, queues.new_batch_threshold
    limits = Limits.scaled(partition_per_second=args.partition_limit)
    saved = dict(os.environ)
    say("starting Azurite (in memory)")
    server = azurite.start(in_memory=True)
    spread: list[Row] = []
    single: list[Row] = []
    try:
        direct = server.connection_string
        for table, count, partitions in (
            (SPREAD_TABLE, args.entities, args.partitions),
            (ONE_TABLE, args.single_entities, 1),
        ):
            if not count:
                continue
            say(f"seeding {table}: {count:,} entities in {partitions} partition(s)")
            seed(direct, table, count, partitions)
        with throttled(direct, limits) as (proxy, through), tempfile.TemporaryDirectory() as logs:
            env = settings_env(
                direct,
                through,
                {
                    "FANOUT_THRESHOLD_ENTITIES": "1000",
                    "PART_TARGET_ENTITIES": str(args.part_entities),
                    "MAX_PARTS": "64",
                    "RESTORE_HTTP_MAX_ENTITIES": "1000",
                    "RESTORE_PART_ENTITIES": str(args.restore_part_entities),
                },
            )
            # One unmeasured full backup of each, straight to Azurite: the key samples the daily run splits at.
            for table in (SPREAD_TABLE, ONE_TABLE) if args.single_entities else (SPREAD_TABLE,):
                say(f"first full backup of {table} (unmeasured, not throttled)")
                result = subprocess.run(
                    [sys.executable, "-m", "tablebackup", "backup", "--table", table, "--json"],
                    cwd=ROOT,
                    env={**env, "AZURE_STORAGE_CONNECTION_STRING": direct},
                    capture_output=True,
                    text=True,
                )
                if result.returncode != 0:
                    raise BenchFailed(
                        f"the first backup of {table} failed: {result.stdout[-500:]}{result.stderr[-500:]}"
                    )
            say(limits.describe())
            # Generous: the slowest expected run (one stream at a quarter of the account) times four.
            timeout = 4 * max(
                args.entities / (limits.account_per_second / 4), args.single_entities / args.partition_limit
            )
            for count in workers:
                say(f"{count} instance(s), {SPREAD_TABLE}")
                spread.append(measure(count, env, proxy, SPREAD_TABLE, args.entities, Path(logs), timeout, sides))
            if args.single_entities:
                say(f"{args.single_workers} instance(s), {ONE_TABLE}")
                single.append(
                    measure(
                        args.single_workers, env, proxy, ONE_TABLE, args.single_entities, Path(logs), timeout, sides
                    )
                )
    except BenchFailed as error:
        say(f"bench FAILED: {error}")
        return 1
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()
    report(limits, args, spread, single)
    return 0


if __name__ == "__main__":
    sys.exit(main())
