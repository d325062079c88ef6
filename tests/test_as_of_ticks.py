"""--as-of keeps the 7th fractional digit: the bound is inclusive to the 100 ns tick, so a change
audited at exactly that instant is replayed and one a tick later is not, from the CLI, over HTTP
and through the restore queue."""

from __future__ import annotations

import json
from datetime import timedelta

import azure.functions as func
import orjson
import pytest

from localdev.host import QueueOutput
from localdev.sample import seed_table
from tablebackup.audit.messages import instant_text
from tablebackup.backup.archiver import backup_table
from tablebackup.core.instants import parse_instant
from tablebackup.restore.operations import request_from_json, request_json
from tablebackup.restore.pointintime import restore_to_instant
from tablebackup.restore.restorer import RestoreRequest
from tests.test_cli import run_cli
from tests.test_pointintime import A, Trail, _entity
from tests.wire import table_state


@pytest.fixture
def same_microsecond(audit_storage, unique_name):
    """A backed-up table, then two audited updates of A in one microsecond, ticks 7 and 8 of it.
    Returns the table, the two instants' text and the table's state after the first update."""
    table = unique_name("ticks")
    seed_table(audit_storage.tables, table, 5)
    trail = Trail(audit_storage, table)
    manifest = backup_table(audit_storage, table)
    microsecond = instant_text(manifest.finished_at + timedelta(seconds=1))[:-2]
    first, second = microsecond + "7Z", microsecond + "8Z"
    trail.write(_entity(A, "at tick 7", 7), parse_instant(first))
    after_first = table_state(trail.client)
    trail.write(_entity(A, "at tick 8", 8), parse_instant(second))
    return table, first, second, after_first


def test_parse_instant_keeps_the_seventh_digit():
    assert instant_text(parse_instant("2026-11-25T09:00:00.1234567Z")) == "2026-11-25T09:00:00.1234567Z"
    assert instant_text(parse_instant("2026-11-25T10:00:00.1234567+01:00")) == "2026-11-25T09:00:00.1234567Z"
    assert instant_text(parse_instant("2026-11-25T09:00:00.123456789")) == "2026-11-25T09:00:00.1234567Z"
    assert instant_text(parse_instant("2026-11-25T09:00:00Z")) == "2026-11-25T09:00:00.0000000Z"
    with pytest.raises(ValueError):
        parse_instant("yesterday")


def test_cli_as_of_is_inclusive_to_the_tick(audit_storage, same_microsecond, unique_name):
    table, first, _second, after_first = same_microsecond
    target = unique_name("cli")

    result = run_cli("restore", "-t", table, "--as-of", first, "--replay-audit", "--target", target, "--json")

    assert result.returncode == 0, result.stderr
    body = orjson.loads(result.stdout)
    assert (body["as_of"], body["replayed"]) == (first, 1)
    assert table_state(audit_storage.tables.get_table_client(target)) == after_first


def test_http_as_of_is_inclusive_to_the_tick(functions, audit_storage, same_microsecond, unique_name):
    table, first, _second, after_first = same_microsecond
    target = unique_name("http")
    body = {"table": table, "asOf": first, "replayAudit": True, "target": target}

    response = functions["restore_table"].get_user_function()(
        func.HttpRequest("POST", "http://localhost/api/restore", body=json.dumps(body).encode()), QueueOutput()
    )

    assert response.status_code == 200, response.get_body()
    answer = orjson.loads(response.get_body())
    assert (answer["as_of"], answer["replayed"]) == (first, 1)
    assert table_state(audit_storage.tables.get_table_client(target)) == after_first


def test_a_queued_request_keeps_the_tick(audit_storage, same_microsecond, unique_name):
    table, _first, second, _after_first = same_microsecond
    target = unique_name("queued")
    request = RestoreRequest(table=table, as_of=parse_instant(second), target=target)

    carried = request_from_json(json.loads(json.dumps(request_json(request, replay_audit=True))))

    assert instant_text(carried.as_of) == second
    assert restore_to_instant(audit_storage, carried).as_of == second
    assert table_state(audit_storage.tables.get_table_client(target))[A]["name"] == ("Edm.String", "at tick 8")
