"""Write entities in entity group transactions: one partition, at most 100 operations and within
the 4 MiB payload limit per batch, several batches in flight.

Batches are built as the service's own multipart $batch requests from entities in backup-line form,
so each entity's JSON, with its @odata.type annotations, goes to the service exactly as it was
backed up (no SDK entity model in between, which would turn Int64 into Int32 and cut DateTimes).

A $batch is a POST, which the SDK does not retry after a dropped connection or a read timeout, and
any of its answers may be lost after the service applied it. So batches are retried here, on 408,
429 and 5xx answers, dropped connections, timeouts and cut bodies alike; and a retry refused because
an insert finds its entity (409) or a delete finds it gone (404) asks the target whether the lost
attempt landed (tablebackup.storage.landed). The outcome counts only what this run wrote.

An interrupted or failed run still knows exactly what it wrote: on any exception (Ctrl-C included)
no further batch is sent, the batches already in flight (bounded by their own timeouts and retries)
are waited for and counted, and only then is the exception raised again. Everything a run does is
also added to the write ledger of the operation it runs in (write_ledger), which is how an
operation's ended audit entry gets exact counts whatever stopped it.

The size of a batch is the real size of its multipart body, counted part by part as it is built:
each operation's request line carries its URL-encoded keys (a 512-character CJK key is 4.6 KB
there), so no fixed allowance per operation can be right for every key.

Bodies are written with U+2028 and U+2029 escaped (\u2028, \u2029): the same JSON, and Azurite's
batch parser, which splits on them as line breaks, refuses them raw. A lone surrogate in a string
is written as its JSON escape (tablebackup.core.wirejson), as the service itself sends it.
"""

from __future__ import annotations

import itertools
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from urllib.parse import quote

import orjson
from azure.core.exceptions import AzureError, ClientAuthenticationError
from azure.core.rest import HttpRequest
from azure.data.tables import TableClient

from tablebackup.core import wirejson
from tablebackup.core.entities import writable
from tablebackup.core.errors import BackupError, StorageUnavailable
from tablebackup.core.retrysettings import RetrySettings, failure_reason
from tablebackup.storage.landed import batch_landed

MAX_BATCH_OPERATIONS = 100
# The service allows 4 MiB per batch request, multipart framing included; the whole body is counted
# exactly, and 64 KiB are kept in hand.
MAX_BATCH_BYTES = 4 * 1024 * 1024 - 64 * 1024
DEFAULT_WORKERS = 4
# Both boundaries are a prefix and a uuid4, so their lengths, and with them every part's, are fixed
# before the uuids are drawn.
_OUTER_LENGTH = len(f"batch_{uuid.UUID(int=0)}")
_CHANGESET_LENGTH = len(f"changeset_{uuid.UUID(int=0)}")

# What each operation sends: InsertOrReplace, InsertOrMerge, Insert, Delete.
_METHODS = {"replace": "PUT", "merge": "MERGE", "insert": "POST", "delete": "DELETE"}
ACTIONS = tuple(_METHODS)

Operation = tuple[str, dict]
_STATUS_RE = re.compile(rb"^HTTP/1\.1 (\d{3}) ", re.MULTILINE)
# Answers to a whole $batch that a retry may get past; any of them may follow an applied batch.
_RETRY_STATUSES = {408, 429, 500, 502, 503, 504}
MAX_ERRORS = 20
# Retries of a $batch the service answers 503 Server Busy (throttled), at least: with the default
# backoff (0.8 s doubling, at most 60 s, ±20%) about 4 minutes of backing off.
BUSY_RETRIES = 9
_WAIT_SLICE_SECONDS = 0.25


