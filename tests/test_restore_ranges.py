"""A restore cut into PartitionKey ranges: queued restores through the registered functions (each
range one message on restore-jobs, run by whichever instance takes it) and `restore --parallel N`,
against a real Azurite."""

from __future__ import annotations

import itertools
import json
import logging

import azure.functions as func
import orjson
import pytest
from azure.functions.queue import QueueMessage

from localdev.host import QueueOutput, deliver, invoke
from tablebackup.audit.queries import find_entries
from tablebackup.backup.archiver import backup_table, backup_tables
from tablebackup.cli.app import main
from tablebackup.core.settings import get_settings
from tablebackup.repository.erasures import erase
from tablebackup.restore import records
from tablebackup.restore.ranges import KeyRange, plan_ranges
from tablebackup.storage.tablewriter import submit_operations, upsert_operations
from tests.wire import table_state

# Keys the service orders by UTF-16 code units: quotes, spaces, unicode (BMP and astral), empty.
_PARTITIONS = ["", " space", "O'Brien", "a", "b", 'q"uote', "z", "ünï", "分区", "\U0001f680rocket", "\ufb01"]


def _entities(rows_per_partition: int) -> list[dict]:
    partitions = [f"{base}{n:02d}" for base in _PARTITIONS for n in range(6)] + [""]
    return [
        {"PartitionKey": partition, "RowKey": f"{row:04d}", "n": row, "p": partition}
        for partition in partitions
        for row in range(rows_per_partition)
    ]


@pytest.fixture
def source(audit_storage, unique_name):
    """A table of 67 partitions x 20 rows (1,340 entities), backed up in one blob."""
    table = unique_name("ranged")
    audit_storage.tables.create_table(table)
    client = audit_storage.tables.get_table_client(table)
    submit_operations(client, upsert_operations(_entities(20)))
    return client, table_state(client), backup_table(audit_storage, table)


@pytest.fixture
def queued(audit_storage, monkeypatch):
    """Restores above 100 entities are queued, and cut into ranges of about 200."""
    monkeypatch.setenv("RESTORE_HTTP_MAX_ENTITIES", "100")
    monkeypatch.setenv("RESTORE_PART_ENTITIES", "200")
    get_settings.cache_clear()
    from tablebackup.core.clients import Storage

    return Storage.from_settings()


def _post(functions, body: dict) -> tuple[func.HttpResponse, QueueOutput]:
    jobs = QueueOutput()
    request = func.HttpRequest("POST", "http://localhost/api/restore", body=json.dumps(body).encode())
    return functions["restore_table"].get_user_function()(request, jobs), jobs


def _status(functions, operation: str) -> dict:
    request = func.HttpRequest(
        "GET", f"http://localhost/api/restore/{operation}", body=b"", route_params={"operation": operation}
    )
    return orjson.loads(functions["restore_status"].get_user_function()(request).get_body())


def _pair(storage, table: str) -> tuple[dict, dict]:
    entries = find_entries(storage, table=table, operation="RESTORE")
    assert [entry["afterData"]["phase"] for entry in entries] == ["started", "ended"], entries
    started, ended = (entry["afterData"] for entry in entries)
    assert started["operation_id"] == ended["operation_id"]
    return started, ended


def test_the_ranges_cover_the_key_space_once_in_the_services_order(queued, source):
    client, original, manifest = source
    ranges = plan_ranges(queued.backups, manifest, 200)
    assert len(ranges) >= 5 and ranges[0].low is None and ranges[-1].high is None
    for before, after in itertools.pairwise(ranges):
        assert before.high == after.low is not None
    # Every entity the service holds falls in exactly one range, and the service's own filter on
    # each range's bounds selects exactly the entities the range claims.
    for key_range in ranges:
        listed = {(e["PartitionKey"], e["RowKey"]) for e in client.query_entities(key_range.odata() or "true")}
        claimed = {key for key in original if key_range.contains(key[0])}
        assert listed == claimed
    assert sum(sum(r.contains(pk) for r in ranges) == 1 for pk, _ in original) == len(original)


