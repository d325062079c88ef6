"""What the benchmark ran on, for the report."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from localdev.azurite import ROOT


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def azurite_version() -> str:
    try:
        return json.loads((ROOT / "node_modules" / "azurite" / "package.json").read_text())["version"]
    except (OSError, KeyError, ValueError):
        return "unknown"


def describe() -> list[tuple[str, str]]:
    return [
        ("platform", platform.platform()),
        ("cpu", cpu_model()),
        ("cpu count", str(os.cpu_count())),
        ("python", platform.python_version()),
        ("azurite", azurite_version()),
    ]