@dataclass
class WriteOutcome:
    """What a run of operations really did to the target."""

    written: int = 0  # inserts, replaces and merges this run applied
    deleted: int = 0  # deletes this run applied
    existing: int = 0  # inserts refused because the entity was there, not written by this run
    gone: int = 0  # deletes of entities already gone, not by this run
    failed: int = 0  # operations the service refused (with isolate_refusals)
    # Operations whose outcome is unknown: in a batch that failed after an attempt whose answer was
    # lost, or still in flight when a second interruption stopped the wait. 0 in every other case.
    uncertain: int = 0
    busy: int = 0  # answers 503 Server Busy (throttled) its batches got and retried
    errors: list[str] = field(default_factory=list)

    @property
    def handled(self) -> int:
        return self.written + self.deleted + self.existing + self.gone + self.failed

    def add(self, other: WriteOutcome) -> None:
        self.written += other.written
        self.deleted += other.deleted
        self.existing += other.existing
        self.gone += other.gone
        self.failed += other.failed
        self.uncertain += other.uncertain
        self.busy += other.busy
        self.errors += other.errors[: max(0, MAX_ERRORS - len(self.errors))]

    def counts(self) -> dict[str, int]:
        return {
            "written": self.written,
            "deleted": self.deleted,
            "existing": self.existing,
            "gone": self.gone,
            "failed": self.failed,
            "uncertain": self.uncertain,
        }

    def applied(self, batch: list[tuple[str, dict, bytes]]) -> None:
        deletes = sum(1 for action, _, _ in batch if action == "delete")
        self.deleted += deletes
        self.written += len(batch) - deletes


# Each batch in flight -> its operation count and its own outcome, which its worker fills in.
_InFlight = dict[Future, tuple[int, "WriteOutcome"]]
# The ledger of the operation running in this context (see write_ledger), or None.
_ledger: ContextVar[WriteOutcome | None] = ContextVar("table_write_ledger", default=None)
# Writes run on several threads (contextvars.copy_context().run) share their operation's ledger.
_ledger_lock = threading.Lock()


def _add_to(ledger: WriteOutcome | None, outcome: WriteOutcome) -> None:
    if ledger is not None:
        with _ledger_lock:
            ledger.add(outcome)


@contextmanager
def write_ledger() -> Iterator[WriteOutcome]:
    """A WriteOutcome to which every submit_operations run in this context adds what it did, when
    it returns or raises: exactly what landed. A ledger opened inside another adds to it as well.
    Writes on other threads count when run in a copy of this context (contextvars.copy_context())."""
    ledger = WriteOutcome()
    outer = _ledger.get()
    token = _ledger.set(ledger)
    try:
        yield ledger
    finally:
        # ValueError: closed from another context (a generator collected elsewhere), gone already.
        with suppress(ValueError):
            _ledger.reset(token)
        _add_to(outer, ledger)


def upsert_operations(entities: Iterable[dict], action: str = "replace") -> Iterator[Operation]:
    for entity in entities:
        yield (action, entity)


def _key(value: str) -> str:
    # surrogatepass: a lone surrogate in a key is sent as the bytes the service's UTF-16 holds.
    return quote(value.replace("'", "''").encode("utf-8", "surrogatepass"), safe="")


def batch_body(entity: dict) -> bytes:
    """An entity's JSON as a batch operation sends it: U+2028/U+2029 escaped (JSON outside strings
    is ASCII, so their UTF-8 bytes can only be those characters, inside a string)."""
    return wirejson.dumps(writable(entity)).replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")


def _target(base: str, table: str, action: str, entity: dict) -> str:
    if action == "insert":
        return f"{base}/{table}"
    return f"{base}/{table}(PartitionKey='{_key(entity['PartitionKey'])}',RowKey='{_key(entity['RowKey'])}')"


def _part_head(changeset: str, index: int, action: str, target: str, body: bytes) -> bytes:
    """One operation's part of the changeset, up to its body (which follows, then CRLF)."""
    headers = [
        f"{_METHODS[action]} {target} HTTP/1.1",
        "Accept: application/json;odata=minimalmetadata",
        "DataServiceVersion: 3.0",
        "Prefer: return-no-content",
    ]
    if action == "delete":
        headers.append("If-Match: *")
    else:
        headers += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return (
        f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
        f"Content-ID: {index}\r\n\r\n" + "\r\n".join(headers) + "\r\n\r\n"
    ).encode()