def test_a_queued_restore_runs_in_ranges_and_is_one_operation(functions, queued, source, unique_name):
    client, original, manifest = source
    target = unique_name("rangedcopy")

    response, jobs = _post(functions, {"table": client.table_name, "backup": "latest", "target": target})
    assert response.status_code == 202
    operation = orjson.loads(response.get_body())["operation"]

    worker = functions["restore_worker"].get_user_function()
    ranges = invoke(worker, QueueMessage(id="first", body=jobs.value.encode(), dequeue_count=1))
    assert len(ranges) >= 5
    assert _status(functions, operation)["ranges"] == {
        "total": len(ranges),
        "done": 0,
        "running": 0,
        "retrying": 0,
        "queued": len(ranges),
        "failed": 0,
    }
    # The ranges run in any order, each once.
    assert deliver(worker, list(reversed(ranges))) == {}

    status = _status(functions, operation)
    assert status["status"] == "succeeded", status
    assert status["ranges"]["done"] == len(ranges)
    assert (status["result"]["restored"], status["result"]["backup"]) == (1340, manifest.backup)
    assert status["progress"] == 1340
    assert table_state(queued.tables.get_table_client(target)) == original
    _, ended = _pair(queued, target)
    assert (ended["outcome"], ended["restored"], ended["ranges"]) == ("succeeded", 1340, len(ranges))


def test_ranges_delivered_again_write_nothing_more(functions, queued, source, unique_name):
    client, original, _ = source
    target = unique_name("redelivered")
    response, jobs = _post(functions, {"table": client.table_name, "backup": "latest", "target": target})
    operation = orjson.loads(response.get_body())["operation"]

    # Every message (the first one, then each range) is delivered twice: its ack was lost.
    assert deliver(functions["restore_worker"].get_user_function(), jobs.messages, lost_acks=1) == {}

    status = _status(functions, operation)
    assert status["status"] == "succeeded" and status["result"]["restored"] == 1340
    assert table_state(queued.tables.get_table_client(target)) == original
    _, ended = _pair(queued, target)
    assert ended["restored"] == 1340


def test_a_mirror_deletes_range_by_range_and_takes_one_safety_backup(functions, queued, source):
    client, original, manifest = source
    # Damage in several ranges: extra entities (one before every key, one after), changed and deleted ones.
    client.upsert_entity({"PartitionKey": "", "RowKey": "", "extra": 1})
    client.upsert_entity({"PartitionKey": "\U0010fffd", "RowKey": "x", "extra": 2})
    client.upsert_entity({"PartitionKey": "z03", "RowKey": "9999", "extra": 3})
    client.upsert_entity({"PartitionKey": "a01", "RowKey": "0001", "n": -1})
    client.delete_entity("分区02", "0005")
    response, jobs = _post(functions, {"table": client.table_name, "backup": "latest", "mode": "mirror"})
    operation = orjson.loads(response.get_body())["operation"]

    assert deliver(functions["restore_worker"].get_user_function(), jobs.messages) == {}

    status = _status(functions, operation)
    assert status["status"] == "succeeded", status
    assert (status["result"]["restored"], status["result"]["deleted"]) == (1340, 3)
    assert table_state(client) == original
    safety = status["result"]["safety_backup"]
    assert safety and status["result"]["undo"].endswith(f"--backup {safety} --mode mirror")
    assert status["safety_backup"] == safety
    _, ended = _pair(queued, client.table_name)
    assert (ended["deleted"], ended["safety_backup"]) == (3, safety)
    assert manifest.backup == status["backup"]


