"""Run the pinned Azurite (node_modules/.bin/azurite) for the demo, the tests and the benchmark."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = ROOT / "node_modules" / ".bin" / "azurite"
# Azurite's well-known development account; this key is public and only works on Azurite.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DEFAULT_PORTS = (10000, 10001, 10002)


def connection_string(blob_port: int, queue_port: int, table_port: int, host: str = "127.0.0.1") -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{blob_port}/{ACCOUNT};"
        f"QueueEndpoint=http://{host}:{queue_port}/{ACCOUNT};"
        f"TableEndpoint=http://{host}:{table_port}/{ACCOUNT};"
    )


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Azurite:
    """An Azurite process this code started, or one that was already running."""

    ports: tuple[int, int, int]
    process: subprocess.Popen | None = None
    workdir: Path | None = None

    @property
    def connection_string(self) -> str:
        return connection_string(*self.ports)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def start(
    ports: tuple[int, int, int] | None = None,
    *,
    location: Path | None = None,
    in_memory: bool = False,
    log: Path | None = None,
    detach: bool = False,
) -> Azurite:
    """Start Azurite on the given ports (default: three free ones) and wait until it listens."""
    if not AZURITE_BIN.exists():
        raise RuntimeError(f"{AZURITE_BIN} is missing: run `make setup` (npm ci) first")
    ports = ports or (free_port(), free_port(), free_port())
    workdir = None
    if location is None and not in_memory:
        location = workdir = Path(tempfile.mkdtemp(prefix="azurite-"))
    command = [str(AZURITE_BIN), "--silent", "--skipApiVersionCheck", "--disableTelemetry"]
    if in_memory:
        command.append("--inMemoryPersistence")
    else:
        location.mkdir(parents=True, exist_ok=True)
        command += ["--location", str(location)]
    command += [
        "--blobPort",
        str(ports[0]),
        "--queuePort",
        str(ports[1]),
        "--tablePort",
        str(ports[2]),
    ]
    with open(log, "ab") if log else open(os.devnull, "wb") as output:  # the child keeps its own copy
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=detach,
        )
    azurite = Azurite(ports=ports, process=process, workdir=workdir)
    deadline = time.monotonic() + 30
    while not all(port_open(port) for port in ports):
        if process.poll() is not None or time.monotonic() > deadline:
            azurite.stop()
            raise RuntimeError(f"Azurite did not start on ports {ports} (see {log or 'its output'})")
        time.sleep(0.1)
    return azurite


def running_or_started(location: Path, log: Path) -> tuple[Azurite, bool]:
    """The Azurite on the default ports, started in the background if none is running.
    Returns it and whether this call started it."""
    if all(port_open(port) for port in DEFAULT_PORTS):
        return Azurite(ports=DEFAULT_PORTS), False
    if any(port_open(port) for port in DEFAULT_PORTS):
        raise RuntimeError(f"some of Azurite's ports {DEFAULT_PORTS} are taken by another program")
    return start(DEFAULT_PORTS, location=location, log=log, detach=True), True


LOCAL_DIR = ROOT / ".azurite"
PID_FILE = LOCAL_DIR / "azurite.pid"
LOG_FILE = LOCAL_DIR / "azurite.log"


def ensure_local() -> bool:
    """Azurite on the default ports with data in .azurite/, started in the background if needed.
    Returns whether it was started now."""
    azurite, started = running_or_started(LOCAL_DIR / "data", LOG_FILE)
    if started:
        PID_FILE.write_text(str(azurite.process.pid))
    return started


def _running(pid: int) -> bool:
    """Whether the process is still there; a zombie (exited, not yet reaped by its new parent)
    holds no port or file any more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill(0) said it is there


def _is_azurite(pid: int) -> bool:
    """Whether the pid is still Azurite, not another program that got the number since."""
    try:
        return b"azurite" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return _running(pid)  # no /proc (macOS): trust the PID file


def stop_local(timeout: float = 30) -> bool:
    """Stop the background Azurite that ensure_local started and wait until it has exited (so its
    data can be deleted); returns whether one was stopped."""
    import signal

    if not PID_FILE.exists():
        return False
    pid = int(PID_FILE.read_text())
    PID_FILE.unlink()
    if not _running(pid) or not _is_azurite(pid):
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _running(pid):
            return True
    raise RuntimeError(f"Azurite (pid {pid}) did not exit")


if __name__ == "__main__":
    import sys

    action = sys.argv[1] if len(sys.argv) > 1 else ""
    if action == "start":
        print("Azurite started on ports 10000-10002" if ensure_local() else "Azurite is already running")
    elif action == "stop":
        print("Azurite stopped" if stop_local() else "no Azurite started by `make azurite` is running")
    else:
        sys.exit("usage: python -m localdev.azurite start|stop")