def _framing(outer: str, changeset: str) -> tuple[bytes, bytes]:
    """The multipart body's opening (up to the first part) and closing."""
    return (
        f"--{outer}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n".encode(),
        f"--{changeset}--\r\n--{outer}--\r\n".encode(),
    )


def _batches(operations: Iterable[Operation], base: str, table: str) -> Iterator[list[tuple[str, dict, bytes]]]:
    """Group consecutive operations on one partition, within the count limit and the real size of
    the multipart body _multipart builds (measured with boundaries of the same length)."""
    boundary = "x" * _CHANGESET_LENGTH
    framing = sum(len(part) for part in _framing("x" * _OUTER_LENGTH, boundary))
    batch: list[tuple[str, dict, bytes]] = []
    size = framing
    for action, entity in operations:
        if action not in _METHODS:
            raise ValueError(f"unknown table operation {action!r}")
        body = b"" if action == "delete" else batch_body(entity)
        if batch and (entity["PartitionKey"] != batch[0][1]["PartitionKey"] or len(batch) == MAX_BATCH_OPERATIONS):
            yield batch
            batch, size = [], framing
        cost = len(_part_head(boundary, len(batch), action, _target(base, table, action, entity), body)) + len(body) + 2
        if batch and size + cost > MAX_BATCH_BYTES:
            yield batch
            batch, size = [], framing
            cost = len(_part_head(boundary, 0, action, _target(base, table, action, entity), body)) + len(body) + 2
        batch.append((action, entity, body))
        size += cost
    if batch:
        yield batch


def _base(client: TableClient) -> str:
    return client.url.split("?")[0].rstrip("/")


def _multipart(client: TableClient, batch: list[tuple[str, dict, bytes]]) -> tuple[str, bytes]:
    base, table = _base(client), client.table_name
    outer, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
    opening, closing = _framing(outer, changeset)
    parts = [opening]
    for index, (action, entity, body) in enumerate(batch):
        parts += [_part_head(changeset, index, action, _target(base, table, action, entity), body), body, b"\r\n"]
    parts.append(closing)
    return outer, b"".join(parts)


def _failure(content: bytes) -> tuple[int, int | None, str] | None:
    """(status, failed operation index, message) of a failed changeset, or None if all succeeded."""
    for status in _STATUS_RE.findall(content):
        if not 200 <= int(status) < 300:
            break
    else:
        return None
    message = "the service refused the batch"
    index = None
    match = re.search(rb'"value"\s*:\s*"((?:[^"\\]|\\.)*)"', content)
    if match:
        message = orjson.loads(b'"' + match.group(1) + b'"').splitlines()[0]
        head, sep, rest = message.partition(":")
        if sep and head.strip().isdigit():
            index, message = int(head), rest.strip()
    return int(status), index, message


