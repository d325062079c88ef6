"""A real HTTP proxy on loopback in front of Azurite that can answer the next N requests with an
error status, or hold them past the client's timeout, to exercise retries against real traffic."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class FaultProxy:
    def __init__(self, target_port: int):
        self.target_port = target_port
        self.failures: list[int | str] = []  # statuses, or "hang", for the next requests
        self.seen: list[tuple[str, str, int]] = []  # (method, path, status answered)
        self.hang_seconds = 3.0
        self.fail_matching: str | None = None  # answer 503 to requests whose path contains this
        self.fail_matching_times: int | None = None  # ... this many times (None: always)
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
                            fault = 503
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
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.target_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                response = upstream.getresponse()
                payload = response.read()
                proxy.seen.append((self.command, self.path, response.status))
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in _HOP_HEADERS:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                upstream.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_MERGE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _port(connection: str, endpoint: str) -> int:
    return int(connection.split(f"{endpoint}=http://127.0.0.1:")[1].split("/")[0])


@contextmanager
def tables_through_proxy(monkeypatch, azurite_connection_string: str) -> Iterator[FaultProxy]:
    """Settings whose table endpoint is a FaultProxy in front of Azurite (blobs go direct)."""
    from localdev.azurite import connection_string
    from tablebackup.settings import get_settings

    blob_port = _port(azurite_connection_string, "BlobEndpoint")
    with FaultProxy(_port(azurite_connection_string, "TableEndpoint")) as proxy:
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string(blob_port, blob_port, proxy.port))
        get_settings.cache_clear()
        yield proxy
