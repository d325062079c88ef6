"""One Functions instance for the scale bench: `python -m bench.instance --queue backup-jobs
--queue restore-jobs [--idle-exit SECONDS]`, a separate process that does what the Functions host
does with the app's queue-triggered functions, on real Azurite queues.

For each queue it finds the function registered in `function_app` with a queue trigger on it, and
runs a listener as the host's queue extension does (host.json extensions.queues): it takes up to
`batchSize` messages at a time and fetches more once no more than `newBatchThreshold` are still
running, so at most batchSize + newBatchThreshold run at once; each is handed to the function as a
real azure.functions QueueMessage, its content base64-decoded (messageEncoding). When the function
returns, the messages it set on its queue output bindings are sent (base64, as the host does) and
then the message is deleted; when it raises, the message becomes visible again after host.json's
visibilityTimeout, and after maxDequeueCount deliveries it moves to `<queue>-poison`.

Messages are taken with a 10-minute visibility, longer than any bench item takes, instead of the
host's renewal of a running message's lease. An empty queue is polled again after 0.1 s, doubling up
to 0.25 s (the host backs off up to a minute while a queue stays empty; the bench's instances would
only sit idle for it, and the time to first pick up work is not what the bench measures).

It prints `ready` on stdout once the app is imported, and at the end one JSON line of what it did.
It stops on SIGTERM or SIGINT (no new messages; those running finish), or after --idle-exit seconds
with nothing received and nothing running. Settings come from the environment, as for the app;
the queues are on AzureWebJobsStorage."""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from azure.core.exceptions import ResourceNotFoundError
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient

from localdev.host import InvocationContext, QueueOutput, send_message

ROOT = Path(__file__).resolve().parent.parent
LEASE_SECONDS = 600
_IN, _OUT = 0, 1  # azure.functions BindingDirection values