def _post(
    client: TableClient, batch: list[tuple[str, dict, bytes]], retry: RetrySettings, outcome: WriteOutcome
) -> tuple[bytes, bool]:
    """POST the batch until the service answers it; returns the answer and whether an earlier
    attempt may have been applied (its answer lost)."""
    base = _base(client)
    ambiguous = False
    reason = ""
    attempts = retry.retries + 1
    for attempt in itertools.count():
        if attempt:
            what = f"a $batch of {len(batch)} operations on table {client.table_name!r}"
            retry.wait_to_retry(attempt, what, reason, attempts)
        boundary, body = _multipart(client, batch)
        request = HttpRequest(
            "POST",
            f"{base}/$batch",
            content=body,
            headers={
                "Content-Type": f"multipart/mixed; boundary={boundary}",
                "Accept": "application/json",
                "DataServiceVersion": "3.0",
                "MaxDataServiceVersion": "3.0;NetFx",
            },
        )
        try:
            # retry_total=0: the retries are ours, so we know when an answer was lost.
            response = client._client.send_request(request, stream=True, retry_total=0)
            content = response.read()
        except ClientAuthenticationError as error:
            raise _unsettled(
                StorageUnavailable(f"writing to table {client.table_name!r} failed: {str(error).splitlines()[0]}"),
                batch,
                ambiguous,
            ) from error
        except AzureError as error:
            if attempt + 1 >= attempts:
                raise _unsettled(
                    StorageUnavailable(f"writing to table {client.table_name!r} failed: {str(error).splitlines()[0]}"),
                    batch,
                    True,  # this attempt too may have been applied
                ) from error
            ambiguous = True  # dropped, timed out or cut: the service may have applied it
            reason = failure_reason(error)
            continue
        if response.status_code == 202:
            return content, ambiguous
        text = content[:200].decode(errors="replace").strip()
        if response.status_code == 503:
            outcome.busy += 1
            # Server Busy: the account or partition is over its target. The service asks for a
            # slower pace, not for giving up: more patience than for a fault (BUSY_RETRIES).
            attempts = max(attempts, BUSY_RETRIES + 1)
        if response.status_code not in _RETRY_STATUSES or attempt + 1 >= attempts:
            status = response.status_code
            # Busy or failing after every retry is transient (a queued restore's range is delivered
            # again); any other answer is the service refusing the batch.
            kind = StorageUnavailable if status in _RETRY_STATUSES else BackupError
            failure = kind(f"writing to table {client.table_name!r} failed with HTTP {status}: {text}")
            # A 5xx may follow an applied batch as well.
            raise _unsettled(failure, batch, ambiguous or response.status_code in _RETRY_STATUSES)
        ambiguous = True
        reason = f"HTTP {response.status_code}"
    raise AssertionError("unreachable")


def _unsettled(error: BackupError, batch: list, ambiguous: bool) -> BackupError:
    """The error of a batch that gave up; after an attempt that may have been applied, it carries
    the batch's size as operations whose outcome is unknown (a batch lands whole or not at all)."""
    error.uncertain_operations = len(batch) if ambiguous else 0
    return error


def _refusal(client: TableClient, entity: dict, status: int, message: str) -> str:
    return (
        f"writing to table {client.table_name!r} failed at PartitionKey={entity['PartitionKey']!r} "
        f"RowKey={entity['RowKey']!r}: HTTP {status}: {message}"
    )


def _send(
    client: TableClient,
    batch: list[tuple[str, dict, bytes]],
    retry: RetrySettings,
    isolate_refusals: bool = False,
    outcome: WriteOutcome | None = None,
) -> WriteOutcome:
    """Submit one batch and find out what it did, into outcome (which keeps what was done even
    when a later step fails). An insert of an entity that is there and a delete of one that is
    gone are dropped (after asking whether a lost attempt of this batch put them so) and the rest
    resubmitted; with isolate_refusals any other refused operation is counted as failed and the
    rest still written, else it fails the whole write."""
    outcome = WriteOutcome() if outcome is None else outcome
    while batch:
        content, ambiguous = _post(client, batch, retry, outcome)
        failure = _failure(content)
        if failure is None:
            outcome.applied(batch)
            return outcome
        status, index, message = failure
        if index is None and len(batch) == 1:
            index = 0  # a batch of one: its failure is that operation's, named or not
        known = index is not None and index < len(batch)
        action, entity, _ = batch[index if known else 0]
        settled = known and ((status == 409 and action == "insert") or (status == 404 and action == "delete"))
        if settled and ambiguous and batch_landed(client, [(a, e) for a, e, _ in batch]):
            outcome.applied(batch)  # the lost attempt applied it all: this run wrote it
            return outcome
        if settled:
            if action == "insert":
                outcome.existing += 1
            else:
                outcome.gone += 1
        elif isolate_refusals and 400 <= status < 500:
            if not known and len(batch) > 1:
                for one in batch:  # the service did not say which: find out one at a time
                    _send(client, [one], retry, isolate_refusals, outcome)
                return outcome
            outcome.failed += 1
            if len(outcome.errors) < MAX_ERRORS:
                outcome.errors.append(_refusal(client, entity, status, message))
        else:
            raise BackupError(_refusal(client, entity, status, message))
        batch = [operation for position, operation in enumerate(batch) if position != (index if known else 0)]
    return outcome


