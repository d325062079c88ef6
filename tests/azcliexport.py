"""`az storage entity query --table-name T ... -o json`, made by running the real Azure CLI (the
`azure-cli` package pinned in requirements-azcli.txt, in its own venv `.venv-azcli` as its
dependencies are not the app's) against the test Azurite, so the fixtures are what the tool writes.

Tests that need it skip, naming the install command, only when `.venv-azcli/bin/az` is missing.
Each run of az takes about a second: tests export a table once and share the text.

az runs with a private config directory: no login, telemetry off, and the version check answered
from its cache, so it talks to Azurite and nothing else."""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from azure.data.tables import TableClient

ROOT = Path(__file__).resolve().parent.parent
AZ_VENV = ROOT / ".venv-azcli"
AZ = AZ_VENV / "bin" / "az"
INSTALL = "python3.11 -m venv .venv-azcli && .venv-azcli/bin/pip install -r requirements-azcli.txt"

requires_az = pytest.mark.skipif(
    not AZ.exists(),
    reason=f"the real Azure CLI makes these fixtures and .venv-azcli/bin/az is missing: run make setup, or {INSTALL}",
)


@dataclass(frozen=True)
class AzOutput:
    stdout: str
    stderr: str


def _cli_versions() -> dict:
    """The installed CLI's versions as az's own version check records them (azure/cli/core/util.py)."""
    site = [str(path) for path in AZ_VENV.glob("lib/python*/site-packages")]
    names = {"azure-cli": "azure-cli", "azure-cli-core": "core", "azure-cli-telemetry": "telemetry"}
    return {
        key: {"local": dist.version}
        for dist in metadata.distributions(path=site)
        if (key := names.get(dist.metadata["Name"].lower()))
    }


@functools.cache
def _config_dir() -> str:
    """A config directory az finds ready: telemetry off, and its check for a newer CLI answered by a
    cache it trusts for a day from a time in the far future, so it never looks online."""
    path = Path(tempfile.mkdtemp(prefix="azcli-config-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    (path / "config").write_text("[core]\ncollect_telemetry = false\n")
    check = {"versions": _cli_versions(), "update_time": "9999-01-01 00:00:00.000000"}
    (path / "versionCheck.json").write_text(json.dumps(check))
    return str(path)


def run_az(*args: str) -> AzOutput:
    """`az <args>` as a user runs it, its stdout and stderr; an AssertionError if it fails, and the
    test skipped if az is not installed."""
    if not AZ.exists():
        pytest.skip(requires_az.kwargs["reason"])
    environment = {name: value for name, value in os.environ.items() if not name.startswith(("AZURE_", "AZ_"))}
    environment |= {"AZURE_CONFIG_DIR": _config_dir(), "AZURE_CORE_COLLECT_TELEMETRY": "false"}
    result = subprocess.run(
        [str(AZ), *args], capture_output=True, stdin=subprocess.DEVNULL, env=environment, timeout=120
    )
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 0, f"az {' '.join(args[:3])} failed: {stderr[-2000:]}"
    return AzOutput(result.stdout.decode(), stderr)


def az_entity_query(
    connection_string: str,
    table: str,
    *,
    num_results: int | None = None,
    marker: dict | None = None,
    select: list[str] | None = None,
    query_items: bool = False,
) -> AzOutput:
    """`az storage entity query --table-name <table> --connection-string ... -o json` with the
    options asked: --num-results (one page), --marker (from a page's nextMarker), --select,
    `--query items` (the bare array)."""
    args = ["storage", "entity", "query", "--table-name", table, "--connection-string", connection_string]
    if num_results is not None:
        args += ["--num-results", str(num_results)]
    if marker:
        args += ["--marker", *(f"{name}={value}" for name, value in marker.items())]
    if select:
        args += ["--select", *select]
    if query_items:
        args += ["--query", "items"]
    return run_az(*args, "-o", "json")


def entity_query(client: TableClient, num_results: int | None = None, *, query_items: bool = False) -> str:
    """What `az storage entity query` prints for the table of `client`, on the account the test's
    settings name (AZURE_STORAGE_CONNECTION_STRING)."""
    connection_string = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    return az_entity_query(
        connection_string, client.table_name, num_results=num_results, query_items=query_items
    ).stdout