@dataclass
class QueueSettings:
    """host.json extensions.queues, with the host's defaults."""

    batch_size: int = 16
    new_batch_threshold: int | None = None
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0

    @classmethod
    def from_host_json(cls, path: Path = ROOT / "host.json") -> QueueSettings:
        queues = json.loads(path.read_text()).get("extensions", {}).get("queues", {})
        hours, minutes, seconds = (float(part) for part in queues.get("visibilityTimeout", "00:00:00").split(":"))
        batch = int(queues.get("batchSize", 16))
        return cls(
            batch_size=batch,
            new_batch_threshold=int(queues.get("newBatchThreshold", batch // 2)),
            max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
            visibility_timeout=hours * 3600 + minutes * 60 + seconds,
        )


@dataclass
class Tally:
    """What one instance did with one queue's messages."""

    succeeded: int = 0
    failed: int = 0  # invocations that raised (the message is delivered again, or poisoned)
    poisoned: int = 0
    sent: int = 0  # messages the function put on its queue outputs


@dataclass
class Trigger:
    """A queue-triggered function of the app and how to call it."""

    name: str
    function: object
    message_arg: str
    outputs: dict[str, str]  # output argument -> its queue
    takes_context: bool


def triggers(queues: list[str]) -> dict[str, Trigger]:
    from function_app import app  # the app, as the worker loads it

    found: dict[str, Trigger] = {}
    for function in app.get_functions():
        bindings = function.get_bindings()
        trigger = next((b for b in bindings if b.type == "queueTrigger"), None)
        if trigger is None or trigger.queue_name not in queues:
            continue
        user = function.get_user_function()
        found[trigger.queue_name] = Trigger(
            name=function.get_function_name(),
            function=user,
            message_arg=trigger.name,
            outputs={b.name: b.queue_name for b in bindings if b.type == "queue" and b.direction == _OUT},
            takes_context="context" in user.__code__.co_varnames[: user.__code__.co_argcount],
        )
    missing = sorted(set(queues) - set(found))
    if missing:
        raise SystemExit(f"no function of function_app is triggered by queue(s) {', '.join(missing)}")
    return found


def _queue(connection: str, name: str) -> QueueClient:
    return QueueClient.from_connection_string(connection, name)


def _send(connection: str, name: str, text: str) -> None:
    send_message(_queue(connection, name), text)


class Listener:
    """The host's listener of one queue."""

    def __init__(self, connection: str, queue: str, trigger: Trigger, settings: QueueSettings, stop: threading.Event):
        self.connection, self.queue_name, self.trigger = connection, queue, trigger
        self.settings, self.stop = settings, stop
        self.queue = _queue(connection, queue)
        self.tally = Tally()
        self.running = 0
        self.last_activity = time.monotonic()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        slots = settings.batch_size + (settings.new_batch_threshold or 0)
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix=f"{queue}-")

    def run(self) -> None:
        delay = 0.1
        while not self.stop.is_set():
            with self._idle:
                while self.running > (self.settings.new_batch_threshold or 0) and not self.stop.is_set():
                    self._idle.wait(0.5)
            if self.stop.is_set():
                break
            try:
                batch = list(
                    self.queue.receive_messages(
                        messages_per_page=self.settings.batch_size,
                        max_messages=self.settings.batch_size,
                        visibility_timeout=LEASE_SECONDS,
                    )
                )
            except ResourceNotFoundError:
                batch = []
            if not batch:
                self.stop.wait(delay)
                delay = min(0.25, delay * 2)
                continue
            delay = 0.1
            with self._lock:
                self.running += len(batch)
                self.last_activity = time.monotonic()
            for message in batch:
                self._pool.submit(self._invoke, message)
        self._pool.shutdown(wait=True)

    def _add(self, **counts: int) -> None:
        with self._lock:
            for name, count in counts.items():
                setattr(self.tally, name, getattr(self.tally, name) + count)

    def _invoke(self, message) -> None:
        try:
            outputs = {name: QueueOutput() for name in self.trigger.outputs}
            arguments = {
                self.trigger.message_arg: QueueMessage(
                    id=message.id,
                    body=base64.b64decode(message.content, validate=True),
                    dequeue_count=message.dequeue_count,
                    insertion_time=message.inserted_on,
                    expiration_time=message.expires_on,
                    pop_receipt=message.pop_receipt,
                ),
                **outputs,
            }
            if self.trigger.takes_context:
                arguments["context"] = InvocationContext(self.trigger.name)
            try:
                self.trigger.function(**arguments)
            except Exception as error:  # the host logs it and delivers the message again
                print(f"{self.trigger.name} failed (delivery {message.dequeue_count}): {error}", file=sys.stderr)
                self._add(failed=1)
                if message.dequeue_count >= self.settings.max_dequeue_count:
                    _send(self.connection, f"{self.queue_name}-poison", base64.b64decode(message.content).decode())
                    self.queue.delete_message(message)
                    self._add(poisoned=1)
                else:
                    self.queue.update_message(message, visibility_timeout=int(self.settings.visibility_timeout))
                return
            for name, queue in self.trigger.outputs.items():
                for text in outputs[name].messages:
                    _send(self.connection, queue, text)
                    self._add(sent=1)
            self.queue.delete_message(message)
            self._add(succeeded=1)
        finally:
            with self._idle:
                self.running -= 1
                self.last_activity = time.monotonic()
                self._idle.notify_all()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instance", description=__doc__.splitlines()[0])
    parser.add_argument("--queue", action="append", required=True, help="a queue to take messages from")
    parser.add_argument("--idle-exit", type=float, default=None, help="stop after this long with nothing to do")
    args = parser.parse_args()
    connection = os.environ.get("AzureWebJobsStorage")  # noqa: SIM112 (the host's own setting name)
    if not connection:
        parser.error("AzureWebJobsStorage must be set: the connection string of the queues' account")
    settings = QueueSettings.from_host_json()
    found = triggers(args.queue)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    listeners = [Listener(connection, queue, found[queue], settings, stop) for queue in args.queue]
    threads = [threading.Thread(target=listener.run, name=listener.queue_name) for listener in listeners]
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    while not stop.is_set():
        stop.wait(0.2)
        if args.idle_exit is not None and all(
            listener.running == 0 and time.monotonic() - listener.last_activity >= args.idle_exit
            for listener in listeners
        ):
            stop.set()
    for thread in threads:
        thread.join()
    print(json.dumps({listener.queue_name: asdict(listener.tally) for listener in listeners}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
