"""Sample candidate entities with every EDM type and awkward keys, for the demo, tests and bench.

Entities are in backup-line form (the service's JSON with @odata.type annotations), so they can be
written exactly and compared against what a backup holds.
"""

from __future__ import annotations

import base64
import contextlib
import random
import uuid
from collections.abc import Iterator

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableServiceClient

from tablebackup.storage.tablewriter import submit_operations, upsert_operations

PARTITIONS = ["CANDIDATE", "EMPLOYEE", "O'Brien & Sons", "ünïcödé 分区", ""]
_FIRST = ["Ada", "Grace", "Linus", "Zoë", "Søren", "José", "Ёлка", "李", "O'Neil", "Chloé"]
_DOUBLES = [2.0, 0.1, -1.5e300, 5e-324, float("nan"), float("inf"), float("-inf"), 3.141592653589793]


def _double(value: float) -> object:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def candidate(index: int, partition: str, rng: random.Random) -> dict:
    """One entity; index picks edge cases so every few hundred entities cover them all."""
    name = f"{_FIRST[index % len(_FIRST)]} {index}"
    row_key = f"{index:07d}" if index % 17 else f'{index:07d} it\'s "quoted" ü'
    int64 = [2**63 - 1, -(2**63), 2**53 + 1, index][index % 4]
    ticks = rng.randrange(10**7)
    return {
        "PartitionKey": partition,
        "RowKey": row_key,
        "name": name,
        "email": f"candidate{index}@example.com",
        "notes": ["", "multi\nline\ttext", "emoji 🚀 and ünïcode", "plain"][index % 4],
        "age": 18 + index % 60,
        "active": index % 3 != 0,
        "score@odata.type": "Edm.Double",
        "score": _double(_DOUBLES[index % len(_DOUBLES)]),
        "salaryCents@odata.type": "Edm.Int64",
        "salaryCents": str(int64),
        "appliedAt@odata.type": "Edm.DateTime",
        "appliedAt": f"20{10 + index % 16:02d}-0{1 + index % 9}-1{index % 10}T0{index % 10}:30:15.{ticks:07d}Z",
        "candidateId@odata.type": "Edm.Guid",
        "candidateId": str(uuid.UUID(int=rng.getrandbits(128))),
        "photo@odata.type": "Edm.Binary",
        "photo": base64.b64encode(rng.randbytes(index % 48)).decode(),
        "minInt32": -(2**31) if index % 2 else 2**31 - 1,
    }


def candidates(count: int, *, seed: int = 7) -> Iterator[dict]:
    """`count` entities spread over the sample partitions, in key order per partition."""
    rng = random.Random(seed)
    per_partition = -(-count // len(PARTITIONS))
    index = 0
    for partition in PARTITIONS:
        for _ in range(min(per_partition, count - index)):
            yield candidate(index, partition, rng)
            index += 1


def seed_table(service: TableServiceClient, table: str, count: int) -> int:
    """Create the table if needed and upsert `count` sample entities into it."""
    with contextlib.suppress(ResourceExistsError):
        service.create_table(table)
    return submit_operations(service.get_table_client(table), upsert_operations(candidates(count))).written
