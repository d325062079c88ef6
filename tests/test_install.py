"""`pip install .` gives the `tablebackup` command, which works from any folder like `python -m tablebackup`.

The package is installed without its dependencies into a fresh venv that sees this interpreter's
site-packages through a .pth file, so the test installs only the project itself (its build backend
comes from the package index, as it would for a user)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import orjson
import pytest

from localdev.sample import seed_table

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tablebackup",)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin folder of a venv where `pip install <copy of the project>` ran."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    target = base / "venv"
    venv.create(target, with_pip=True)
    site = next((target / "lib").glob("python3*/site-packages"))
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    result = subprocess.run(
        [target / "bin" / "python", "-m", "pip", "install", "--no-deps", "--quiet", str(source)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return target / "bin"


def _run(command: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(command), *args],
        cwd=cwd,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def test_installed_command_helps_and_names_itself(installed, tmp_path):
    result = _run(installed / "tablebackup", "--help", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: tablebackup ")
    for command in ("backup", "list-backups", "restore", "import", "export", "verify", "prune"):
        assert command in result.stdout


def test_installed_command_backs_up_and_lists_from_another_folder(installed, tmp_path, storage, unique_name):
    table = unique_name("inst")
    seed_table(storage.tables, table, 30)

    backed_up = _run(installed / "tablebackup", "backup", "--table", table, "--json", cwd=tmp_path)
    listed = _run(installed / "tablebackup", "list-backups", "--table", table, "--json", cwd=tmp_path)

    assert backed_up.returncode == 0, backed_up.stderr
    assert listed.returncode == 0, listed.stderr
    backup = orjson.loads(backed_up.stdout)["backups"][0]
    assert [b["backup"] for b in orjson.loads(listed.stdout)["backups"]] == [backup["backup"]]
    assert backup["entities"] == 30
    # The installed copy ran, not the checkout: nothing but the venv put the code on the path.
    where = _run(installed / "python", "-c", "import tablebackup; print(tablebackup.__file__)", cwd=tmp_path)
    assert where.stdout.strip().startswith(str(installed.parent)), where.stdout


def test_installed_command_fails_with_one_line_and_exit_2_on_bad_usage(installed, tmp_path):
    result = _run(installed / "tablebackup", "restore", "--table", "abc", cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in result.stderr


def test_python_dash_m_tablebackup_is_the_same_command():
    result = subprocess.run(
        [sys.executable, "-m", "tablebackup", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: tablebackup ")
