"""The queue writer's job: one message in, exactly one entry (or one rejected row) out.

Storage failures raise, so the host delivers the message again (up to maxDequeueCount, then to
the `<queue>-poison` queue); a message that can never succeed is rejected and returns normally.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime

from azure.core.exceptions import AzureError

from tablebackup.audit.entries import write_event
from tablebackup.audit.messages import Rejected, parse_message
from tablebackup.audit.rejected import reject
from tablebackup.audit.tables import Refused
from tablebackup.core.clients import Storage
from tablebackup.core.errors import StorageUnavailable

log = logging.getLogger(__name__)


def handle_message(
    storage: Storage,
    body: bytes,
    message_id: str | None,
    *,
    inserted_at: datetime | None = None,
    delivery: int = 1,
) -> str:
    """Write the message's entry once. Returns "written", "duplicate" (an earlier delivery wrote
    it) or "rejected" (kept in the rejected-messages table with the reason)."""
    # The host always gives an id; without one, the body stands in so redeliveries still match.
    message_id = message_id or "sha256:" + hashlib.sha256(body).hexdigest()
    try:
        event = parse_message(body)
        written = write_event(storage, event, message_id, inserted_at)
    except (Rejected, Refused) as error:
        reason = str(error)
    except (StorageUnavailable, AzureError):
        raise  # transient: the host delivers the message again
    except Exception as error:
        # No message may crash the writer (the host would retry it and poison it): keep it instead.
        log.error("audit message %s could not be processed", message_id, exc_info=error)
        reason = f"could not be processed: {type(error).__name__}: {str(error)[:200]}"
    else:
        outcome = "written" if written else "duplicate"
        log.info(
            "audit %s %s %s by %s: %s",
            event.operation,
            event.table,
            event.entity_key,
            event.user_id,
            outcome,
            extra={"table": event.table, "messageId": message_id},
        )
        return outcome
    reject(storage, body, message_id, reason, inserted_at=inserted_at, delivery=delivery)
    log.warning("audit message %s rejected: %s", message_id, reason, extra={"messageId": message_id})
    return "rejected"
