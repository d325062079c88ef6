"""Telemetry: Azure Monitor (OpenTelemetry) when the platform's connection string is set."""

from __future__ import annotations

import logging
import os


def configure() -> None:
    """Send logs, traces and metrics to Application Insights if APPLICATIONINSIGHTS_CONNECTION_STRING
    is set. Log records' `extra` fields (table, backup, ...) become custom dimensions."""
    # The SDKs log every HTTP request at INFO; keep their warnings only.
    logging.getLogger("azure").setLevel(logging.WARNING)
    if not os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
        return
    from azure.monitor.opentelemetry import configure_azure_monitor

    configure_azure_monitor()
