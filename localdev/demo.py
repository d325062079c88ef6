"""`make demo`: Azurite, a sample `candidates` table, the daily backup run as the timer runs it,
the backups listed, the daily verification and a drill, changes to the table reported to the audit
trail and written by the audit writer, and last the protection status, printed and written as the
status page. It ends with commands to try next, which run as printed after `source .demo/env`.

Run again, it keeps what an earlier run left (no second seeding) and backs it up again.
`python -m localdev.demo clean` (`make demo-clean`) starts over.

Settings already in the environment are used (and written to the env file): with
AZURE_STORAGE_CONNECTION_STRING set the demo uses that Azurite instead of starting one, but never a
real account, since it writes sample data. DEMO_DIR is where it writes (default: .demo).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import sysconfig
import time
from datetime import UTC, datetime
from pathlib import Path

from localdev import azurite

ROOT = Path(__file__).resolve().parent.parent
DEMO_TABLE = "candidates"
DEMO_ENTITIES = 300
AUDIT_QUEUE = "audit-events"  # local.settings.sample.json's AUDIT_QUEUE
APP_USER = "recruiter@example.com"  # who the sample application says made its changes
LOCAL_STORAGE = "UseDevelopmentStorage=true"


class Refused(Exception):
    """The demo will not run as set up; the message says why and what to do."""


def _say(text: str = "") -> None:
    print(text, flush=True)


def demo_dir() -> Path:
    return Path(os.environ.get("DEMO_DIR") or ROOT / ".demo").resolve()


def _shown(path: Path) -> str:
    """The path as the user would type it: relative to where they are if it is below it."""
    try:
        text = str(path.relative_to(Path.cwd()))
    except ValueError:
        text = str(path)
    return shlex.quote(text)


def _pairs(connection_string: str) -> dict[str, str]:
    pairs = {}
    for part in filter(None, (segment.strip() for segment in connection_string.split(";"))):
        name, _, value = part.partition("=")
        pairs[name.strip().lower()] = value.strip()
    return pairs


def _check_azurite(name: str, value: str) -> None:
    """The demo writes sample data and its settings file: only ever into Azurite."""
    pairs = _pairs(value)
    if pairs.get("usedevelopmentstorage", "").lower() == "true":
        return
    if pairs.get("accountname") != azurite.ACCOUNT:
        raise Refused(
            f"{name} names a storage account that is not Azurite's {azurite.ACCOUNT}: the demo writes "
            f"sample data and only runs against Azurite (unset {name} to let it start one)"
        )


def _storage_settings() -> str:
    """Point the settings at Azurite: the one AZURE_STORAGE_CONNECTION_STRING names, else the local
    one on the default ports, started in the background if none runs. Says which."""
    given = os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "").strip()
    backups = os.environ.get("BACKUP_BLOB_CONNECTION_STRING", "").strip()
    for name, value in (("AZURE_STORAGE_CONNECTION_STRING", given), ("BACKUP_BLOB_CONNECTION_STRING", backups)):
        if value:
            _check_azurite(name, value)
    if given and _pairs(given).get("usedevelopmentstorage", "").lower() != "true":
        endpoint = _pairs(given).get("tableendpoint", "its default endpoints")
        os.environ["BACKUP_BLOB_CONNECTION_STRING"] = backups or given
        return f"1. Azurite: the one AZURE_STORAGE_CONNECTION_STRING names (tables at {endpoint})"
    try:
        started = azurite.ensure_local()
    except RuntimeError as error:  # its ports taken by another program, or it would not start
        raise Refused(str(error)) from None
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = LOCAL_STORAGE
    os.environ["BACKUP_BLOB_CONNECTION_STRING"] = backups or LOCAL_STORAGE
    where = f"ports {azurite.DEFAULT_PORTS[0]}-{azurite.DEFAULT_PORTS[-1]}"
    if started:
        return f"1. Azurite started in the background on {where}, data in .azurite (`make demo-clean` stops it)"
    if azurite.PID_FILE.exists():
        return f"1. Azurite is running on {where}, started in the background earlier, data in .azurite"
    return f"1. Azurite is running on {where} (not started by the demo)"


def _app_settings() -> str:
    """The table and the audit queue: as set in the environment, else the demo's."""
    os.environ.setdefault("TABLE_NAME", DEMO_TABLE)
    table = os.environ["TABLE_NAME"]
    os.environ.setdefault("BACKUP_TABLES", table)
    os.environ.setdefault("AUDIT_QUEUE", AUDIT_QUEUE)
    scheduled = [name.strip().lower() for name in os.environ["BACKUP_TABLES"].split(",")]
    if table.lower() not in scheduled and "*" not in scheduled:
        raise Refused(f"BACKUP_TABLES={os.environ['BACKUP_TABLES']} leaves out TABLE_NAME={table}: unset one of them")
    return table


