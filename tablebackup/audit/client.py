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
from azure.data.tables import UpdateMode
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from tablebackup.audit.lossless import lossless_entity
from tablebackup.audit.messages import Rejected, instant_text, parse_message
from tablebackup.core.entities import TYPE_SUFFIX
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


class AuditNotSent(Exception):
    """The write succeeded but its audit message was not sent: the change is in the table and
    missing from the audit trail (replay reports a gap) until `messages` are sent again."""

    def __init__(self, table: str, partition_key: str, row_key: str, messages: list[dict], cause: Exception):
        super().__init__(
            f"the write to {table} (PartitionKey {partition_key!r}, RowKey {row_key!r}) succeeded but its "
            f"audit message was not sent: {str(cause).splitlines()[0] if str(cause) else type(cause).__name__}"
        )
        self.table, self.partition_key, self.row_key, self.messages = table, partition_key, row_key, messages


def _merged(before: dict | None, sent: dict) -> dict:
    """`before` with `sent` merged over it, as the service does for a Merge (a sent property's type
    replaces the old one's)."""
    result = dict(before or {})
    for name in sent:
        if not name.endswith(TYPE_SUFFIX):
            result.pop(name + TYPE_SUFFIX, None)
    return {**result, **sent}


class AuditedTableClient:
    """A TableClient whose writes are audited: each reads the before image where it needs one,
    performs the write, then sends one audit message per changed entity. A failed write sends
    nothing; a message that fails after the write raises AuditNotSent naming the entity (the write
    stands). A concurrent writer of the same entity between the read and the write would make the
    before image (and a merge's after image) stale: keep one writer per entity, or pass an etag."""

    def __init__(self, table_client, audit_client: AuditClient, *, user_id: str, clock=None):
        self.client, self.audit, self.user_id = table_client, audit_client, user_id
        self.clock = clock or (lambda: datetime.now(UTC))

    def _current(self, partition_key: str, row_key: str) -> dict | None:
        try:
            return lossless_entity(self.client.get_entity(partition_key, row_key))
        except ResourceNotFoundError:
            return None

    def _change(self, kind: str, entity: Mapping[str, Any], mode, before: dict | None) -> dict | None:
        keys = {"partition_key": entity["PartitionKey"], "row_key": entity["RowKey"]}
        if kind == "delete":
            # The SDK's delete of a missing entity succeeds quietly: nothing changed, nothing to report.
            return {"operation": "DELETE", "before": before, **keys} if before is not None else None
        sent = lossless_entity(entity)
        merge = str(getattr(mode, "value", mode)).lower() == UpdateMode.MERGE.value
        after = _merged(before, sent) if merge else sent
        return {
            "operation": "UPDATE" if before is not None else "INSERT",
            "before": None if kind == "create" else before,
            "after": after,
            **keys,
        }

    def _report(self, changes: list[dict]) -> None:
        at = instant_text(self.clock())
        messages = [
            audit_message(table=self.client.table_name, user_id=self.user_id, timestamp=at, **change)
            for change in changes
            if change is not None
        ]
        for index, message in enumerate(messages):
            try:
                self.audit.send_message(message)
            except Exception as error:
                raise AuditNotSent(
                    self.client.table_name, message["partitionKey"], message["rowKey"], messages[index:], error
                ) from error

    def _single(self, kind: str, entity: Mapping[str, Any], mode, write):
        before = None if kind == "create" else self._current(entity["PartitionKey"], entity["RowKey"])
        result = write()
        self._report([self._change(kind, entity, mode, before)])
        return result

    def create_entity(self, entity, **kwargs):
        return self._single("create", entity, None, lambda: self.client.create_entity(entity, **kwargs))

    def upsert_entity(self, entity, mode=UpdateMode.MERGE, **kwargs):
        return self._single("upsert", entity, mode, lambda: self.client.upsert_entity(entity, mode=mode, **kwargs))

    def update_entity(self, entity, mode=UpdateMode.MERGE, **kwargs):
        return self._single("update", entity, mode, lambda: self.client.update_entity(entity, mode=mode, **kwargs))

    def delete_entity(self, partition_key: str, row_key: str, **kwargs):
        keys = {"PartitionKey": partition_key, "RowKey": row_key}
        return self._single("delete", keys, None, lambda: self.client.delete_entity(partition_key, row_key, **kwargs))

    def submit_transaction(self, operations, **kwargs):
        """One transaction (one partition): every before image first, then the transaction, then one
        message per operation, in its order and all at one instant."""
        operations = list(operations)
        befores = [
            None if str(op[0]).lower().endswith("create") else self._current(op[1]["PartitionKey"], op[1]["RowKey"])
            for op in operations
        ]
        result = self.client.submit_transaction(operations, **kwargs)
        changes = []
        for operation, before in zip(operations, befores, strict=True):
            kind = str(getattr(operation[0], "value", operation[0])).lower()
            mode = (operation[2] if len(operation) > 2 else {}).get("mode", UpdateMode.MERGE)
            changes.append(self._change(kind, operation[1], mode, before))
        self._report(changes)
        return result


def audited_table_client(table_client, audit_client: AuditClient, *, user_id: str, clock=None) -> AuditedTableClient:
    """`table_client` (azure.data.tables.TableClient) with every write audited through `audit_client`.
    clock (a callable returning a datetime) says when changes happen; it defaults to now."""
    return AuditedTableClient(table_client, audit_client, user_id=user_id, clock=clock)
