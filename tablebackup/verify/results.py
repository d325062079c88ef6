"""Where verification and drill outcomes go: a row per run in a table, a log record, a metric,
and a best-effort webhook that never hides a failure."""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime

import orjson
import requests
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

from tablebackup.core.clients import Storage
from tablebackup.core.errors import StorageUnavailable
from tablebackup.core.names import table_key

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_SECONDS = 10
# RowKeys that sort newest first: Azure Tables return rows in key order.
_MAX_TICKS = 10**19


def newest_first_key(at: datetime) -> str:
    return f"{_MAX_TICKS - int(at.timestamp() * 1_000_000):020d}"


def save_row(storage: Storage, table: str, partition: str, at: datetime, fields: dict) -> None:
    """Append one row; JSON-able values that aren't strings or numbers are stored as JSON text.
    A row that can't be written (the primary is down during a regional outage) is logged, not
    raised: the outcome itself is still reported, logged and alerted on."""
    entity = {"PartitionKey": partition, "RowKey": newest_first_key(at), "at": at.astimezone(UTC).isoformat()}
    for name, value in fields.items():
        entity[name] = value if isinstance(value, str | int | float | bool) else orjson.dumps(value).decode()
    try:
        with contextlib.suppress(ResourceExistsError):
            storage.tables.create_table(table)
        storage.tables.get_table_client(table).upsert_entity(entity)
    except AzureError as error:
        log.error("recording in table %s failed: %s", table, str(error).splitlines()[0], extra={"table": partition})


def read_rows(storage: Storage, table: str, partition: str | None, limit: int) -> list[dict]:
    """The newest rows first, of one partition or all (history tables stay small). A partition
    is a table's name: rows written under any spelling of it are found."""
    client = storage.tables.get_table_client(table)
    try:
        rows = client.list_entities()
        found = [
            {name: _parsed(value) for name, value in row.items()}
            for row in rows
            if partition is None or table_key(row["PartitionKey"]) == table_key(partition)
        ]
    except AzureError as error:
        if "TableNotFound" in str(error):
            return []
        raise StorageUnavailable(f"reading table {table!r} failed: {str(error).splitlines()[0]}") from error
    found.sort(key=lambda row: row.get("at", ""), reverse=True)
    return found[:limit]


def verification_summary(row: dict) -> dict:
    """What a listing shows of one recorded verification: its outcome, when, and what failed."""
    checks = _parsed(row.get("checks")) if isinstance(row.get("checks"), str) else row.get("checks")
    checks = [check for check in checks or [] if isinstance(check, dict)]
    at = row.get("at")
    return {
        "ok": bool(row.get("ok")),
        "at": at.isoformat() if isinstance(at, datetime) else at,
        "failed": [f"{check.get('name')}: {check.get('detail')}" for check in checks if not check.get("ok")][:3],
    }


def verifications_by_backup(storage: Storage, table: str, limit: int = 1000) -> dict[str, dict]:
    """The last recorded verification of each of the table's backups (verification_summary), from
    its newest `limit` rows: a query per spelling of its partition (rows are keyed newest first)."""
    client = storage.tables.get_table_client(storage.settings.verifications_table)
    rows: list[dict] = []
    try:
        for partition in dict.fromkeys([table_key(table), table]):
            query = f"PartitionKey eq '{partition}'"  # a validated table name: no quote to escape
            for number, row in enumerate(client.query_entities(query, select=["backup", "ok", "at", "checks"])):
                if number >= limit:
                    break
                rows.append(dict(row))
    except ResourceNotFoundError:
        return {}  # nothing verified yet
    except AzureError as error:
        if "TableNotFound" in str(error):
            return {}
        raise StorageUnavailable(f"reading table {client.table_name!r} failed: {str(error).splitlines()[0]}") from error
    found: dict[str, dict] = {}
    for row in sorted(rows, key=lambda row: str(row.get("at") or ""), reverse=True):
        if row.get("backup"):
            found.setdefault(row["backup"], verification_summary(row))
    return found


def _parsed(value):
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def notify(url: str | None, text: str, details: dict) -> None:
    """POST a Teams/Slack-compatible JSON summary; failures are logged, never raised."""
    if not url:
        return
    try:
        response = requests.post(url, json={"text": text, **details}, timeout=WEBHOOK_TIMEOUT_SECONDS)
        if response.status_code >= 300:
            log.warning("notification webhook answered HTTP %s", response.status_code)
    except requests.RequestException as error:
        log.warning("notification webhook failed: %s", error)
