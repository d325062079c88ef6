"""Long work talks wherever it runs: progress lines on a stderr that is no terminal (cron, CI, a
log), a warning line for each retried storage request (a wrong port is not silence), and --quiet
for neither; results and errors still print."""

from __future__ import annotations

import io

import pytest

from localdev.azurite import connection_string, free_port
from localdev.sample import seed_table
from tablebackup.cli.output import ProgressLines
from tests.test_cli import run_cli


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_lines_say_the_count_and_the_rate_and_only_what_moved():
    clock, stream = _Clock(), io.StringIO()
    lines = ProgressLines(stream, clock)

    lines.report("backup t1", 0)
    clock.now = 102.0
    lines.report("backup t1", 5_000)
    lines.write()
    lines.write()  # nothing moved since: no line
    lines.report("restore t2", 10)
    lines.write()

    assert stream.getvalue().splitlines() == [
        "progress: backup t1: 5,000 entities (2,500/s)",
        "progress: restore t2: 10 entities",
    ]


@pytest.mark.parametrize("quiet", [False, True])
def test_a_backup_under_cron_prints_progress_lines_unless_quiet(storage, unique_name, quiet):
    table = unique_name("progress")
    seed_table(storage.tables, table, 3_000)

    result = run_cli(
        *(["--quiet"] if quiet else []), "backup", "--table", table, env={"TABLEBACKUP_PROGRESS_SECONDS": "0.01"}
    )

    assert result.returncode == 0, result.stderr
    assert "backed up " + table in result.stdout
    progress = [line for line in result.stderr.splitlines() if line.startswith("progress: ")]
    if quiet:
        assert result.stderr == ""
    else:
        assert progress and all(table in line and " entities" in line for line in progress)


@pytest.mark.parametrize("quiet", [False, True])
def test_a_wrong_port_says_so_at_the_first_retry(env, quiet):
    closed = free_port()
    settings = {
        "AZURE_STORAGE_CONNECTION_STRING": connection_string(closed, closed, closed),
        "BACKUP_BLOB_CONNECTION_STRING": connection_string(closed, closed, closed),
        "STORAGE_RETRIES": "1",
        "STORAGE_RETRY_BACKOFF_SECONDS": "0.05",
    }

    result = run_cli(*(["--quiet"] if quiet else []), "list-backups", "--table", "candidates", env=settings)

    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1
    assert lines[-1].startswith("error: ") and "AccountKey" not in result.stderr
    retries = [line for line in lines if line.startswith("warning: retrying ")]
    if quiet:
        assert lines == [lines[-1]]
    else:
        assert retries and f"127.0.0.1:{closed}" in retries[0] and "(attempt 2 of at most 2)" in retries[0]
        assert "refused" in retries[0].lower()
