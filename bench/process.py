"""Run a command as a whole child process and measure its wall time and its own peak RSS."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from localdev.azurite import ROOT


class BenchFailed(Exception):
    """A measured process failed or reported the wrong result; the benchmark's numbers are void."""


@dataclass
class Run:
    seconds: float
    peak_rss_kib: int  # ru_maxrss is in KiB on Linux
    stdout: str


# A small launcher between the bench and each measured process. Linux carries the RSS high-water
# mark of the process that forks (the bench, grown by seeding and parsing reports) into its child's
# ru_maxrss; the launcher is a fresh small process, so its own child's figure is that child's alone.
_LAUNCHER = """
import os, sys
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as report:
    report.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run(command: list[str], env: dict[str, str], ok_exit: tuple[int, ...] = (0,)) -> Run:
    """ok_exit: the exit codes that are a result, not a failure (verify exits 1 when a check fails)."""
    # Output goes to files, not pipes: os.wait4 reaps the child, so nothing may wait on pipes meanwhile.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile() as rss:
        launched = [sys.executable, "-c", _LAUNCHER, rss.name, *command]
        started = time.perf_counter()
        child = subprocess.Popen(launched, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _, status, _ = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait for it again
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
        peak = rss.read().decode()
    if child.returncode not in ok_exit or not peak.isdigit():
        raise BenchFailed(f"{' '.join(command)} exited {child.returncode}:\n{stderr.strip()}")
    return Run(seconds=seconds, peak_rss_kib=int(peak), stdout=stdout)
