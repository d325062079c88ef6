"""A table's first backup (no key samples yet) is split by probing its key space with point
queries, on real Azurite, through the timer's plan and the registered queue worker: the parts cover
the table exactly (unicode and empty PartitionKeys too), and a table of one partition stays one item."""

from __future__ import annotations

import logging

import orjson
import pytest

from localdev.host import deliver
from tablebackup.backup import runs
from tablebackup.core.clients import Storage
from tablebackup.core.settings import get_settings
from tablebackup.repository import catalog
from tablebackup.restore.restorer import RestoreRequest, restore
from tablebackup.storage import keyspace
from tablebackup.verify.checker import verify_backup
from tests.wire import table_state

# Keys the service orders by UTF-16 code units: "" first, then ASCII, a quote (doubled in a
# literal), Latin-1, CJK, and a character outside the BMP (a surrogate pair sorts below U+E000).
ODD_KEYS = ["", "it's", "Ünïcode", "ünï", "日本", "😀x", "\ue000z"]


@pytest.fixture
def small_pages(env, monkeypatch, unique_name):
    """One table to back up, and a first page small enough that a few hundred entities are 'large'."""
    monkeypatch.setattr(keyspace, "SMALL_TABLE_ENTITIES", 50)
    monkeypatch.setenv("MAX_PARTS", "6")
    table = unique_name("first")
    monkeypatch.setenv("BACKUP_TABLES", table)
    get_settings.cache_clear()
    return Storage.from_settings(), table


def _seed(storage: Storage, table: str, keys: list[str], rows: int) -> None:
    client = storage.tables.create_table(table)
    for key in keys:
        operations = [("upsert", {"PartitionKey": key, "RowKey": f"{row:04d}", "n": row}) for row in range(rows)]
        client.submit_transaction(operations)


def _scheduled_run(storage: Storage, functions) -> list[dict]:
    run, messages = runs.start_run(storage)
    assert deliver(functions["backup_worker"].get_user_function(), messages) == {}
    assert runs.run_status(storage, run)["status"] == "succeeded"
    return [orjson.loads(message) for message in messages]


def test_a_first_backup_of_many_partitions_is_split_and_covers_the_table_exactly(
    small_pages, functions, unique_name, caplog
):
    storage, table = small_pages
    _seed(storage, table, [f"p{index:03d}" for index in range(40)] + ODD_KEYS, rows=6)
    client = storage.tables.get_table_client(table)
    original = table_state(client)

    with caplog.at_level(logging.INFO, logger="tablebackup.backup.fanout"):
        items = _scheduled_run(storage, functions)

    assert 1 < len(items) <= 6 and all(item["table"] == table for item in items)
    cuts = [item["low"] for item in items[1:]]
    assert cuts == sorted(cuts, key=lambda key: key.encode("utf-16-be", "surrogatepass"))
    assert [item["high"] for item in items[:-1]] == cuts and items[0]["low"] is None and items[-1]["high"] is None
    probed = next(record for record in caplog.records if "key space probed" in record.getMessage())
    assert 2 <= probed.queries <= 64
    manifest = catalog.latest_backup(storage.backups, table)
    assert manifest.parts and len(manifest.parts) == len(items)
    assert manifest.entities == len(original) == 47 * 6
    # Spread across the key space: no part holds most of the table (the cut isn't by count).
    assert max(part.lines for part in manifest.parts) < manifest.entities / 2
    assert verify_backup(storage, table).ok
    target = unique_name("restored")
    restore(storage, RestoreRequest(table=table, backup=manifest.backup, target=target))
    assert table_state(storage.tables.get_table_client(target)) == original
    # The backup recorded key samples: the next full backup is cut at those, without probing.
    assert manifest.key_samples


def test_a_first_backup_of_one_partition_stays_one_item(small_pages, functions):
    storage, table = small_pages
    _seed(storage, table, ["only"], rows=100)

    [item] = _scheduled_run(storage, functions)

    assert item["parts"] == 1 and item["low"] is None and item["high"] is None
    manifest = catalog.latest_backup(storage.backups, table)
    assert manifest.parts is None and manifest.entities == 100


def test_a_table_that_fits_in_the_first_page_is_one_item_after_one_query(storage, unique_name):
    table = unique_name("tiny")
    _seed(storage, table, ["a", "b", "c"], rows=3)

    probe = keyspace.probe_cuts(storage.tables.get_table_client(table), parts=8, budget=64)

    assert (probe.first, probe.cuts, probe.queries, probe.small) == ("a", [], 1, True)


def test_probes_between_unicode_and_quoted_keys_are_valid_literals_in_the_service_order(small_pages):
    """Probes are built between keys of every kind (a quote, Latin-1, CJK, surrogate pairs, the
    private use area): the service accepts each as a literal, and the cuts are existing keys in its
    order, found within the budget."""
    storage, table = small_pages
    keys = [*ODD_KEYS, *(f"{char}{index}" for char in "'éЖ日😀\ue000" for index in range(12))]
    _seed(storage, table, keys, rows=2)  # the first page (50) holds the quoted keys and some é ones

    probe = keyspace.probe_cuts(storage.tables.get_table_client(table), parts=8, budget=40)

    assert len(probe.cuts) >= 4 and probe.queries <= 40 and probe.first == ""
    assert set(probe.cuts) <= set(keys)
    assert probe.cuts == sorted(probe.cuts, key=lambda key: key.encode("utf-16-be", "surrogatepass"))