def _env_file(directory: Path) -> tuple[Path, bool]:
    """Write the settings the demo ran with, and PATH with this venv's scripts first, as a file to
    source. Returns it and whether the `tablebackup` command is installed there."""
    from tablebackup.core.settings import Settings

    scripts = Path(sysconfig.get_path("scripts"))
    names = [field.alias for field in Settings.model_fields.values() if field.alias] + ["AUDIT_QUEUE"]
    lines = [
        "# Written by the demo (python -m localdev.demo): settings for its local Azurite. Use: source <this file>",
        f'export PATH={shlex.quote(str(scripts))}:"$PATH"',
        *(f"export {name}={shlex.quote(os.environ[name])}" for name in names if name in os.environ),
    ]
    path = directory / "env"
    temporary = path.with_suffix(".tmp")
    # Owner-only: it holds connection strings (Azurite's well-known key, but a habit worth keeping).
    temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    temporary.chmod(0o600)
    temporary.replace(path)
    return path, (scripts / "tablebackup").exists()


def _leftover(storage, table: str) -> str | None:
    """What an earlier run left: None if the table is missing or empty."""
    from tablebackup.audit.queries import iter_entries
    from tablebackup.repository import catalog
    from tablebackup.storage.tablequery import iter_pages
    from tablebackup.storage.tables import table_exists

    if not table_exists(storage, table):
        return None
    client = storage.tables.get_table_client(table)
    entities = sum(len(page) for page in iter_pages(client, select=["PartitionKey"]))
    if not entities:
        return None
    backups = len(catalog.backup_ids(storage.backups, table))
    entries = sum(1 for _ in iter_entries(storage, table=table))
    days = storage.settings.audit_query_days
    return f"{entities} entities, {backups} backup(s), {entries} audit entries in the last {days} days"


def _app_image(entity: dict) -> dict:
    """The entity as the application has it: without the service's etag and Timestamp."""
    return {
        name: value
        for name, value in entity.items()
        if not name.startswith("odata.") and name not in ("Timestamp", "Timestamp@odata.type")
    }


def _audited_changes(storage, table: str) -> tuple[list[dict], dict, datetime]:
    """Change the table as an application would, reporting each change to the audit trail: three
    entities updated, then one deleted. Returns the updated entities, the deleted one and an
    instant between the updates and the deletion."""
    from tablebackup.audit.client import AuditClient, audited_table_client
    from tablebackup.storage.tablequery import iter_pages, odata_string

    client = storage.tables.get_table_client(table)

    def first(query_filter: str | None) -> list[dict]:
        return next(iter_pages(client, query_filter=query_filter, page_size=4), [])

    chosen = [_app_image(entity) for entity in first(f"PartitionKey eq {odata_string('CANDIDATE')}") or first(None)]
    if len(chosen) < 2:
        raise Refused(f"table {table!r} has fewer than 2 entities left to change: `make demo-clean` starts over")
    *updated, deleted = chosen
    with AuditClient.from_connection_string(
        os.environ["AZURE_STORAGE_CONNECTION_STRING"], os.environ["AUDIT_QUEUE"]
    ) as audit:
        # As the application would: its own table client, wrapped so that every write is audited
        # (the before image read, the write made, then one message per changed entity).
        audited = audited_table_client(client, audit, user_id=APP_USER)
        for index, before in enumerate(updated):
            change = {
                "reviews": int(before.get("reviews", 0)) + 1,
                "stage": ["screening", "interview", "offer"][index % 3],
            }
            audited.update_entity({"PartitionKey": before["PartitionKey"], "RowKey": before["RowKey"], **change})
            updated[index] = {**before, **change}
        as_of = datetime.now(UTC)
        time.sleep(0.01)  # the deletion comes strictly after the instant
        audited.delete_entity(deleted["PartitionKey"], deleted["RowKey"])
    return updated, deleted, as_of


