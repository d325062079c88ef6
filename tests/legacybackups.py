"""The seed's old daily backups, made as the old function made them: the JS SDK from npm lists the
table (tests/js_sdk/legacy_backup.cjs) and the JSON.stringify text is stored as
`<table>-<ISO time with ':' and '.' replaced by '-'>.json` in the backup container.

The SDK is pinned in tests/js_sdk/package-lock.json and installed there (tests.jssdk)."""

from __future__ import annotations

import os
import subprocess
import uuid
from datetime import UTC, datetime

from azure.data.tables import EdmType, EntityProperty

from tests.jssdk import JS_SDK, _ensure_installed

SCRIPT = JS_SDK / "legacy_backup.cjs"
# The SDK the seed used, and an early one that still returned Int64 and DateTime as {value, type}.
CURRENT_SDK = "@azure/data-tables"
EARLY_SDK = "legacy-data-tables"  # npm alias of @azure/data-tables 12.0.0-beta.2 (package.json)

WHEN = datetime(2025, 1, 13, 2, 0, 0, 123456, tzinfo=UTC)
GUID = uuid.UUID("6f9619ff-8b86-d011-b42d-00c04fc964ff")


def sample_entities(*, with_int64: bool = False) -> list[dict]:
    """Entities with every type the old backups can hold, written with the Python SDK."""
    entities = [
        {
            "PartitionKey": "candidates",
            "RowKey": "001",
            "name": "Ann",
            "age": 41,
            "score": EntityProperty(2.0, EdmType.DOUBLE),
            "ratio": 0.25,
            "active": True,
            "joined": WHEN,
            "id": GUID,
            "photo": b"\x00\x01\xfe\xff",
            "note": "2025-01-13T02:00:00.000Z is only a string here",
            "missing": float("nan"),
            "huge": float("inf"),
        },
        {"PartitionKey": "candidates", "RowKey": "002", "name": "Bob", "age": 7, "score": 3.5},
    ]
    if with_int64:
        entities[0]["big"] = EntityProperty(2**40 + 1, EdmType.INT64)
    return entities


def write_table(storage, table: str, entities: list[dict]):
    client = storage.tables.create_table(table)
    for entity in entities:
        client.create_entity(entity)
    return client


def legacy_backup(storage, table: str, at: datetime, sdk: str = CURRENT_SDK) -> tuple[str, bytes]:
    """Run the old backup of `table` as of `at`; store it in the backup container as the old
    function did. Returns the blob name and its body."""
    _ensure_installed()
    result = subprocess.run(
        ["node", str(SCRIPT), os.environ["AZURE_STORAGE_CONNECTION_STRING"], table, sdk, at.isoformat()],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    name = result.stderr.decode().strip()
    container = storage.backups
    if not container.exists():
        container.create_container()
    container.upload_blob(name, result.stdout)
    return name, result.stdout
