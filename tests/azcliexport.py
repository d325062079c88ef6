"""What `az storage entity query --table-name T ... > file.json` writes, made the way the Azure CLI
makes it (azure-cli's storage module): its query_entity pages the table with the Azure SDK for Python
(azure-data-tables) and returns {"items": [...], "nextMarker": {"nextpartitionkey", "nextrowkey"}};
transform_entities_result turns bytes into base64 text and UUIDs into text and adds each entity's
metadata as "Timestamp" and "etag"; knack's todict turns an EntityProperty (a named tuple) into
{"edm_type": "Edm.Int64", "value": n} and a datetime into isoformat(); the JSON output is
knack's format_json: json.dumps(..., ensure_ascii=False, indent=2, sort_keys=True, separators=(",", ": ")),
which prints NaN and Infinity bare and non-ASCII text as itself (knack/output.py, read from its source)."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from enum import Enum
from uuid import UUID

from azure.data.tables import EntityProperty, TableClient


def _transformed(entity) -> dict:
    row = dict(entity)
    for name, value in row.items():
        if isinstance(value, bytes):
            row[name] = base64.b64encode(value).decode()
        if isinstance(value, UUID):
            row[name] = str(value)
    row["Timestamp"] = entity.metadata["timestamp"]
    row["etag"] = entity.metadata["etag"]
    return row


def _todict(value):
    if isinstance(value, dict):
        return {name: _todict(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_todict(item) for item in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, EntityProperty):
        return _todict(value._asdict())
    return value


def entity_query(client: TableClient, num_results: int | None = None, *, query_items: bool = False) -> str:
    """The CLI's stdout; `num_results` is --num-results (one page), `query_items` is `--query items`."""
    pages = client.list_entities(results_per_page=num_results).by_page()
    items = []
    for page in pages:
        items += [_transformed(entity) for entity in page]
        if num_results is not None:
            break
    token = pages.continuation_token
    marker = {"nextpartitionkey": token.get("PartitionKey"), "nextrowkey": token.get("RowKey")} if token else {}
    result = {"items": items, "nextMarker": marker}
    document = _todict(result["items"] if query_items else result)
    return json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True, separators=(",", ": ")) + "\n"
