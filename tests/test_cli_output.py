"""Long work talks wherever it runs: progress lines on a stderr that is no terminal (cron, CI, a
log), a warning line for each retried storage request (a wrong port is not silence), and --quiet
for neither; results and errors still print."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time

import pytest

from localdev.azurite import connection_string, free_port
from localdev.sample import seed_table
from tablebackup.cli.output import ProgressLines, redact
from tests.faultproxy import tables_through_proxy
from tests.test_cli import ROOT, run_cli

RETRY_LINE = re.compile(
    r"^warning: retrying (?P<what>.+?) (?:in [\d.]+ s )?\(attempt (?P<n>\d+) of (?:at most )?\d+\) after (?P<why>.+)$"
)


def _exported(tmp_path, storage, unique_name, count: int):
    table = unique_name("prog")
    seed_table(storage.tables, table, count)
    path = tmp_path / f"{table}.ndjson"
    exported = run_cli("export", "--table", table, "--output", str(path))
    assert exported.returncode == 0, exported.stderr
    return table, path


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


def test_a_wrong_port_prints_a_retry_line_at_once_then_one_error(env, unique_name):
    dead = free_port()
    command = [sys.executable, "-m", "tablebackup", "export", "--table", unique_name("nowhere"), "--output", "-"]
    # The SDK's first retry comes at once, the next after 2 x 3 s: the line must come before that.
    environment = {
        **os.environ,
        "AZURE_STORAGE_CONNECTION_STRING": connection_string(dead, dead, dead),
        "STORAGE_RETRIES": "2",
        "STORAGE_RETRY_BACKOFF_SECONDS": "3",
    }
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = process.stderr.readline()
        still_running = process.poll() is None
        rest = process.stderr.read()
        process.wait(timeout=120)
    finally:
        process.kill()
        process.stdout.close()
        process.stderr.close()

    assert RETRY_LINE.match(first.rstrip("\n")), first
    assert still_running, "the retry line came only when the command had given up"
    assert f"127.0.0.1:{dead}/" in first and "Connection refused" in first
    lines = (first + rest).splitlines()
    assert process.returncode == 1
    assert [line for line in lines if line.startswith("error: ")] == [lines[-1]]
    assert all(RETRY_LINE.match(line) for line in lines[:-1]), lines
    assert "unreachable" in lines[-1] and "AccountKey" not in first + rest
    assert time.monotonic() - started < 60


def test_a_batch_the_service_answers_503_is_retried_with_a_line(
    storage, unique_name, tmp_path, monkeypatch, azurite_connection_string
):
    _, path = _exported(tmp_path, storage, unique_name, 50)
    target = unique_name("retried")
    with tables_through_proxy(monkeypatch, azurite_connection_string) as proxy:
        proxy.fail_matching, proxy.fail_matching_times = "$batch", 1

        result = run_cli("import", "--table", target, "--input", str(path))

    assert result.returncode == 0, result.stderr
    [line] = result.stderr.splitlines()
    match = RETRY_LINE.match(line)
    assert match, line
    assert re.fullmatch(rf"a \$batch of \d+ operations on table '{target}'", match["what"]), line
    assert (match["n"], match["why"]) == ("2", "HTTP 503")
    assert result.stdout.startswith("imported 50 entities")


def test_a_read_the_service_answers_503_is_retried_with_a_line(
    storage, unique_name, monkeypatch, azurite_connection_string, tmp_path
):
    table = unique_name("readretry")
    seed_table(storage.tables, table, 10)
    with tables_through_proxy(monkeypatch, azurite_connection_string) as proxy:
        proxy.fail_matching, proxy.fail_matching_times = f"/{table}()", 1

        result = run_cli("export", "--table", table, "--output", str(tmp_path / "out.ndjson"))

    assert result.returncode == 0, result.stderr
    [line] = result.stderr.splitlines()
    match = RETRY_LINE.match(line)
    assert match and match["what"].startswith("GET 127.0.0.1:") and match["what"].endswith(f"/{table}()"), line
    assert (match["n"], match["why"]) == ("2", "HTTP 503")
    assert "?" not in match["what"]  # no query string: it may hold a SAS


def test_errors_mask_keys_and_sas_tokens():
    text = (
        "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0;EndpointSuffix=core.windows.net "
        "and https://a.blob.core.windows.net/c/b?sv=2024&sig=abc%2Fdef SharedAccessSignature=sv=1&sig=x"
    )

    masked = redact(text)

    assert "c2VjcmV0" not in masked and "abc%2Fdef" not in masked and "sig=x" not in masked
    assert "AccountKey=***" in masked and "https://a.blob.core.windows.net/c/b?…" in masked
