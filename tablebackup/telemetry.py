"""Telemetry: Azure Monitor (OpenTelemetry) when the platform's connection string is set, spans
around each operation on a table, and metrics of what it did. Without a connection string the
OpenTelemetry API is a no-op, so local runs and tests pay nothing."""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

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
        "entities": meter.create_counter("tablebackup.entities", unit="{entity}"),
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
