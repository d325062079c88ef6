"""What the Functions host does around our functions, for the demo and the tests (Core Tools can't
run here): collect a function's queue output, and deliver queue messages to a queue-triggered
function, again on failure, up to maxDequeueCount times, as the host does, from a list or from a
real queue."""

from __future__ import annotations

import base64
import contextlib
import inspect
import threading
import uuid
from dataclasses import dataclass

import azure.functions as func
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient

MAX_DEQUEUE_COUNT = 5  # host.json extensions.queues.maxDequeueCount


class QueueOutput(func.Out):
    """A queue output binding: what the function set, as a list of messages."""

    def __init__(self):
        self.value = None

    def set(self, value) -> None:
        self.value = value

    def get(self):
        return self.value

    @property
    def messages(self) -> list[str]:
        if self.value is None:
            return []
        return list(self.value) if isinstance(self.value, list) else [self.value]


def invoke(function, message: QueueMessage) -> list[str]:
    """Call a queue-triggered function as the host does: with a queue output binding's `Out` for
    each parameter after the message (the worker binds them by name), returning what the function
    set on them; the host sends those only when the function succeeds."""
    outputs = [QueueOutput() for _ in list(inspect.signature(function).parameters)[1:]]
    function(message, *outputs)
    return [body for output in outputs for body in output.messages]


def deliver(
    function, messages: list[str], max_deliveries: int = MAX_DEQUEUE_COUNT, lost_acks: int = 0
) -> dict[str, Exception]:
    """Call the queue-triggered function with each message, delivering a failing message again
    until it succeeds or reaches max_deliveries; returns the last error of each message that
    would go to the poison queue. With lost_acks, the host fails to delete a message after its
    first `lost_acks` successes (a lost ack), so it delivers it again, as the real host does.
    What the function sends on its queue output (to its own queue) is delivered the same way."""
    poisoned = {}
    pending = list(messages)
    while pending:
        body = pending.pop(0)
        message_id = str(uuid.uuid4())
        acks_to_lose = lost_acks
        for delivery in range(1, max_deliveries + 1):
            try:
                pending += invoke(function, QueueMessage(id=message_id, body=body.encode(), dequeue_count=delivery))
            except Exception as error:  # the host logs it and delivers the message again
                if delivery == max_deliveries:
                    poisoned[body] = error
                continue
            if acks_to_lose == 0:
                break
            acks_to_lose -= 1
    return poisoned


@dataclass
class Drained:
    """What draining a queue did: messages the function took, and those moved to the poison queue."""

    delivered: int = 0
    poisoned: int = 0


def drain_queue(function, connection_string: str, queue_name: str, max_deliveries: int = MAX_DEQUEUE_COUNT) -> Drained:
    """Call the queue-triggered function with every message on a real queue until it is empty, as
    the host does: the content base64-decoded (host.json messageEncoding) and handed over as bytes,
    the message deleted once the function returns, visible again at once when it raises (the host
    waits out the visibility timeout), and moved to `<queue>-poison` after max_deliveries."""
    # No decode policy: the content is the base64 text as stored, decoded here as the host does.
    queue = QueueClient.from_connection_string(connection_string, queue_name)
    drained = Drained()
    try:
        queue.get_queue_properties()
    except ResourceNotFoundError:
        return drained  # nothing was ever sent
    while True:
        batch = list(queue.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=30))
        if not batch:
            return drained
        for message in batch:
            try:
                body = base64.b64decode(message.content, validate=True)
                sent = invoke(
                    function,
                    QueueMessage(
                        id=message.id,
                        body=body,
                        dequeue_count=message.dequeue_count,
                        insertion_time=message.inserted_on,
                        expiration_time=message.expires_on,
                        pop_receipt=message.pop_receipt,
                    ),
                )
                for content in sent:  # a queue output onto this very queue, as messageEncoding base64
                    send_message(queue, content)
            except Exception:  # the host logs it and delivers the message again
                if message.dequeue_count >= max_deliveries:
                    poison = QueueClient.from_connection_string(connection_string, f"{queue_name}-poison")
                    send_message(poison, message.content, encoded=True)  # as it was, decodable or not
                    queue.delete_message(message)
                    drained.poisoned += 1
                else:
                    queue.update_message(message, visibility_timeout=0)
                continue
            queue.delete_message(message)
            drained.delivered += 1


def send_message(queue: QueueClient, text: str, *, encoded: bool = False) -> None:
    """Send a message as a queue output binding does: its content base64 (host.json
    messageEncoding; `encoded`: it is already), the queue created on first use."""
    content = text if encoded else base64.b64encode(text.encode()).decode()
    try:
        queue.send_message(content)
    except ResourceNotFoundError:
        with contextlib.suppress(ResourceExistsError):
            queue.create_queue()
        queue.send_message(content)


# The worker's thread-local that its log handler reads the invocation id from.
WORKER_THREAD_LOCAL = threading.local()


class InvocationContext(func.Context):
    """The `context` argument the Python worker passes: the invocation's id and the thread-local
    that its log handler reads the id from (set for the invocation's own thread only)."""

    def __init__(self, function_name: str, invocation_id: str | None = None):
        self._function_name = function_name
        self._invocation_id = invocation_id or str(uuid.uuid4())
        WORKER_THREAD_LOCAL.invocation_id = self._invocation_id  # as the worker does before calling

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> threading.local:
        return WORKER_THREAD_LOCAL

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return "."

    @property
    def trace_context(self):
        return None

    @property
    def retry_context(self):
        return None