def run() -> int:
    directory = demo_dir()
    _say(_storage_settings())
    table = _app_settings()

    from azure.functions.timer import TimerRequest

    from function_app import app
    from localdev.host import QueueOutput, deliver, drain_queue
    from localdev.sample import seed_table
    from tablebackup.audit.messages import instant_text
    from tablebackup.cli.app import main as cli
    from tablebackup.core.clients import Storage
    from tablebackup.repository import catalog
    from tablebackup.repository.backupformat import read_data_lines

    storage = Storage.from_settings()
    found = _leftover(storage, table)
    if found:
        _say(f"2. Found table {table!r} left by an earlier run: {found}. Kept as it is, not seeded again")
        _say("   (`make demo-clean` starts over)")
    else:
        seeded = seed_table(storage.tables, table, DEMO_ENTITIES)
        _say(
            f"2. Seeded table {table!r}: {seeded} entities in 5 partitions with every EDM type "
            "(Int64 extremes, 7-digit DateTimes, NaN/±Infinity/2.0 Doubles, Guid, Binary, unicode keys)"
        )

    functions = {f.get_function_name(): f for f in app.get_functions()}
    daily = functions["backup_daily"]
    # The trigger names its setting (%BACKUP_SCHEDULE%), which the host resolves from the app settings.
    setting = daily.get_trigger().schedule.strip("%")
    schedule = os.environ.get(setting, "0 0 2 * * *, its value in local.settings.sample.json")
    _say(f"3. Running the daily backup as the timer does ({setting}: {schedule}):")
    jobs = QueueOutput()
    daily.get_user_function()(TimerRequest(past_due=False), jobs)
    _say(f"   backup_daily planned the run and queued {len(jobs.messages)} work item(s) on backup-jobs;")
    failed = deliver(functions["backup_worker"].get_user_function(), jobs.messages)
    _say("   backup_worker ran them, as the Functions host would" + (f" ({len(failed)} FAILED)" if failed else ""))

    newest = catalog.latest_backup(storage.backups, table)
    _say(
        f"   backup {newest.backup}: {newest.entities} entities, {newest.bytes} bytes gzip, "
        f"sha256 {newest.sha256[:16]}…, in container {storage.settings.backup_container!r}"
    )
    first = next(iter(read_data_lines(storage.backups, newest))).decode().strip()
    _say(f"   its first line: {first[:240]}…")

    _say(f"4. tablebackup list-backups --table {table}")
    code = cli(["list-backups", "--table", table])

    _say("5. Verifying as the daily timer does, and a DR drill as the monthly timer does:")
    functions["verify_daily"].get_user_function()(TimerRequest(past_due=False))
    code = code or cli(["drill", "--table", table])

    updated, deleted, as_of = _audited_changes(storage, table)
    queue = os.environ["AUDIT_QUEUE"]
    _say(
        f"6. The application updated {len(updated)} entities and deleted "
        f"{deleted['PartitionKey']}/{deleted['RowKey']}, sending each change to the audit queue {queue!r} "
        "(through tablebackup.audit.client.audited_table_client);"
    )
    drained = drain_queue(
        functions["audit_writer"].get_user_function(), os.environ["AZURE_STORAGE_CONNECTION_STRING"], queue
    )
    _say(
        f"   audit_writer wrote {drained.delivered} entries to table {storage.settings.audit_table!r}, "
        "as the Functions host would" + (f" ({drained.poisoned} went to the poison queue)" if drained.poisoned else "")
    )

    directory.mkdir(parents=True, exist_ok=True)
    page = directory / "status.html"
    _say(f"7. tablebackup status --page {_shown(page)}")
    code = code or cli(["status", "--page", str(page)])
    _say(f"   the status page (as GET /api/status/page serves it) is in {_shown(page)}")

    env_file, installed = _env_file(directory)
    q = shlex.quote
    key = f"--partition-key {q(deleted['PartitionKey'])} --row-key {q(deleted['RowKey'])}"
    hints = [
        f"source {_shown(env_file)}",
        *(
            []
            if installed
            else [f"python -m pip install --quiet --no-deps -e {q(str(ROOT))}  # the tablebackup command"]
        ),
        f"tablebackup list-backups --table {table}",
        "tablebackup status",
        f"tablebackup verify --table {table}",
        f"tablebackup restore --table {table} --backup latest --target {table}copy  # into a new table",
        f"tablebackup audit --table {table}  # who changed what, with before and after images",
        f"tablebackup undelete --table {table} {key}  # the entity deleted above, from the audit trail",
        f"tablebackup restore --table {table} --as-of {instant_text(as_of)} --replay-audit --target {table}asof"
        "  # the table just before that deletion",
    ]
    _say()
    _say("Next, try the CLI on this data: the first line sets up this shell, the others then run from any folder.")
    for hint in hints:
        _say(f"  {hint}")
    _say()
    _say("Start over with `make demo-clean`; run the function app itself with `func start` (docs/http-api.md).")
    return code


def clean() -> int:
    """Stop the Azurite the demo started (if it did), delete its data (.azurite) and the demo's folder."""
    directory = demo_dir()
    done = False
    if azurite.stop_local():
        _say("stopped the Azurite the demo started")
        done = True
    elif all(azurite.port_open(port) for port in azurite.DEFAULT_PORTS):
        _say(
            f"the Azurite on ports {azurite.DEFAULT_PORTS[0]}-{azurite.DEFAULT_PORTS[-1]} was not started by the demo: "
            "left running, with whatever the demo wrote into it"
        )
        done = True
    for path in (azurite.LOCAL_DIR, directory):
        if path.exists():
            shutil.rmtree(path)
            _say(f"deleted {_shown(path)}")
            done = True
    if not done:
        _say(
            f"nothing to clean: no Azurite started by the demo, no {_shown(azurite.LOCAL_DIR)}, no {_shown(directory)}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv not in ([], ["clean"]):
        print("usage: python -m localdev.demo [clean]", file=sys.stderr)
        return 2
    try:
        return clean() if argv else run()
    except Refused as error:
        print(f"demo: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
