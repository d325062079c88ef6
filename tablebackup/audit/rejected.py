"""Messages that can never become an entry, kept in AUDIT_REJECTED_TABLE with the reason.

PartitionKey `REJECTED_{YYYY-MM-DD}` and RowKey `{stamp}_{UUID}` of the message's insertion time
and id, so a redelivery finds its row already there. Properties: messageId, reason, insertedAt
(Edm.DateTime), dequeueCount, and body: the raw message text, or `bodyBlob` naming a blob under
`rejected/` in AUDIT_PAYLOAD_CONTAINER when it is not UTF-8 or too large for a property.
"""

from __future__ import annotations

from datetime import UTC, datetime

from azure.data.tables import EdmType, EntityProperty

from tablebackup.audit import payloads
from tablebackup.audit.entries import entry_id, row_stamp
from tablebackup.audit.messages import instant_text
from tablebackup.audit.tables import insert_once
from tablebackup.core.clients import Storage

PARTITION_PREFIX = "REJECTED_"
MAX_REASON_CHARS = 2000


def _text(body: bytes) -> str | None:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if payloads.fits_in_property(text) else None


def reject(
    storage: Storage, body: bytes, message_id: str, reason: str, *, inserted_at: datetime | None, delivery: int
) -> bool:
    """Keep the message and why it was refused; returns False if an earlier delivery already did."""
    inserted = instant_text(inserted_at or datetime.now(UTC))
    entity = {
        "PartitionKey": PARTITION_PREFIX + inserted[:10],
        "RowKey": f"{row_stamp(inserted)}_{entry_id(message_id)}",
        "messageId": message_id,
        "reason": reason[:MAX_REASON_CHARS],
        "insertedAt": EntityProperty(inserted, EdmType.DATETIME),
        "dequeueCount": delivery,
    }
    text = _text(body)
    if text is None:
        blob = f"rejected/{entity['PartitionKey']}/{entity['RowKey']}/body"
        payloads.store(storage, blob, body, content_type="application/octet-stream")
        entity["bodyBlob"] = blob
    else:
        entity["body"] = text
    return insert_once(storage.tables, storage.settings.audit_rejected_table, entity)
