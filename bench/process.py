"""Run a command as a whole child process and measure its wall time and its own peak RSS."""

from __future__ import annotations

import os
import subprocess
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


def run(command: list[str], env: dict[str, str]) -> Run:
    # Output goes to files, not pipes: os.wait4 reaps the child, so nothing may wait on pipes meanwhile.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait for it again
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if child.returncode != 0:
        raise BenchFailed(f"{' '.join(command)} exited {child.returncode}:\n{stderr.strip()}")
    return Run(seconds=seconds, peak_rss_kib=usage.ru_maxrss, stdout=stdout)
