"""Settings that bindings read as `%NAME%` are resolved by the Functions host from app settings
only, with no default: each one must be set by local.settings.sample.json and by the infra, with
the value docs/configuration.md documents, and the page must say it is required."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.test_infra import _binding_settings

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTED = {
    "BACKUP_SCHEDULE": "0 0 2 * * *",
    "VERIFY_SCHEDULE": "0 30 2 * * *",
    "DRILL_SCHEDULE": "0 0 4 1 * *",
    "PRUNE_SCHEDULE": "0 0 3 * * *",
    "AUDIT_QUEUE": "audit-events",
}


def test_every_binding_setting_is_known(functions):
    assert _binding_settings(functions) == set(DOCUMENTED)


def test_the_sample_sets_every_binding_setting(functions):
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]

    assert {name: sample.get(name) for name in _binding_settings(functions)} == DOCUMENTED


def _bicep_app_setting(bicep: str, name: str) -> str:
    value = re.search(rf"name: '{name}'\s+value: ([^\n]+)", bicep)
    assert value, f"infra/main.bicep does not set {name}"
    expression = value.group(1).strip()
    literal = re.fullmatch(r"'([^']*)'", expression)
    if literal:
        return literal.group(1)
    default = re.search(rf"^param {expression} string = '([^']*)'", bicep, re.MULTILINE)
    assert default, f"{name} is set from {expression}, which has no default"
    return default.group(1)


def test_the_infra_sets_every_binding_setting(functions):
    bicep = (ROOT / "infra" / "main.bicep").read_text()

    assert {name: _bicep_app_setting(bicep, name) for name in _binding_settings(functions)} == DOCUMENTED


def test_the_configuration_page_marks_them_required_with_the_values_the_sample_sets(functions):
    readme = (ROOT / "docs" / "configuration.md").read_text()
    for name in _binding_settings(functions):
        [row] = [line for line in readme.splitlines() if line.startswith(f"| `{name}` |")]
        assert f"required (`{DOCUMENTED[name]}`)" in row, row
    assert "does not resolve to a value" in readme
