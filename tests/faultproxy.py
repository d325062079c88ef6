"""A real HTTP proxy on loopback in front of Azurite that can answer the next N requests with an
error status, or hold them past the client's timeout, to exercise retries against real traffic.

`after(...)` makes the ambiguous faults: the request reaches Azurite and is applied, then the answer
is lost: replaced by an error status, the connection dropped, held past the client's read timeout,
or its body cut off halfway.

`hold(...)` makes a gate: the N-th matching request waits at the proxy, not yet forwarded, until
the test releases it, so a test can act (send SIGINT, say) while that request is surely in flight."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length"}


@dataclass
class AfterFault:
    """A fault applied after the request went through to Azurite."""

    what: int | str  # an HTTP status, "drop", "hang" or "cut"
    method: str | None = None
    path: str | None = None  # a substring of the request path
    times: int = 1

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and self.method in (None, method) and (self.path is None or self.path in path)


@dataclass
class Gate:
    """Holds the `nth` request matching method and path until released, then forwards it."""

    nth: int
    method: str | None = None
    path: str | None = None
    timeout: float = 60.0  # a test that never releases fails instead of hanging
    matched: int = 0

    def __post_init__(self) -> None:
        self.reached = threading.Event()  # the held request is at the proxy
        self.released = threading.Event()

    def release(self) -> None:
        self.released.set()

    def wait_reached(self, timeout: float = 60.0) -> bool:
        return self.reached.wait(timeout)


class FaultProxy:
    def __init__(self, target_port: int):
        self.target_port = target_port
        self.failures: list[int | str] = []  # statuses, or "hang", for the next requests
        self.seen: list[tuple[str, str, int]] = []  # (method, path, status answered)
        self.hang_seconds = 3.0
        self.fail_matching: str | None = None  # answer fail_matching_status to requests whose path contains this
        self.fail_matching_status = 503  # Server Busy; 500 is a fault the writer is less patient with
        self.fail_matching_times: int | None = None  # ... this many times (None: always)
        self.after_faults: list[AfterFault] = []
        # Called with (method, path) before a request goes through: another writer acting meanwhile.
        self.before_forward: Callable[[str, str], None] | None = None
        self.gates: list[Gate] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy._lock:
                    fault = proxy.failures.pop(0) if proxy.failures else None
                if proxy.fail_matching and proxy.fail_matching in self.path:
                    with proxy._lock:
                        if proxy.fail_matching_times is None or proxy.fail_matching_times > 0:
                            fault = proxy.fail_matching_status
                            if proxy.fail_matching_times is not None:
                                proxy.fail_matching_times -= 1
                if fault == "hang":
                    proxy.seen.append((self.command, self.path, 0))
                    time.sleep(proxy.hang_seconds)
                    self.close_connection = True
                    return
                if fault is not None:
                    proxy.seen.append((self.command, self.path, fault))
                    payload = b'{"odata.error":{"code":"ServerBusy","message":{"value":"injected fault"}}}'
                    self.send_response(fault)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if proxy.before_forward:
                    proxy.before_forward(self.command, self.path)
                gate = proxy._take_gate(self.command, self.path)
                if gate is not None:
                    gate.reached.set()
                    gate.released.wait(gate.timeout)
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.target_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                response = upstream.getresponse()
                payload = response.read()
                upstream.close()
                after = proxy._take_after(self.command, self.path)
                if after is None or after.what == "cut":
                    proxy.seen.append((self.command, self.path, response.status))
                    self.send_response(response.status)
                    for name, value in response.getheaders():
                        if name.lower() not in _HOP_HEADERS:
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    # "cut": the headers promise the whole body, half of it comes, the connection ends.
                    self.wfile.write(payload if after is None else payload[: len(payload) // 2])
                    if after is not None:
                        self.wfile.flush()
                        self.close_connection = True
                    return
                proxy.seen.append((self.command, self.path, after.what if isinstance(after.what, int) else 0))
                if after.what == "hang":
                    time.sleep(proxy.hang_seconds)
                if after.what in ("hang", "drop"):
                    self.close_connection = True
                    return
                payload = b'{"odata.error":{"code":"InternalError","message":{"value":"injected fault"}}}'
                self.send_response(after.what)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_MERGE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def after(self, what: int | str, *, method: str | None = None, path: str | None = None, times: int = 1) -> None:
        """Let the next `times` matching requests through to Azurite, then lose their answers."""
        with self._lock:
            self.after_faults.append(AfterFault(what, method, path, times))

    def hold(self, nth: int, *, method: str | None = None, path: str | None = None) -> Gate:
        """Hold the nth matching request (counted from now) until gate.release(); then it goes on."""
        gate = Gate(nth, method, path)
        with self._lock:
            self.gates.append(gate)
        return gate

    def _take_gate(self, method: str, path: str) -> Gate | None:
        with self._lock:
            for gate in self.gates:
                if gate.method in (None, method) and (gate.path is None or gate.path in path):
                    gate.matched += 1
                    if gate.matched == gate.nth:
                        return gate
        return None

    def _take_after(self, method: str, path: str) -> AfterFault | None:
        with self._lock:
            for fault in self.after_faults:
                if fault.matches(method, path):
                    fault.times -= 1
                    return fault
        return None

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        for gate in self.gates:
            gate.release()  # nothing stays held past the test
        self.server.shutdown()
        self.server.server_close()


def _port(connection: str, endpoint: str) -> int:
    return int(connection.split(f"{endpoint}=http://127.0.0.1:")[1].split("/")[0])


@contextmanager
def blobs_through_proxy(monkeypatch, azurite_connection_string: str) -> Iterator[FaultProxy]:
    """Settings whose backup blob endpoint is a FaultProxy in front of Azurite (tables go direct)."""
    from localdev.azurite import connection_string
    from tablebackup.core.settings import get_settings

    table_port = _port(azurite_connection_string, "TableEndpoint")
    with FaultProxy(_port(azurite_connection_string, "BlobEndpoint")) as proxy:
        monkeypatch.setenv("BACKUP_BLOB_CONNECTION_STRING", connection_string(proxy.port, proxy.port, table_port))
        get_settings.cache_clear()
        yield proxy


@contextmanager
def tables_through_proxy(monkeypatch, azurite_connection_string: str) -> Iterator[FaultProxy]:
    """Settings whose table endpoint is a FaultProxy in front of Azurite (blobs go direct)."""
    from localdev.azurite import connection_string
    from tablebackup.core.settings import get_settings

    blob_port = _port(azurite_connection_string, "BlobEndpoint")
    with FaultProxy(_port(azurite_connection_string, "TableEndpoint")) as proxy:
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string(blob_port, blob_port, proxy.port))
        get_settings.cache_clear()
        yield proxy