def test_a_range_that_fails_is_delivered_again_on_its_own(functions, queued, source, unique_name, monkeypatch):
    client, original, _ = source
    target = unique_name("retried")
    response, jobs = _post(functions, {"table": client.table_name, "backup": "latest", "target": target})
    operation = orjson.loads(response.get_body())["operation"]
    worker = functions["restore_worker"].get_user_function()
    ranges = invoke(worker, QueueMessage(id="first", body=jobs.value.encode(), dequeue_count=1))
    for index, body in enumerate(ranges[1:], start=1):
        invoke(worker, QueueMessage(id=f"r{index}", body=body.encode(), dequeue_count=1))
    assert _status(functions, operation)["status"] == "running"

    # The first range's first delivery fails: the table service is unreachable.
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", _unreachable(queued))
    monkeypatch.setenv("STORAGE_RETRIES", "0")
    get_settings.cache_clear()
    from tablebackup.core.clients import Storage

    with pytest.raises(Exception, match=r"failed|unreachable|refused"):
        invoke(worker, QueueMessage(id="r0", body=ranges[0].encode(), dequeue_count=1))
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", queued.settings.storage_connection_string)
    get_settings.cache_clear()
    assert Storage.from_settings().tables.url == queued.tables.url

    invoke(worker, QueueMessage(id="r0", body=ranges[0].encode(), dequeue_count=2))

    status = _status(functions, operation)
    assert status["status"] == "succeeded" and status["result"]["restored"] == 1340
    assert table_state(queued.tables.get_table_client(target)) == original


