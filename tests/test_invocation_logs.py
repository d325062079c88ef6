"""Logs from the threads backup_now starts carry the invocation's id, as the Python worker tags
records, and the `table`/`backup` fields reach Application Insights as custom dimensions (sent to
a local ingestion endpoint, no network)."""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import azure.functions as func
import orjson

from localdev.host import WORKER_THREAD_LOCAL, InvocationContext
from localdev.sample import seed_table
from tests.test_cli import ROOT


class _WorkerLogHandler(logging.Handler):
    """What the worker's handler does with a record: tag it with the invocation id found in its
    thread-local, in the thread that logs it."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.records: list[tuple[str, str | None, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        invocation = getattr(WORKER_THREAD_LOCAL, "invocation_id", None)
        self.records.append((record.getMessage(), invocation, threading.current_thread().name))


def test_backup_now_thread_logs_carry_the_invocation_id(functions, storage, unique_name):
    table = unique_name("invocation")
    seed_table(storage.tables, table, 5)
    handler = _WorkerLogHandler()
    logger = logging.getLogger("tablebackup.backup")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    context = InvocationContext("backup_now")
    request = func.HttpRequest("POST", "http://localhost/api/backups", body=orjson.dumps({"tables": [table]}))
    try:
        response = functions["backup_now"].get_user_function()(request, context)
        WORKER_THREAD_LOCAL.invocation_id = None
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)

    assert response.status_code == 200, response.get_body()
    lines = [(invocation, thread) for message, invocation, thread in handler.records if table in message]
    started = [r for r in handler.records if r[0].startswith("backup started") and table in r[0]]
    complete = [r for r in handler.records if r[0].startswith("backup complete") and table in r[0]]
    assert started and complete
    assert all(thread != threading.current_thread().name for _, thread in lines)  # from worker threads
    assert {invocation for invocation, _ in lines} == {context.invocation_id}


def test_the_backup_now_binding_takes_the_context(functions):
    assert "context" in functions["backup_now"].get_user_function().__code__.co_varnames


_SENDER = r"""
import logging, sys
from tablebackup.core import telemetry
telemetry.configure()
logging.getLogger().setLevel(logging.INFO)
with telemetry.operation("backup", "orders", backup="orders-20261125T020000.000000Z"):
    logging.getLogger("tablebackup.backup.archiver").info(
        "backup complete: table=orders", extra={"table": "orders", "backup": "orders-20261125T020000.000000Z"}
    )
from opentelemetry._logs import get_logger_provider
get_logger_provider().force_flush()
"""


def test_table_and_backup_travel_as_custom_dimensions(tmp_path):
    received: list[dict] = []

    class Ingestion(BaseHTTPRequestHandler):
        def do_POST(self):
            data = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                data = gzip.decompress(data)
            items = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
            items = [item for batch in items for item in (batch if isinstance(batch, list) else [batch])]
            received.extend(items)
            body = json.dumps({"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ingestion)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
            f"IngestionEndpoint=http://127.0.0.1:{server.server_port}/",
            "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
            "OTEL_METRIC_EXPORT_INTERVAL": "600000",
        }
        result = subprocess.run(
            [sys.executable, "-c", _SENDER], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        server.shutdown()

    assert result.returncode == 0, result.stderr
    messages = [item for item in received if item.get("data", {}).get("baseType") == "MessageData"]
    [record] = [m for m in messages if m["data"]["baseData"]["message"].startswith("backup complete")]
    properties = record["data"]["baseData"]["properties"]
    assert properties["table"] == "orders" and properties["backup"] == "orders-20261125T020000.000000Z"
    assert record["tags"]["ai.operation.id"] != "0" * 32  # tied to the backup's span
