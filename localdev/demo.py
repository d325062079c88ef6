"""`make demo`: Azurite, a sample `candidates` table, the daily backup run as the timer runs it,
the backups listed, the daily verification and a drill, and last the protection status, printed and
written as the status page to .demo/status.html."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from localdev import azurite
from localdev.host import QueueOutput, deliver
from localdev.sample import seed_table

DEMO_TABLE = "candidates"
DEMO_ENTITIES = 300
STATUS_PAGE = Path(".demo") / "status.html"


def _say(text: str = "") -> None:
    print(text, flush=True)


def main() -> int:
    started = azurite.ensure_local()
    _say(f"1. Azurite {'started in the background (stop it with `make azurite-stop`)' if started else 'is running'}")
    for name in ("AZURE_STORAGE_CONNECTION_STRING", "BACKUP_BLOB_CONNECTION_STRING"):
        os.environ.setdefault(name, "UseDevelopmentStorage=true")
    os.environ.setdefault("TABLE_NAME", DEMO_TABLE)
    os.environ.setdefault("BACKUP_TABLES", DEMO_TABLE)

    from azure.functions.timer import TimerRequest

    from function_app import app
    from tablebackup.cli.app import main as cli
    from tablebackup.core.clients import Storage
    from tablebackup.repository import catalog
    from tablebackup.repository.backupformat import read_data_lines

    storage = Storage.from_settings()
    seeded = seed_table(storage.tables, DEMO_TABLE, DEMO_ENTITIES)
    _say(
        f"2. Seeded table {DEMO_TABLE!r}: {seeded} entities in 5 partitions with every EDM type "
        "(Int64 extremes, 7-digit DateTimes, NaN/±Infinity/2.0 Doubles, Guid, Binary, unicode keys)"
    )

    functions = {f.get_function_name(): f for f in app.get_functions()}
    daily = functions["backup_daily"]
    schedule = daily.get_trigger().schedule
    _say(f"3. Running the daily backup as the timer does (schedule {schedule}, by default 0 0 2 * * *):")
    jobs = QueueOutput()
    daily.get_user_function()(TimerRequest(past_due=False), jobs)
    _say(f"   backup_daily planned the run and queued {len(jobs.messages)} work item(s) on backup-jobs;")
    failed = deliver(functions["backup_worker"].get_user_function(), jobs.messages)
    _say("   backup_worker ran them, as the Functions host would" + (f" ({len(failed)} FAILED)" if failed else ""))

    newest = catalog.latest_backup(storage.backups, DEMO_TABLE)
    _say(
        f"   backup {newest.backup}: {newest.entities} entities, {newest.bytes} bytes gzip, "
        f"sha256 {newest.sha256[:16]}…, in container {storage.settings.backup_container!r}"
    )
    first = next(iter(read_data_lines(storage.backups, newest))).decode().strip()
    _say(f"   its first line: {first[:240]}…")

    _say("4. python -m tablebackup list-backups --table candidates")
    code = cli(["list-backups", "--table", DEMO_TABLE])

    _say("5. Verifying as the daily timer does, and a DR drill as the monthly timer does:")
    functions["verify_daily"].get_user_function()(TimerRequest(past_due=False))
    code = code or cli(["drill", "--table", DEMO_TABLE])

    page = STATUS_PAGE.resolve()
    page.parent.mkdir(exist_ok=True)
    _say(f"6. python -m tablebackup status --page {STATUS_PAGE}")
    code = code or cli(["status", "--page", str(page)])
    _say(f"   the status page (as GET /api/status/page serves it) is in {page}")
    _say()
    _say("Next: `python -m tablebackup backup --table candidates --json`, or `func start` (see README).")
    return code


if __name__ == "__main__":
    sys.exit(main())