def _unreachable(storage) -> str:
    """The same account on a port nothing listens on."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    text = storage.settings.storage_connection_string
    start = text.index("TableEndpoint=")
    end = text.index(";", start)
    return text[:start] + f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1" + text[end:]


def test_a_damaged_backup_fails_the_operation_before_any_range_writes(functions, queued, source, unique_name):
    client, _, manifest = source
    target = unique_name("damaged")
    response, jobs = _post(functions, {"table": client.table_name, "backup": "latest", "target": target})
    operation = orjson.loads(response.get_body())["operation"]
    blob = queued.backups.get_blob_client(manifest.data_blob)
    data = blob.download_blob().readall()
    blob.upload_blob(data[:-20] + bytes(20), overwrite=True)

    assert invoke(functions["restore_worker"].get_user_function(), QueueMessage(id="m", body=jobs.value.encode())) == []

    status = _status(functions, operation)
    assert status["status"] == "failed" and "damaged" in status["error"]
    assert target not in [t.name for t in queued.tables.list_tables()]
    assert find_entries(queued, table=target, operation="RESTORE") == []


def test_erased_keys_stay_out_of_every_range(functions, queued, source, unique_name):
    client, original, _ = source
    erase(queued, client.table_name, "O'Brien03", "0007", reason="request 7", actor="dpo")
    target = unique_name("erasedcopy")
    response, jobs = _post(functions, {"table": client.table_name, "backup": "latest", "target": target})
    operation = orjson.loads(response.get_body())["operation"]

    assert deliver(functions["restore_worker"].get_user_function(), jobs.messages) == {}

    status = _status(functions, operation)
    assert (status["result"]["restored"], status["result"]["erased"]) == (1339, 1)
    expected = {key: value for key, value in original.items() if key != ("O'Brien03", "0007")}
    assert table_state(queued.tables.get_table_client(target)) == expected


def test_a_multi_part_backup_is_restored_part_by_part(functions, queued, source, unique_name, monkeypatch):
    client, original, _ = source
    monkeypatch.setenv("FANOUT_THRESHOLD_ENTITIES", "100")
    monkeypatch.setenv("PART_TARGET_ENTITIES", "300")
    get_settings.cache_clear()
    from tablebackup.core.clients import Storage

    storage = Storage.from_settings()
    manifest = backup_tables(storage, [client.table_name], parallel=2).backups[0]
    assert manifest.parts and len(manifest.parts) >= 3
    ranges = plan_ranges(storage.backups, manifest, 200)
    assert {r.part for r in ranges} == set(range(len(manifest.parts)))
    target = unique_name("partcopy")
    response, jobs = _post(functions, {"table": client.table_name, "backup": manifest.backup, "target": target})
    operation = orjson.loads(response.get_body())["operation"]

    assert deliver(functions["restore_worker"].get_user_function(), jobs.messages) == {}

    status = _status(functions, operation)
    assert status["status"] == "succeeded" and status["result"]["restored"] == 1340
    assert table_state(storage.tables.get_table_client(target)) == original


@pytest.mark.parametrize(
    "body",
    [
        {"operation": "0" * 32, "request": {"table": "t"}, "range": {"index": -1}},
        {"operation": "0" * 32, "request": {"table": "t"}, "range": {"index": 0, "low": 5}},
        {"operation": "../x", "request": {"table": "t"}, "range": {"index": 0}},
        {"operation": "0" * 32, "request": {"table": "t"}, "range": "all"},
    ],
)
def test_malformed_range_messages_are_refused_and_write_nothing(functions, queued, body):
    assert (
        invoke(functions["restore_worker"].get_user_function(), QueueMessage(id="bad", body=orjson.dumps(body))) == []
    )
    assert records.range_rows(queued, "0" * 32) == []


def test_key_range_json_is_exact():
    key_range = KeyRange(index=3, low="a'b", high="\U0001f680", part=2)
    assert KeyRange.from_json(orjson.loads(orjson.dumps(key_range.as_json()))) == key_range
    assert KeyRange(index=0).odata() is None
    assert KeyRange(index=1, low="O'B").odata() == "PartitionKey ge 'O''B'"


def test_the_cli_restores_in_parallel_range_streams(queued, source, unique_name, capsys, caplog):
    client, original, manifest = source
    target = unique_name("parallelcopy")
    caplog.set_level(logging.INFO, logger="tablebackup.restore.restorer")

    code = main(
        ["restore", "--table", client.table_name, "--backup", "latest", "--target", target, "--parallel", "4", "--json"]
    )

    assert code == 0
    assert "7 key ranges, 4 at a time" in caplog.text  # 1,340 entities: ranges of at most 200
    result = json.loads(capsys.readouterr().out)
    assert (result["restored"], result["backup"]) == (1340, manifest.backup)
    assert table_state(queued.tables.get_table_client(target)) == original
    _, ended = _pair(queued, target)
    assert ended["restored"] == 1340


def test_the_cli_refuses_a_parallel_count_out_of_range(queued, source, capsys):
    client, _, _ = source
    for value in ("0", "-1", "x", "65"):
        assert main(["restore", "--table", client.table_name, "--backup", "latest", "--parallel", value]) == 2
        assert "--parallel" in capsys.readouterr().err


def test_a_range_whose_delivery_breaks_unexpectedly_is_not_taken_for_a_duplicate(
    functions, queued, source, unique_name, monkeypatch
):
    """The worker dies of something unforeseen after writing (here: an error raised once, after the
    real write): the queue delivers the range again within the lease, and it must run, not be
    skipped as a duplicate of a range still `running`."""
    from tablebackup.restore import fanout

    client, original, _ = source
    target = unique_name("broken")
    response, jobs = _post(functions, {"table": client.table_name, "backup": "latest", "target": target})
    operation = orjson.loads(response.get_body())["operation"]
    worker = functions["restore_worker"].get_user_function()
    ranges = invoke(worker, QueueMessage(id="first", body=jobs.value.encode(), dequeue_count=1))
    real = fanout.write_range

    def breaks_once(*args, **kwargs):
        monkeypatch.setattr(fanout, "write_range", real)
        real(*args, **kwargs)
        raise RuntimeError("the worker broke after writing")

    monkeypatch.setattr(fanout, "write_range", breaks_once)
    with pytest.raises(RuntimeError):
        invoke(worker, QueueMessage(id="r0", body=ranges[0].encode(), dequeue_count=1))
    assert records.range_row(queued, operation, 0)["status"] == "retrying"

    assert deliver(worker, ranges) == {}  # the redelivery of range 0, and the others

    status = _status(functions, operation)
    assert status["status"] == "succeeded" and status["result"]["restored"] == 1340
    assert table_state(queued.tables.get_table_client(target)) == original
