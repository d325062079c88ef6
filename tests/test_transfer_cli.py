"""`python -m tablebackup export` and `import` as users run them: separate processes, real Azurite, files,
stdout, exit codes 0/1/2 and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

from tests.test_backup_fidelity import _entities
from tests.test_cli import ROOT
from tests.wire import table_state


def _cli(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tablebackup", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def _error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in lines[0]
    return lines[0]


@pytest.fixture
def fidelity(storage, unique_name):
    client = storage.tables.create_table(unique_name("clix"))
    for entity in _entities():
        client.upsert_entity(entity)
    return client


@pytest.mark.parametrize("fmt", ["ndjson", "json", "csv"])
def test_export_then_import_round_trips(storage, fidelity, unique_name, tmp_path, fmt):
    path = tmp_path / f"copy.{fmt}"
    target = unique_name("clicopy")

    exported = _cli("export", "--table", fidelity.table_name, "--format", fmt, "--output", str(path), "--json")
    imported = _cli("import", "--table", target, "--input", str(path), "--json")

    assert exported.returncode == 0, exported.stderr
    summary = orjson.loads(exported.stdout)
    assert (summary["entities"], summary["file"], summary["bytes"]) == (
        len(_entities()),
        str(path),
        path.stat().st_size,
    )
    assert imported.returncode == 0, imported.stderr
    counts = orjson.loads(imported.stdout)
    assert (counts["imported"], counts["skipped"], counts["failed"], counts["format"]) == (len(_entities()), 0, 0, fmt)
    assert table_state(storage.tables.get_table_client(target)) == table_state(fidelity)


def test_export_writes_a_dated_file_by_default_and_stdout_with_dash(storage, fidelity, tmp_path):
    named = _cli("export", "-t", fidelity.table_name, "--filter", "PartitionKey eq 'types'", cwd=tmp_path)
    streamed = _cli("export", "-t", fidelity.table_name, "--select", "max", "--output", "-")

    assert named.returncode == 0, named.stderr
    [written] = list(tmp_path.iterdir())
    assert written.name.startswith(f"{fidelity.table_name}-export-") and written.suffix == ".ndjson"
    assert f"exported 4 entities of {fidelity.table_name} to {written.name}" in named.stdout.decode()
    assert streamed.returncode == 0 and streamed.stderr == b""
    lines = [orjson.loads(line) for line in streamed.stdout.splitlines()]
    assert len(lines) == len(_entities())
    assert {name for line in lines for name in line if "@" not in name} == {"PartitionKey", "RowKey", "max"}


def test_import_human_output_dry_run_and_modes(storage, fidelity, unique_name, tmp_path):
    path = tmp_path / "t.ndjson"
    assert _cli("export", "-t", fidelity.table_name, "-o", str(path)).returncode == 0
    target = unique_name("climodes")

    dry = _cli("import", "-t", target, "-i", str(path), "--dry-run")
    assert dry.returncode == 0 and f"would import {len(_entities())} entities into {target}" in dry.stdout.decode()
    assert target not in [t.name for t in storage.tables.list_tables()]
    assert _cli("import", "-t", target, "-i", str(path)).returncode == 0
    again = _cli("import", "-t", target, "-i", str(path), "--mode", "missing", "--json")

    assert orjson.loads(again.stdout)["skipped"] == len(_entities())


def test_a_malformed_file_exits_1_and_lists_its_problems(storage, unique_name, tmp_path):
    path = tmp_path / "input.ndjson"
    good = b'{"PartitionKey":"p","RowKey":"%d"}\n'
    path.write_bytes(good % 1 + b"{oops\n" + good % 3 + b'{"PartitionKey":"p"}\n')
    target = unique_name("climal")

    human = _cli("import", "-t", target, "-i", str(path))
    as_json = _cli("import", "-t", target, "-i", str(path), "--json")

    assert human.returncode == as_json.returncode == 1
    assert _error_line(human).startswith(f"error: {path} is malformed: 2 problems; line 2: not JSON")
    assert human.stdout.decode().splitlines()[1] == "line 4: RowKey is missing or not a string"
    listed = orjson.loads(as_json.stdout)
    assert [p["line"] for p in listed["problems"]] == [2, 4] and listed["problem_count"] == 2
    assert target not in [t.name for t in storage.tables.list_tables()]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["export"], 2, "Missing option '--table'"),
        (["export", "-t", "{table}", "--format", "xml"], 2, "'xml' is not one of"),
        (["export", "-t", "{table}", "-o", "-", "--json"], 2, "--json prints to stdout"),
        (["import", "-t", "{table}", "-i", "/no/such/file.ndjson"], 2, "does not exist"),
        (["import", "-t", "{table}", "-i", "{file}", "--mode", "mirror"], 2, "'mirror' is not one of"),
        (["export", "-t", "{table}", "--filter", "age gt", "-o", "{out}"], 1, "invalid filter at position"),
        (
            ["export", "-t", "{table}", "--filter", " or ".join(["age eq 1"] * 16), "-o", "{out}"],
            1,
            "more than 15 comparisons",
        ),
        (["export", "-t", "{table}", "--select", "a b", "-o", "{out}"], 1, "invalid property name 'a b'"),
        (["export", "-t", "nosuchtable1", "-o", "{out}"], 1, "does not exist"),
        (["export", "-t", "{table}", "-o", "{dir}"], 1, "cannot write"),
        (["import", "-t", "bad-name", "-i", "{file}"], 1, "invalid table name"),
    ],
)
def test_errors_are_one_line_with_exit_codes(storage, fidelity, tmp_path, args, code, message):
    data = tmp_path / "in.ndjson"
    data.write_bytes(b'{"PartitionKey":"p","RowKey":"1"}\n')
    out = tmp_path / "out.ndjson"
    values = {"{table}": fidelity.table_name, "{file}": str(data), "{out}": str(out), "{dir}": str(tmp_path)}

    result = _cli(*[values.get(arg, arg) for arg in args])

    assert result.returncode == code, result.stderr
    assert message in _error_line(result)
    if "--json" in args:  # the failure is the one JSON document
        assert orjson.loads(result.stdout) == {"error": _error_line(result).removeprefix("error: "), "exit_code": code}
    else:
        assert result.stdout == b""
    assert not out.exists()  # a failed export leaves no file behind
