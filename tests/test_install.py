"""The wheel, as a user installs it: built from the checkout, it holds the `tablebackup` package and
nothing else at the top level; installed into a fresh venv outside the checkout, its `tablebackup`
command answers --version and every subcommand's --help, and backs up, lists, verifies, reports
status and restores against Azurite from another folder.

The wheel is installed without its dependencies into a venv that sees this interpreter's
site-packages through a .pth file (the pinned versions of requirements.txt), so the test builds
and installs only the project itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import orjson
import pytest

from localdev.sample import seed_table
from tablebackup.cli.app import app
from tests.wire import table_state

ROOT = Path(__file__).resolve().parent.parent


def _quiet_run(command: list, **options) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, **options)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the checkout's tracked files (no build/ left in the checkout)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    tracked = _quiet_run(["git", "ls-files", "-z"], cwd=ROOT, timeout=60).stdout.split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    built = _quiet_run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(base), str(source)],
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    [path] = base.glob("*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The bin folder of a fresh venv, outside the checkout, where the wheel is installed."""
    target = tmp_path_factory.mktemp("venv") / "venv"
    venv.create(target, with_pip=True)
    site = next((target / "lib").glob("python3*/site-packages"))
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    result = _quiet_run([target / "bin" / "python", "-m", "pip", "install", "--no-deps", "-q", str(wheel)], timeout=300)
    assert result.returncode == 0, result.stderr
    return target / "bin"


def _run(installed: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return _quiet_run([str(installed / "tablebackup"), *args], cwd=cwd, env=os.environ.copy(), timeout=120)


def test_the_wheel_holds_the_tablebackup_package_only(wheel):
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}

    assert {name for name in top if not name.endswith(".dist-info")} == {"tablebackup"}
    assert "tablebackup/cli/app.py" in zipfile.ZipFile(wheel).namelist()


def test_the_installed_command_names_its_version_and_helps_with_every_command(installed, tmp_path):
    version = _run(installed, "--version", cwd=tmp_path)
    helped = {name: _run(installed, name, "--help", cwd=tmp_path) for name in app.commands}

    assert version.returncode == 0 and version.stdout.startswith("tablebackup 0.")
    assert "+source" not in version.stdout  # the installed copy's own version, not the checkout's
    for name, result in helped.items():
        assert result.returncode == 0, (name, result.stderr)
        assert result.stdout.startswith(f"Usage: tablebackup {name} "), name
    assert len(helped) >= 15


def test_a_round_trip_through_the_installed_command(installed, tmp_path, storage, unique_name):
    table, copy = unique_name("inst"), unique_name("instcopy")
    seed_table(storage.tables, table, 60)

    backed_up = _run(installed, "backup", "--table", table, "--json", cwd=tmp_path)
    listed = _run(installed, "list-backups", "--table", table, "--json", cwd=tmp_path)
    verified = _run(installed, "verify", "--table", table, "--json", cwd=tmp_path)
    status = _run(installed, "status", "--table", table, "--json", cwd=tmp_path)
    restored = _run(
        installed, "restore", "--table", table, "--backup", "latest", "--target", copy, "--json", cwd=tmp_path
    )

    for result in (backed_up, listed, verified, status, restored):
        assert result.returncode in (0, 1), result.stderr  # status is 1 without a drill: not protected yet
    backup = orjson.loads(backed_up.stdout)["backups"][0]["backup"]
    assert [b["backup"] for b in orjson.loads(listed.stdout)["backups"]] == [backup]
    assert verified.returncode == 0 and orjson.loads(verified.stdout)["ok"] is True
    [row] = orjson.loads(status.stdout)["tables"]
    assert row["newest_backup"]["backup"] == backup and row["verification"]["ok"] is True
    assert restored.returncode == 0 and orjson.loads(restored.stdout)["backup"] == backup
    assert table_state(storage.tables.get_table_client(copy)) == table_state(storage.tables.get_table_client(table))
    # The installed copy ran, not the checkout: nothing but the venv put the code on the path.
    where = _quiet_run([installed / "python", "-c", "import tablebackup; print(tablebackup.__file__)"], cwd=tmp_path)
    assert where.stdout.strip().startswith(str(installed.parent)), where.stdout


def test_bad_usage_is_one_line_and_exit_2(installed, tmp_path):
    result = _run(installed, "restore", "--table", "abc", cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in result.stderr


def test_a_broken_installation_is_an_internal_error_exit_3_not_not_protected(installed, tmp_path, unique_name):
    """A module missing from the installed copy (a broken install) is exit 3, distinct from 1 (a
    failure, or "not protected") and 2 (bad usage): one line on stderr, the JSON error on stdout."""
    package = next((installed.parent / "lib").glob("python3*/site-packages/tablebackup"))
    module = package / "repository" / "erasures.py"
    aside = tmp_path / "erasures.py"
    shutil.move(module, aside)
    try:
        args = ("erase", "--table", unique_name("broken"), "--partition-key", "p", "--row-key", "r", "--reason", "x")
        result = _run(installed, *args, "--json", cwd=tmp_path)
    finally:
        shutil.move(aside, module)

    assert result.returncode == 3
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: internal error: ModuleNotFoundError: ") and "erasures" in line
    assert orjson.loads(result.stdout) == {"error": line.removeprefix("error: "), "exit_code": 3}


def test_python_dash_m_tablebackup_is_the_same_command():
    result = _quiet_run([sys.executable, "-m", "tablebackup", "--help"], cwd=ROOT, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: tablebackup ")