def submit_operations(
    client: TableClient,
    operations: Iterable[Operation],
    *,
    workers: int = DEFAULT_WORKERS,
    on_progress: Callable[[int], None] | None = None,
    isolate_refusals: bool = False,
) -> WriteOutcome:
    """Submit operations (entities in backup-line form) in batches, `workers` batches in flight,
    and return what they did. Feed them in key order so partitions batch well. With
    isolate_refusals an operation the service refuses costs only itself (counted in `failed`).

    On an exception (a failed batch, Ctrl-C, on_progress raising) no further batch is sent and the
    ones in flight are waited for and counted before it is raised again, so the write ledger holds
    exactly what landed. A second Ctrl-C during that wait stops it at once: the batches still in
    flight are then counted as `uncertain` and left to finish on their own (each is one request,
    bounded by its timeouts), as an operator pressing Ctrl-C twice wants control back now."""
    outcome = WriteOutcome()
    retry = RetrySettings.of(client)
    pending: _InFlight = {}
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="table-batch")
    abandoned = False
    # Batches in flight or queued: halved when one was throttled (503 Server Busy), one more after
    # each that was not, as Azure asks of clients over its targets; many writers, on many instances,
    # then settle at the pace the account allows instead of retrying in a crowd.
    allowed = workers * 2
    try:
        for batch in _batches(operations, _base(client), client.table_name):
            while len(pending) >= allowed:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                busy = outcome.busy
                _collect(finished, pending, on_progress, outcome)
                allowed = max(1, allowed // 2) if outcome.busy > busy else min(workers * 2, allowed + 1)
            done = WriteOutcome()
            pending[pool.submit(_send, client, batch, retry, isolate_refusals, done)] = (len(batch), done)
        _collect(wait(pending).done, pending, on_progress, outcome)
    except BaseException:
        abandoned = _settle(pending, outcome)
        raise
    finally:
        pool.shutdown(wait=not abandoned, cancel_futures=True)
        _add_to(_ledger.get(), outcome)
    return outcome


def _take(future: Future, pending: _InFlight, outcome: WriteOutcome) -> BaseException | None:
    """Add what a finished batch did, and return its error if it failed. A failed $batch wrote
    nothing (a changeset lands whole or not at all) unless an attempt whose answer was lost was
    applied: its operations are then uncertain, as are those of a batch that failed unexpectedly."""
    size, done = pending.pop(future)
    if future.cancelled():
        return None  # never started: wrote nothing
    outcome.add(done)
    error = future.exception()
    if error is not None:
        outcome.uncertain += getattr(error, "uncertain_operations", 0 if isinstance(error, BackupError) else size)
    return error


def _collect(finished, pending: _InFlight, on_progress, outcome: WriteOutcome) -> None:
    """Count every finished batch first, then raise the first failure or report progress: a
    progress callback that raises (Ctrl-C) must not lose a finished batch's count."""
    errors = [error for future in finished if (error := _take(future, pending, outcome)) is not None]
    if errors:
        raise errors[0]
    if on_progress:
        on_progress(outcome.handled)


def _settle(pending: _InFlight, outcome: WriteOutcome) -> bool:
    """Stop: cancel the batches not started, wait for the ones in flight and count them. Returns
    True if a second interruption cut the wait short (what was still in flight is then uncertain)."""
    for future in pending:
        future.cancel()
    try:
        # In slices: a Ctrl-C the kernel hands to a worker thread is seen here within one.
        while wait(pending, timeout=_WAIT_SLICE_SECONDS).not_done:
            pass
    except BaseException:
        for future in [f for f in pending if f.done()]:
            _take(future, pending, outcome)
        outcome.uncertain += sum(size for size, _ in pending.values())
        pending.clear()
        return True
    for future in list(pending):
        _take(future, pending, outcome)
    return False
