"""`python -m tablebackup status` and GET /api/status against Azurite, for a table in each state: the real
CLI in its own process, and the registered function with real HttpRequest objects."""

from __future__ import annotations

from datetime import timedelta

import azure.functions as func
import orjson
import pytest

from tablebackup.core.clients import Storage
from tablebackup.repository import catalog
from tablebackup.status.report import account_status
from tests import statuscases
from tests.test_cli import run_cli


@pytest.fixture
def cases(storage, monkeypatch, unique_name):
    return statuscases.build(storage, monkeypatch, unique_name)


def _get(function, params: dict, route: str = "status") -> func.HttpResponse:
    request = func.HttpRequest("GET", f"http://localhost/api/{route}", params=params, body=b"")
    return function.get_user_function()(request)


def _by_table(document: dict) -> dict[str, dict]:
    return {row["table"]: row for row in document["tables"]}


def _assert_cases(document: dict, cases: dict[str, str]) -> None:
    rows = _by_table(document)
    for case, (verdict, words) in statuscases.EXPECTED.items():
        row = rows[cases[case]]
        assert (row["verdict"], case) == (verdict, case), row["reasons"]
        assert words in row["reason"], (case, row["reason"])
        assert "\n" not in row["reason"]


def test_the_cli_tells_each_state_apart_and_exits_1(cases):
    result = run_cli("status", "--json")

    assert result.returncode == 1, result.stderr
    document = orjson.loads(result.stdout)
    _assert_cases(document, cases)
    assert document["verdict"] == "unprotected" and document["ok"] is False
    assert document["counts"] == {"protected": 2, "at risk": 1, "unprotected": 4}
    assert result.stderr == "error: 5 of 7 table(s) not protected\n"
    rows = _by_table(document)
    assert rows[cases["inprogress"]]["in_progress"][0]["backup"] > rows[cases["inprogress"]]["newest_backup"]["backup"]
    assert rows[cases["badverify"]]["verification"]["failed_checks"][0]["name"] == "checksum"
    assert rows[cases["baddrill"]]["drills"]["entity"]["ok"] is False
    assert rows[cases["nobackup"]]["newest_backup"] is None


def test_the_cli_exits_0_when_the_tables_named_are_protected(cases, storage):
    result = run_cli("status", "--table", cases["protected"], "--table", cases["inprogress"], "--json")

    assert result.returncode == 0, result.stderr
    document = orjson.loads(result.stdout)
    assert [row["table"] for row in document["tables"]] == [cases["protected"], cases["inprogress"]]
    newest = catalog.latest_backup(storage.backups, cases["protected"])
    row = document["tables"][0]
    assert row["newest_backup"]["backup"] == newest.backup
    assert (row["newest_backup"]["entities"], row["newest_backup"]["bytes"]) == (40, newest.bytes)
    assert (
        row["retention"]["complete_backups"] == 1 and row["retention"]["oldest_restorable"]["backup"] == newest.backup
    )
    assert [p["backup"] for p in row["trend"]["points"]] == [newest.backup]
    assert document["verdict"] == "protected" and document["reason"] == "all 2 table(s) protected"


def test_the_human_table_names_every_table_and_verdict(cases):
    result = run_cli("status")

    assert result.returncode == 1
    for case, table in cases.items():
        line = next(line for line in result.stdout.splitlines() if table in line)
        assert statuscases.EXPECTED[case][0] in line, line
    assert "unprotected: 4 unprotected" in result.stdout


def test_get_status_answers_the_same_document(cases, functions):
    response = _get(functions["get_status"], {"code": "the-key"})

    assert response.status_code == 200 and response.mimetype == "application/json"
    document = orjson.loads(response.get_body())
    _assert_cases(document, cases)

    named = _get(functions["get_status"], {"table": f"{cases['stale']}, {cases['protected']}"})
    assert [row["table"] for row in orjson.loads(named.get_body())["tables"]] == [cases["stale"], cases["protected"]]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"table": "no-such!"}, "invalid table name"),
        ({"table": "alpha,,beta"}, "expected table names separated by commas"),
        ({"tables": "alpha"}, "tables"),
    ],
)
def test_get_status_refuses_bad_input_with_one_line(env, functions, params, message):
    for name in ("get_status", "get_status_page"):
        response = _get(functions[name], params)
        body = orjson.loads(response.get_body())
        assert response.status_code == 400, body
        assert message in body["error"].lower() and "\n" not in body["error"]


def test_the_status_functions_are_registered_behind_a_function_key(functions):
    for name, route in (("get_status", "status"), ("get_status_page", "status/page")):
        trigger = functions[name].get_trigger()
        assert (trigger.route, trigger.auth_level) == (route, func.AuthLevel.FUNCTION)
        assert [str(m.value if hasattr(m, "value") else m) for m in trigger.methods] == ["GET"]


def test_the_verdict_follows_the_injected_clock(storage, monkeypatch, unique_name):
    table = unique_name("clock")
    manifest = statuscases._protected(storage, table)
    finished = manifest.finished_at

    def verdict(hours: float) -> dict:
        return account_status(Storage.from_settings(), [table], now=finished + timedelta(hours=hours))["tables"][0]

    assert verdict(1)["verdict"] == "protected"
    assert verdict(21)["verdict"] == "at risk"
    assert verdict(21)["reason"] == "the newest complete backup is 21.0 h old, over 80% of the RPO of 26 h"
    assert verdict(26.5)["verdict"] == "unprotected"
    # No drill for 46 days: the drills have stopped (the backup is then also far too old).
    assert "no drill in 45 days" in " | ".join(verdict(46 * 24)["reasons"])
