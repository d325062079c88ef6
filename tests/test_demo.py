"""`make demo` leads somewhere: every command it prints after "Next," runs as printed, from a folder
outside the checkout, once its env file is sourced; and the demo runs again on what it left.

The demo runs in a subprocess against this session's Azurite (AZURE_STORAGE_CONNECTION_STRING), with
its own table, container, audit table and queue, and its folder (DEMO_DIR) in a temporary directory.
"""

from __future__ import annotations

import shlex
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from azure.data.tables import TableServiceClient

from localdev.demo import DEMO_ENTITIES
from tablebackup.storage.tablequery import iter_pages, odata_string

ROOT = Path(__file__).resolve().parent.parent
# Only the system's folders: the env file must put the `tablebackup` command on PATH itself.
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


@pytest.fixture
def demo_settings(azurite_connection_string, tmp_path, unique_name) -> dict[str, str]:
    """The environment `make demo` would run in, pointed at this session's Azurite, with names no
    other test uses."""
    return {
        "PATH": SYSTEM_PATH,
        "HOME": str(tmp_path),
        "AZURE_STORAGE_CONNECTION_STRING": azurite_connection_string,
        "DEMO_DIR": str(tmp_path / "demo"),
        "TABLE_NAME": unique_name("demo"),
        "BACKUP_CONTAINER": f"demo-{uuid.uuid4().hex[:12]}",
        "AUDIT_TABLE": unique_name("audit"),
        "AUDIT_REJECTED_TABLE": unique_name("rejected"),
        "AUDIT_PAYLOAD_CONTAINER": f"audit-{uuid.uuid4().hex[:12]}",
        "AUDIT_QUEUE": f"audit-{uuid.uuid4().hex[:12]}",
        "STORAGE_RETRIES": "2",
        "STORAGE_RETRY_BACKOFF_SECONDS": "0.05",
    }


def _run_demo(settings: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    # From the checkout, as `make demo` runs it.
    return subprocess.run(
        [sys.executable, "-m", "localdev.demo", *args],
        cwd=ROOT,
        env=settings,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def _hints(output: str) -> list[str]:
    """The commands printed after the "Next," line, up to the blank line."""
    lines = output.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("Next,"))
    hints = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        assert line.startswith("  "), line
        hints.append(line.strip())
    return hints


def _run_hint(source: str, hint: str, folder: Path) -> subprocess.CompletedProcess:
    """The hint exactly as printed, in bash, after sourcing the env file, in a bare environment."""
    return subprocess.run(
        ["bash", "-c", f"{source} && {hint}"],
        cwd=folder,
        env={"PATH": SYSTEM_PATH, "HOME": str(folder)},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def _entity(service: TableServiceClient, table: str, partition_key: str, row_key: str) -> dict | None:
    query = f"PartitionKey eq {odata_string(partition_key)} and RowKey eq {odata_string(row_key)}"
    for page in iter_pages(service.get_table_client(table), query_filter=query):
        if page:
            return page[0]
    return None


def _option(hint: str, name: str) -> str:
    words = shlex.split(hint, comments=True)
    return words[words.index(name) + 1]


def _check_hints(output: str, table: str, service: TableServiceClient, folder: Path) -> None:
    """Run every hint as printed and check what each one did."""
    source, *commands = _hints(output)
    assert source.startswith("source ")
    words_of = [shlex.split(hint, comments=True) for hint in commands]
    assert {"list-backups", "status", "verify", "restore", "audit", "undelete"} <= {words[1] for words in words_of}
    undelete = next(hint for hint, words in zip(commands, words_of, strict=True) if words[1] == "undelete")
    deleted = (_option(undelete, "--partition-key"), _option(undelete, "--row-key"))
    assert _entity(service, table, *deleted) is None  # the demo deleted it
    for hint, words in zip(commands, words_of, strict=True):
        assert words[0] == "tablebackup" or words[:4] == ["python", "-m", "pip", "install"], hint
        result = _run_hint(source, hint, folder)
        assert result.returncode == 0, f"{hint}\n{result.stdout}\n{result.stderr}"
        if words[0] != "tablebackup":
            continue
        assert result.stdout.strip(), hint
        if words[1] == "audit":
            assert any("DELETE" in line and deleted[1] in line for line in result.stdout.splitlines()), result.stdout
            assert "UPDATE" in result.stdout
        elif words[1] == "undelete":
            restored = _entity(service, table, *deleted)
            assert restored is not None and restored["email"].startswith("candidate")
        elif words[1] == "restore" and "--replay-audit" in words:
            # The table at the instant: the updates made before it replayed, the entity deleted after it there.
            target = service.get_table_client(_option(hint, "--target"))
            assert _entity(service, target.table_name, *deleted) is not None
            assert sum(1 for page in iter_pages(target) for entity in page if entity.get("stage")) == 3
        elif words[1] == "restore":
            target = service.get_table_client(_option(hint, "--target"))
            assert sum(len(page) for page in iter_pages(target, select=["PartitionKey"])) == DEMO_ENTITIES


def test_every_hint_of_the_demo_runs_as_printed_and_the_demo_runs_again(
    demo_settings, azurite_connection_string, tmp_path
):
    table = demo_settings["TABLE_NAME"]
    service = TableServiceClient.from_connection_string(azurite_connection_string)
    elsewhere = tmp_path / "elsewhere"  # outside the checkout
    elsewhere.mkdir()

    first = _run_demo(demo_settings)

    assert first.returncode == 0, first.stdout + first.stderr
    assert f"Seeded table {table!r}: {DEMO_ENTITIES} entities" in first.stdout
    env_file = Path(demo_settings["DEMO_DIR"]) / "env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600  # it holds a connection string
    assert (Path(demo_settings["DEMO_DIR"]) / "status.html").exists()
    _check_hints(first.stdout, table, service, elsewhere)

    again = _run_demo(demo_settings)

    assert again.returncode == 0, again.stdout + again.stderr
    assert f"Found table {table!r} left by an earlier run: {DEMO_ENTITIES} entities, 1 backup(s)" in again.stdout
    assert "Seeded" not in again.stdout
    _check_hints(again.stdout, table, service, elsewhere)


def test_the_demo_refuses_a_real_storage_account_and_writes_nothing(tmp_path):
    settings = {
        "PATH": SYSTEM_PATH,
        "HOME": str(tmp_path),
        "DEMO_DIR": str(tmp_path / "demo"),
        # A real account's shape (this key is not a real key): the demo must not write sample data there.
        "AZURE_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=https;AccountName=prodaccount;AccountKey=Zm9vYmFy;"
        "EndpointSuffix=core.windows.net",
    }

    result = _run_demo(settings)

    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert "not Azurite" in line and "Zm9vYmFy" not in line
    assert not (tmp_path / "demo").exists()
