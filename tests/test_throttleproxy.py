"""The throttling proxy (localdev.throttleproxy) against a real Azurite: beyond a partition's or the
account's rate it answers 503 Server Busy with the Table service's error document before anything
reaches Azurite, and the Azure SDK's retries get through once the buckets refill."""

from __future__ import annotations

import orjson
import pytest
from azure.core.exceptions import HttpResponseError
from azure.data.tables import TableClient

from localdev.throttleproxy import Limits, ThrottleProxy, table_port, through_proxy

# Tiny latencies: the tests are about the limits, not the time a request takes.
FAST = {"request_seconds": 0.0, "read_entity_seconds": 0.0, "write_entity_seconds": 0.0}


class StillClock:
    """The buckets' clock, held still: nothing refills unless the test moves it."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _client(connection_string: str, table: str, **retry) -> TableClient:
    return TableClient.from_connection_string(connection_string, table, **retry)


def _batch(partition: str, start: int, count: int) -> list:
    return [("upsert", {"PartitionKey": partition, "RowKey": f"{i:05d}", "n": i}) for i in range(start, start + count)]


def _count(client: TableClient, partition: str) -> int:
    return sum(1 for _ in client.query_entities(f"PartitionKey eq '{partition}'", select=["RowKey"]))


@pytest.fixture
def table(azurite_connection_string, unique_name):
    name = unique_name("throttle")
    direct = _client(azurite_connection_string, name)
    direct.create_table()
    yield name, direct
    direct.delete_table()


def test_beyond_the_partition_rate_a_batch_is_refused_whole_with_the_services_answer(azurite_connection_string, table):
    name, direct = table
    clock = StillClock()
    limits = Limits(partition_per_second=20, account_per_second=200, **FAST)
    with ThrottleProxy(table_port(azurite_connection_string), limits, clock=clock) as proxy:
        throttled = _client(through_proxy(azurite_connection_string, proxy.port), name, retry_total=0)
        throttled.submit_transaction(_batch("a", 0, 50))  # within the bucket: it goes into debt
        with pytest.raises(HttpResponseError) as refused:
            throttled.submit_transaction(_batch("a", 50, 50))
        response = refused.value.response
        assert response.status_code == 503
        assert response.reason == "Server Busy"
        assert response.headers["x-ms-error-code"] == "ServerBusy"
        assert response.headers["Content-Type"].startswith("application/json;odata=minimalmetadata")
        error = orjson.loads(response.body())["odata.error"]
        assert error["code"] == "ServerBusy"
        assert error["message"]["lang"] == "en-US"
        assert error["message"]["value"].startswith("The server is busy.\nRequestId:")
        # Another partition is not held back by this one's debt.
        throttled.submit_transaction(_batch("b", 0, 10))
        assert proxy.counters.refused_partition == 1
        assert proxy.counters.by_partition == {"a": 50, "b": 10}
    # The refused transaction wrote nothing.
    assert _count(direct, "a") == 50
    assert _count(direct, "b") == 10


def test_the_account_limit_holds_across_partitions(azurite_connection_string, table):
    name, direct = table
    clock = StillClock()
    limits = Limits(partition_per_second=100, account_per_second=150, **FAST)
    with ThrottleProxy(table_port(azurite_connection_string), limits, clock=clock) as proxy:
        throttled = _client(through_proxy(azurite_connection_string, proxy.port), name, retry_total=0)
        throttled.submit_transaction(_batch("a", 0, 100))
        throttled.submit_transaction(_batch("b", 0, 100))  # the account's 50 left: into debt
        with pytest.raises(HttpResponseError) as refused:
            throttled.create_entity({"PartitionKey": "c", "RowKey": "1"})  # a partition never used
        error = orjson.loads(refused.value.response.body())["odata.error"]
        assert error["message"]["value"].startswith("Operations per second is over the account limit.")
        assert proxy.counters.refused_account == 1
        clock.now += 1.0  # 150 entities' worth refilled: the debt of 50 paid, 100 left
        throttled.create_entity({"PartitionKey": "c", "RowKey": "1"})
    assert _count(direct, "c") == 1


def test_a_query_is_charged_the_entities_it_returned(azurite_connection_string, table):
    name, direct = table
    direct.submit_transaction(_batch("a", 0, 30))
    clock = StillClock()
    limits = Limits(partition_per_second=20, account_per_second=200, **FAST)
    with ThrottleProxy(table_port(azurite_connection_string), limits, clock=clock) as proxy:
        throttled = _client(through_proxy(azurite_connection_string, proxy.port), name, retry_total=0)
        assert _count(throttled, "a") == 30  # admitted with the bucket full, then charged 30
        with pytest.raises(HttpResponseError) as refused:
            throttled.get_entity("a", "00001")
        assert refused.value.status_code == 503
        clock.now += 0.5  # 10 refilled: the debt of 10 paid back, not yet above zero
        with pytest.raises(HttpResponseError):
            throttled.get_entity("a", "00001")
        clock.now += 0.1
        assert throttled.get_entity("a", "00001")["n"] == 1
        assert proxy.counters.by_partition == {"a": 31}


def test_the_sdk_retries_through_throttling_and_every_entity_arrives_once(azurite_connection_string, table):
    name, direct = table
    limits = Limits(partition_per_second=100, account_per_second=1000, **FAST)
    with ThrottleProxy(table_port(azurite_connection_string), limits) as proxy:
        throttled = _client(
            through_proxy(azurite_connection_string, proxy.port),
            name,
            retry_total=10,
            retry_status=10,
            retry_backoff_factor=0.1,
        )
        for start in range(0, 300, 100):  # 300 entities in one partition: 2 s beyond its bucket
            throttled.submit_transaction(_batch("a", start, 100))
        assert proxy.counters.refused_partition > 0
        assert proxy.counters.by_partition == {"a": 300}
    assert _count(direct, "a") == 300


def test_the_writer_slows_down_when_throttled_and_every_entity_lands_once(azurite_connection_string, table):
    """The product's own batch writer against the proxy: eight batches in flight at first, more than
    the account allows; it gets 503s, halves what it keeps in flight, and still writes every entity
    exactly once, with true counts (STORAGE_RETRIES=2 alone would not have been enough)."""
    from tablebackup.storage.tablewriter import submit_operations, upsert_operations

    name, direct = table
    limits = Limits(partition_per_second=200, account_per_second=400, **FAST)
    entities = [{"PartitionKey": f"p{i % 10}", "RowKey": f"{i:05d}", "n": i} for i in range(2000)]
    entities.sort(key=lambda e: (e["PartitionKey"], e["RowKey"]))
    with ThrottleProxy(table_port(azurite_connection_string), limits) as proxy:
        throttled = _client(
            through_proxy(azurite_connection_string, proxy.port), name, retry_total=2, retry_backoff_factor=0.05
        )
        outcome = submit_operations(throttled, upsert_operations(entities), workers=8)
        assert proxy.counters.refused > 0 and outcome.busy > 0
    assert (outcome.written, outcome.uncertain, outcome.failed) == (2000, 0, 0)
    assert sum(1 for _ in direct.list_entities(select=["RowKey"])) == 2000
