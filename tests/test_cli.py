"""`python -m tablebackup` as users run it: a separate process, real Azurite, exit codes 0/1/2, exactly one
JSON document with --json, and one-line errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import orjson
import pytest

from localdev.azurite import connection_string, free_port
from localdev.sample import seed_table
from tablebackup.repository import catalog

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tablebackup", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


def test_backup_json_prints_one_document_and_the_backup_is_listed(storage, unique_name):
    tables = [unique_name("cli"), unique_name("cli")]
    for count, table in enumerate(tables, start=1):
        seed_table(storage.tables, table, 100 * count)

    result = run_cli("backup", "--table", tables[0], "--table", tables[1], "--json")

    assert result.returncode == 0, result.stderr
    body = orjson.loads(result.stdout)
    assert [(b["table"], b["entities"]) for b in body["backups"]] == [(tables[0], 100), (tables[1], 200)]
    assert body["failed"] == []
    for b in body["backups"]:
        assert set(b) >= {"table", "backup", "entities", "bytes", "sha256"}
        assert catalog.read_manifest(storage.backups, b["backup"]).bytes == b["bytes"]


def test_list_backups_human_and_json(storage, unique_name):
    table = unique_name("clilist")
    seed_table(storage.tables, table, 25)
    backups = [run_cli("backup", "-t", table, "--json") for _ in range(2)]
    ids = [orjson.loads(r.stdout)["backups"][0]["backup"] for r in backups]

    listed = run_cli("list-backups", "--table", table, "--json")
    human = run_cli("list-backups", "--table", table)

    assert listed.returncode == 0 and human.returncode == 0
    entries = orjson.loads(listed.stdout)["backups"]
    assert [e["backup"] for e in entries] == ids[::-1]
    assert all(e["entities"] == 25 and e["table"] == table and e["taken_at"] for e in entries)
    assert human.stdout.index(ids[1]) < human.stdout.index(ids[0])


def test_backup_human_output_names_the_backup(storage, unique_name):
    table = unique_name("clihuman")
    seed_table(storage.tables, table, 9)

    result = run_cli("backup", "--table", table)

    assert result.returncode == 0
    assert f"backed up {table}: {table}-" in result.stdout and "9 entities" in result.stdout


def test_a_failed_table_exits_1_after_backing_up_the_others(storage, unique_name):
    good, missing = unique_name("ok"), unique_name("missing")
    seed_table(storage.tables, good, 4)

    result = run_cli("backup", "-t", missing, "-t", good, "--json")

    assert result.returncode == 1
    body = orjson.loads(result.stdout)
    assert [b["table"] for b in body["backups"]] == [good]
    assert body["failed"][0]["table"] == missing
    assert missing in _one_line_error(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["backup", "--tabel", "x"], "No such option"),
        (["backup", "--table"], "requires an argument"),
        (["backup", "--table", "abc", "--all"], "not both"),
        (["frobnicate"], "No such command"),
    ],
)
def test_bad_usage_exits_2_with_one_line(env, args, message):
    result = run_cli(*args)

    assert result.returncode == 2
    assert message in _one_line_error(result)
    assert result.stdout == ""


def test_invalid_table_name_exits_1_with_one_line_and_writes_nothing(storage):
    result = run_cli("backup", "--table", "no-dashes-allowed", "--json")

    assert result.returncode == 1
    assert "invalid table name 'no-dashes-allowed'" in _one_line_error(result)
    assert not storage.backups.exists()


def test_missing_setting_is_named(env):
    result = run_cli("backup", env={"AZURE_STORAGE_CONNECTION_STRING": "", "TABLES__tableServiceUri": ""})

    assert result.returncode == 1
    assert "AZURE_STORAGE_CONNECTION_STRING or TABLES__tableServiceUri must be set" in _one_line_error(result)


def test_unreachable_storage_is_one_line(env):
    dead = free_port()
    result = run_cli(
        "list-backups",
        env={"BACKUP_BLOB_CONNECTION_STRING": connection_string(dead, dead, dead), "STORAGE_RETRIES": "0"},
    )

    assert result.returncode == 1
    assert "unreachable" in _one_line_error(result)


def test_help_lists_the_commands(env):
    result = run_cli("--help")

    assert result.returncode == 0
    assert "backup" in result.stdout and "list-backups" in result.stdout


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["restore", "--table", "clijson", "--backup", "nope", "--json"], 1),  # refused by the domain
        (["export", "--table", "clijsonmissing", "--output", "{tmp}/x.ndjson", "--json"], 1),  # no such table
        (["restore", "--table", "clijson", "--json"], 2),  # usage checked in the command's body
        (["verify", "--json"], 2),
        (["backup", "--tabel", "x", "--json"], 2),  # an option that does not parse
        (["audit", "--since", "2026-02-01T00:00:00Z", "--until", "2026-01-01T00:00:00Z", "--json"], 2),
    ],
)
def test_every_failure_under_json_prints_one_error_document(storage, tmp_path, args, code):
    result = run_cli(*(arg.replace("{tmp}", str(tmp_path)) for arg in args))

    assert result.returncode == code
    line = _one_line_error(result)
    assert orjson.loads(result.stdout) == {"error": line.removeprefix("error: "), "exit_code": code}


def test_unreachable_storage_under_json_is_an_error_document(env):
    dead = free_port()
    result = run_cli(
        "list-backups",
        "--json",
        env={"BACKUP_BLOB_CONNECTION_STRING": connection_string(dead, dead, dead), "STORAGE_RETRIES": "0"},
    )

    assert result.returncode == 1
    assert orjson.loads(result.stdout) == {"error": _one_line_error(result).removeprefix("error: "), "exit_code": 1}


def test_version_names_the_command_and_its_version():
    import tablebackup

    result = run_cli("--version")

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"tablebackup {tablebackup.__version__}\n"
    assert (
        tablebackup.__version__.split("+")[0]
        == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    )


def test_help_documents_the_exit_codes(env):
    result = run_cli("--help")

    codes = result.stdout.split("Exit codes:")[1]
    for code, meaning in (
        ("0", "success"),
        ("1", "failure"),
        ("2", "bad usage"),
        ("3", "internal error"),
        ("130", "interrupted"),
    ):
        assert re.search(rf"^\s+{code}\s+{meaning}", codes, re.M), codes


def test_verbose_and_quiet_together_is_bad_usage(env):
    result = run_cli("--verbose", "--quiet", "list-backups")

    assert result.returncode == 2
    assert "--verbose or --quiet" in _one_line_error(result)
