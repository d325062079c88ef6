"""Submit an import's writes with restore's batch writer, so that one entity the service refuses
costs only that entity: operations go in chunks, and a chunk whose batch the service refused is
submitted again one operation at a time, each refusal counted as a failure and named.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import orjson
from azure.data.tables import TableClient

from tablebackup.errors import BackupError
from tablebackup.tablewriter import Operation, submit_operations

# A chunk stays small enough to hold in memory and large enough to keep every worker busy.
CHUNK_OPERATIONS = 2000
CHUNK_BYTES = 32 * 1024 * 1024
MAX_ERRORS = 20
# How tablewriter names an operation the service refused (a 4xx within the batch).
_REFUSED = re.compile(r" failed at PartitionKey=.*: HTTP (4\d\d): ")


@dataclass
class WriteOutcome:
    written: int = 0
    # Inserts refused because the entity exists: `missing` counts them as skipped.
    existing: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def _chunks(operations: Iterable[Operation]) -> Iterator[list[Operation]]:
    chunk: list[Operation] = []
    size = 0
    for operation in operations:
        chunk.append(operation)
        size += len(orjson.dumps(operation[1]))
        if len(chunk) == CHUNK_OPERATIONS or size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _refused_status(error: BackupError) -> int | None:
    match = _REFUSED.search(str(error))
    return int(match.group(1)) if match else None


def write_operations(
    client: TableClient,
    operations: Iterable[Operation],
    *,
    workers: int,
    on_progress: Callable[[int], None] | None = None,
) -> WriteOutcome:
    outcome = WriteOutcome()
    for chunk in _chunks(operations):
        report = (lambda n, done=outcome.written: on_progress(done + n)) if on_progress else None
        try:
            submit_operations(client, chunk, workers=workers, on_progress=report)
            outcome.written += len(chunk)
        except BackupError as error:
            if _refused_status(error) is None:
                raise  # not about one entity: storage or the table itself
            for operation in chunk:
                _write_one(client, operation, outcome)
        if on_progress:
            on_progress(outcome.written)
    return outcome


def _write_one(client: TableClient, operation: Operation, outcome: WriteOutcome) -> None:
    try:
        submit_operations(client, [operation], workers=1)
        outcome.written += 1
    except BackupError as error:
        status = _refused_status(error)
        if status is None:
            raise
        if status == 409 and operation[0] == "insert":
            outcome.existing += 1
            return
        outcome.failed += 1
        if len(outcome.errors) < MAX_ERRORS:
            outcome.errors.append(str(error))
