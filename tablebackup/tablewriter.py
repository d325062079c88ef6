"""Write entities in entity group transactions: one partition, at most 100 operations and well under
the 4 MiB payload limit per batch, several batches in flight.

Batches are built as the service's own multipart $batch requests from entities in backup-line form,
so each entity's JSON, with its @odata.type annotations, goes to the service exactly as it was
backed up (no SDK entity model in between, which would turn Int64 into Int32 and cut DateTimes).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from urllib.parse import quote

import orjson
from azure.core.exceptions import AzureError
from azure.core.rest import HttpRequest
from azure.data.tables import TableClient

from tablebackup.entities import writable
from tablebackup.errors import BackupError, StorageUnavailable

MAX_BATCH_OPERATIONS = 100
# The service allows 4 MiB per batch request; leave room for the multipart framing.
MAX_BATCH_BYTES = 3_800_000
_OPERATION_OVERHEAD = 600
DEFAULT_WORKERS = 4

# What each operation sends: InsertOrReplace, InsertOrMerge, Insert, Delete.
_METHODS = {"replace": "PUT", "merge": "MERGE", "insert": "POST", "delete": "DELETE"}
ACTIONS = tuple(_METHODS)

Operation = tuple[str, dict]
_STATUS_RE = re.compile(rb"^HTTP/1\.1 (\d{3}) ", re.MULTILINE)


def upsert_operations(entities: Iterable[dict], action: str = "replace") -> Iterator[Operation]:
    for entity in entities:
        yield (action, entity)


def _key(value: str) -> str:
    return quote(value.replace("'", "''"), safe="")


def _batches(operations: Iterable[Operation]) -> Iterator[list[tuple[str, dict, bytes]]]:
    """Group consecutive operations on one partition, within the count and size limits."""
    batch: list[tuple[str, dict, bytes]] = []
    size = 0
    for action, entity in operations:
        if action not in _METHODS:
            raise ValueError(f"unknown table operation {action!r}")
        body = b"" if action == "delete" else orjson.dumps(writable(entity))
        cost = len(body) + _OPERATION_OVERHEAD
        if batch and (
            entity["PartitionKey"] != batch[0][1]["PartitionKey"]
            or len(batch) == MAX_BATCH_OPERATIONS
            or size + cost > MAX_BATCH_BYTES
        ):
            yield batch
            batch, size = [], 0
        batch.append((action, entity, body))
        size += cost
    if batch:
        yield batch


def _multipart(client: TableClient, batch: list[tuple[str, dict, bytes]]) -> tuple[str, bytes]:
    base = client.url.split("?")[0].rstrip("/")
    table = client.table_name
    outer, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
    parts = [f"--{outer}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n".encode()]
    for index, (action, entity, body) in enumerate(batch):
        if action == "insert":
            target = f"{base}/{table}"
        else:
            target = f"{base}/{table}(PartitionKey='{_key(entity['PartitionKey'])}',RowKey='{_key(entity['RowKey'])}')"
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
        parts.append(
            (
                f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
                f"Content-ID: {index}\r\n\r\n" + "\r\n".join(headers) + "\r\n\r\n"
            ).encode()
            + body
            + b"\r\n"
        )
    parts.append(f"--{changeset}--\r\n--{outer}--\r\n".encode())
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


def _send(client: TableClient, batch: list[tuple[str, dict, bytes]]) -> int:
    """Submit one batch; deletes of entities already gone are dropped and the rest resubmitted."""
    while batch:
        boundary, body = _multipart(client, batch)
        request = HttpRequest(
            "POST",
            f"{client.url.split('?')[0].rstrip('/')}/$batch",
            content=body,
            headers={
                "Content-Type": f"multipart/mixed; boundary={boundary}",
                "Accept": "application/json",
                "DataServiceVersion": "3.0",
                "MaxDataServiceVersion": "3.0;NetFx",
            },
        )
        try:
            response = client._client.send_request(request, stream=True)
            content = response.read()
        except AzureError as error:
            raise StorageUnavailable(
                f"writing to table {client.table_name!r} failed: {str(error).splitlines()[0]}"
            ) from error
        if response.status_code != 202:
            raise BackupError(
                f"writing to table {client.table_name!r} failed with HTTP {response.status_code}: "
                f"{content[:200].decode(errors='replace').strip()}"
            )
        failure = _failure(content)
        if failure is None:
            return len(batch)
        status, index, message = failure
        if status == 404 and index is not None and batch[index][0] == "delete":
            batch = batch[:index] + batch[index + 1 :]  # already deleted: nothing to do
            continue
        entity = batch[index if index is not None and index < len(batch) else 0][1]
        raise BackupError(
            f"writing to table {client.table_name!r} failed at PartitionKey={entity['PartitionKey']!r} "
            f"RowKey={entity['RowKey']!r}: HTTP {status}: {message}"
        )
    return 0


def submit_operations(
    client: TableClient,
    operations: Iterable[Operation],
    *,
    workers: int = DEFAULT_WORKERS,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Submit operations (entities in backup-line form) in batches, `workers` batches in flight.
    Returns how many operations were submitted. Feed them in key order so partitions batch well."""
    done = 0
    pending: set[Future] = set()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="table-batch") as pool:
        try:
            for batch in _batches(operations):
                if len(pending) >= workers * 2:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    done += _collect(finished, on_progress, done)
                pending.add(pool.submit(_send, client, batch))
            finished, pending = wait(pending)
            done += _collect(finished, on_progress, done)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return done


def _collect(finished: set[Future], on_progress, done: int) -> int:
    count = 0
    for future in finished:
        count += future.result()
        if on_progress:
            on_progress(done + count)
    return count
