"""The producer: what the audited application uses to send one audit message per change.

The Functions queue trigger reads messages as base64 (host.json messageEncoding), while the
azure-storage-queue SDK sends plain text unless told otherwise: a plain-text message fails to
decode on every delivery and ends in the poison queue. This client always sends base64.

    from tablebackup.audit.client import AuditClient

    with AuditClient.from_connection_string(conn_str) as audit:       # queue "audit-events"
        audit.send(table="candidates", operation="UPDATE", partition_key="CANDIDATE", row_key="42",
                   user_id="alice@example.com", before=old_entity, after=new_entity)
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from tablebackup.audit.lossless import lossless_entity
from tablebackup.audit.messages import Rejected, instant_text, parse_message
from tablebackup.core.errors import InvalidInput

DEFAULT_QUEUE = "audit-events"
# A queue message is at most 64 KiB as sent, i.e. after base64 (about 48 KiB of JSON).
MAX_MESSAGE_BYTES = 64 * 1024


_sequence_lock = threading.Lock()
_last_sequence = 0


def next_sequence() -> int:
    """Nanoseconds since the epoch, but strictly greater than the last one this process gave: it
    orders this process's messages exactly, and other processes' as well as their clocks agree."""
    global _last_sequence
    with _sequence_lock:
        _last_sequence = max(_last_sequence + 1, time.time_ns())
        return _last_sequence


def audit_message(
    *,
    table: str,
    operation: str,
    partition_key: str,
    row_key: str,
    user_id: str,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    timestamp: datetime | str | None = None,
    sequence: int | None = None,
) -> dict:
    """The message for one change, checked as the writer will check it (InvalidInput if not valid).
    before/after may be TableEntity objects or dicts; they are sent in the lossless JSON form.
    sequence defaults to next_sequence(), so replay knows the order of changes at one instant."""
    if timestamp is None or isinstance(timestamp, datetime):
        timestamp = instant_text(timestamp or datetime.now(UTC))
    message = {
        "tableName": table,
        "operation": operation,
        "partitionKey": partition_key,
        "rowKey": row_key,
        "userId": user_id,
        "timestamp": timestamp,
        "beforeData": lossless_entity(before) if before is not None else None,
        "afterData": lossless_entity(after) if after is not None else None,
        "sequence": next_sequence() if sequence is None else sequence,
    }
    try:
        parse_message(orjson.dumps(message))
    except Rejected as error:
        raise InvalidInput(str(error)) from None
    return message


def encoded_size(message: Mapping[str, Any]) -> int:
    """Bytes the message takes on the queue once base64-encoded."""
    return 4 * -(-len(orjson.dumps(message)) // 3)


class AuditClient:
    """Sends audit messages to the writer's queue; build it with from_connection_string or
    from_queue_url, which set the base64 encoding the trigger expects."""

    def __init__(self, queue: QueueClient):
        self.queue = queue

    @classmethod
    def from_connection_string(cls, conn_str: str, queue_name: str = DEFAULT_QUEUE, **kwargs) -> AuditClient:
        return cls(
            QueueClient.from_connection_string(
                conn_str, queue_name, message_encode_policy=TextBase64EncodePolicy(), **kwargs
            )
        )

    @classmethod
    def from_queue_url(cls, account_url: str, credential, queue_name: str = DEFAULT_QUEUE, **kwargs) -> AuditClient:
        """Identity-based: account_url `https://<account>.queue.core.windows.net`, credential e.g.
        DefaultAzureCredential() with Storage Queue Data Message Sender on the queue."""
        return cls(
            QueueClient(
                account_url, queue_name, credential=credential, message_encode_policy=TextBase64EncodePolicy(), **kwargs
            )
        )

    def send(self, **fields) -> str:
        """Send one change (the keyword arguments of audit_message); returns the queue message id."""
        return self.send_message(audit_message(**fields))

    def send_message(self, message: Mapping[str, Any]) -> str:
        """Send a message already in the wire format; returns the queue message id."""
        size = encoded_size(message)
        if size > MAX_MESSAGE_BYTES:
            raise InvalidInput(f"audit message is {size} bytes once base64-encoded; a queue message holds 64 KiB")
        text = orjson.dumps(message).decode()
        try:
            return self.queue.send_message(text).id
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                self.queue.create_queue()
            return self.queue.send_message(text).id

    def close(self) -> None:
        self.queue.close()

    def __enter__(self) -> AuditClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
