"""Fixtures written with the Azure Tables JS SDK (tests/js_sdk), as JavaScript applications write
them: it holds strings as UTF-16 and so can store a lone surrogate, which Python SDK users rarely do.

`make setup` installs the SDK; a checkout that has not run it since (a worktree, an older setup)
gets it installed here from the npm registry, pinned by tests/js_sdk/package-lock.json."""

from __future__ import annotations

import fcntl
import json
import subprocess
from pathlib import Path

JS_SDK = Path(__file__).parent / "js_sdk"
_INSTALLED = JS_SDK / "node_modules" / ".installed"


def _installed() -> bool:
    """Installed since the lock file last changed (as make decides)."""
    lock_file = JS_SDK / "package-lock.json"
    return _INSTALLED.exists() and _INSTALLED.stat().st_mtime >= lock_file.stat().st_mtime


def _ensure_installed() -> None:
    if _installed():
        return
    with open(JS_SDK / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers or parallel runs install once
        if _installed():
            return
        subprocess.run(
            ["npm", "ci", "--prefix", str(JS_SDK), "--no-audit", "--no-fund", "--loglevel=error"],
            check=True,
            stdin=subprocess.DEVNULL,
            timeout=300,
        )
        _INSTALLED.touch()


def write_entities(connection_string: str, table: str, *, single: list[dict] = (), batch: list[dict] = ()) -> None:
    """Create `table` and write `single` entities one request each and `batch` in one transaction,
    with the JS SDK. Entities use its spelling (partitionKey, rowKey); a Python str with a lone
    surrogate reaches JavaScript intact, as a JSON escape."""
    _ensure_installed()
    spec = {"connectionString": connection_string, "table": table, "single": list(single), "batch": list(batch)}
    result = subprocess.run(
        ["node", str(JS_SDK / "write_entities.mjs")],
        input=json.dumps(spec, ensure_ascii=True).encode(),
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
