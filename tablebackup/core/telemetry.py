"""Telemetry: Azure Monitor (OpenTelemetry) when the platform's connection string is set, spans
around each operation on a table, and metrics of what it did. Without a connection string the
OpenTelemetry API is a no-op, so local runs and tests pay nothing."""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace


def configure() -> None:
    """Send logs, traces and metrics to Application Insights if APPLICATIONINSIGHTS_CONNECTION_STRING
    is set. Log records' `extra` fields (table, backup, ...) become custom dimensions."""
    # The SDKs log every HTTP request at INFO; keep their warnings only.
    logging.getLogger("azure").setLevel(logging.WARNING)
    if not os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
        return
    from azure.monitor.opentelemetry import configure_azure_monitor

    configure_azure_monitor()


@functools.cache
def _instruments():
    meter = metrics.get_meter("tablebackup")
    return {
        "duration": meter.create_histogram("tablebackup.operation.duration", unit="s"),
        "entities": meter.create_counter("tablebackup.core.entities", unit="{entity}"),
        "bytes": meter.create_counter("tablebackup.bytes", unit="By"),
        "runs": meter.create_counter("tablebackup.operations", unit="{operation}"),
    }


@contextmanager
def operation(name: str, table: str, **attributes: str) -> Iterator[trace.Span]:
    """A span around one operation (backup, restore, verify, ...) on one table, with its duration
    and success recorded as metrics."""
    labels = {"operation": name, "table": table, **attributes}
    started = time.monotonic()
    success = False
    with trace.get_tracer("tablebackup").start_as_current_span(name, attributes=labels) as span:
        try:
            yield span
            success = True
        finally:
            outcome = {**labels, "success": success}
            _instruments()["duration"].record(time.monotonic() - started, outcome)
            _instruments()["runs"].add(1, outcome)


def record_volume(name: str, table: str, entities: int, size: int = 0) -> None:
    """How many entities (and bytes) an operation on a table moved."""
    labels = {"operation": name, "table": table}
    _instruments()["entities"].add(entities, labels)
    if size:
        _instruments()["bytes"].add(size, labels)


def record_outcome(name: str, table: str, ok: bool) -> None:
    """A pass/fail outcome that alerts can count (verification, drill)."""
    _instruments()["runs"].add(1, {"operation": name, "table": table, "success": ok})


# Log records from threads the app starts carry no invocation id (the Functions worker reads it from
# a thread-local of the invocation's own thread) and no current span. A trigger names how a thread
# joins its invocation; every pool the domain starts runs that in each of its threads.
_thread_setup: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "tablebackup_thread_setup", default=None
)


@contextmanager
def invocation(context) -> Iterator[None]:
    """Within this block, threads started by thread_pool() log as part of the Functions invocation
    `context` (azure.functions.Context): its invocation id, as the worker documents for threads."""

    def join() -> None:
        context.thread_local_storage.invocation_id = context.invocation_id

    token = _thread_setup.set(join)
    try:
        yield
    finally:
        _thread_setup.reset(token)


def thread_pool(max_workers: int, thread_name_prefix: str) -> ThreadPoolExecutor:
    """A thread pool whose threads log as part of the current invocation (if any) and under the
    current span, so their records are tied to the operation in Application Insights."""
    setup = _thread_setup.get()
    parent = otel_context.get_current()

    def start() -> None:
        otel_context.attach(parent)
        if setup is not None:
            _thread_setup.set(setup)  # pools started from this thread inherit it
            setup()

    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=thread_name_prefix, initializer=start)
