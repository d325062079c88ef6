"""Batches stay within the service's 4 MiB payload by their real multipart size: each operation's
request line carries its URL-encoded keys, which a fixed allowance per operation undercounts."""

from __future__ import annotations

from tablebackup.storage import tablewriter
from tablebackup.storage.tablewriter import MAX_BATCH_BYTES, submit_operations, upsert_operations
from tests.wire import table_state

# 512 CJK characters: the service's 1 KiB key limit in UTF-16, 4,608 bytes URL-encoded.
PARTITION = "分" * 512


def _entities(count: int, filler: int) -> list[dict]:
    return [
        {"PartitionKey": PARTITION, "RowKey": f"{n:03d}" + "行" * 509, "text": "x" * filler, "n": n}
        for n in range(count)
    ]


def test_100_operations_with_512_character_cjk_keys_are_accepted(storage, unique_name):
    # Each body is ~33 KB (a 30,000-character string and the keys), each request line ~9.3 KB:
    # 100 of them make a 4.3 MB batch, which Azurite (like the service) refuses with 413.
    entities = _entities(100, 30_000)
    target = storage.tables.create_table(unique_name("cjk"))

    outcome = submit_operations(target, upsert_operations(entities))

    assert (outcome.written, outcome.failed) == (100, 0)

    state = table_state(target)
    assert len(state) == 100
    assert state[(PARTITION, "042" + "行" * 509)]["text"] == ("Edm.String", "x" * 30_000)


def test_batches_are_packed_to_their_real_size(storage, unique_name):
    target = storage.tables.get_table_client(unique_name("sizes"))
    base = target.url.split("?")[0].rstrip("/")
    operations = list(upsert_operations(_entities(100, 30_000))) + [("delete", e) for e in _entities(30, 0)]

    batches = list(tablewriter._batches(operations, base, target.table_name))

    sizes = [len(tablewriter._multipart(target, batch)[1]) for batch in batches]
    assert all(size <= MAX_BATCH_BYTES for size in sizes)
    assert sum(len(batch) for batch in batches) == 130
    # Packed, not merely under the limit: the next operation would not have fitted.
    flat = [op for batch in batches for op in batch]
    start = 0
    for batch in batches[:-1]:
        start += len(batch)
        if (
            len(batch) < tablewriter.MAX_BATCH_OPERATIONS
            and flat[start][1]["PartitionKey"] == batch[0][1]["PartitionKey"]
        ):
            assert len(tablewriter._multipart(target, [*batch, flat[start]])[1]) > MAX_BATCH_BYTES
