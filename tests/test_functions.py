"""The registered Functions app: binding metadata, and each backup function run with real
azure.functions request objects against Azurite."""

from __future__ import annotations

import json
from pathlib import Path

import azure.functions as func
import orjson
import pytest
from azure.functions.timer import TimerRequest

from localdev.host import InvocationContext, QueueOutput, deliver
from localdev.sample import seed_table
from tablebackup.backup.archiver import backup_table
from tablebackup.core.settings import get_settings
from tablebackup.repository import catalog

ROOT = Path(__file__).resolve().parent.parent


def _post(body: bytes | str = b"", route: str = "backups") -> func.HttpRequest:
    data = body.encode() if isinstance(body, str) else body
    return func.HttpRequest("POST", f"http://localhost/api/{route}", body=data, headers={"x-functions-key": "k"})


def _get(params: dict, route: str = "backups") -> func.HttpRequest:
    return func.HttpRequest("GET", f"http://localhost/api/{route}", params=params, body=b"")


def _json(response: func.HttpResponse) -> dict:
    assert response.mimetype == "application/json"
    return orjson.loads(response.get_body())


def test_function_app_registers_the_backup_functions_with_their_bindings(functions):
    assert {"backup_daily", "backup_now", "list_backups"} <= set(functions)

    timer = functions["backup_daily"].get_trigger()
    assert timer.get_dict_repr()["type"] == "timerTrigger"
    assert timer.schedule == "%BACKUP_SCHEDULE%"
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    assert sample["BACKUP_SCHEDULE"] == "0 0 2 * * *"  # 2:00 UTC daily

    for name, method in (("backup_now", "POST"), ("list_backups", "GET")):
        trigger = functions[name].get_trigger()
        assert trigger.route == "backups"
        assert [str(m.value if hasattr(m, "value") else m) for m in trigger.methods] == [method]
        assert trigger.auth_level == func.AuthLevel.FUNCTION


def test_no_http_function_is_anonymous(functions):
    for function in functions.values():
        trigger = function.get_trigger()
        if trigger.get_dict_repr()["type"] == "httpTrigger":
            assert trigger.auth_level != func.AuthLevel.ANONYMOUS, function.get_function_name()


def test_the_daily_run_fans_out_on_the_backup_queue(functions):
    [jobs] = [
        b.get_dict_repr() for b in functions["backup_daily"].get_bindings() if b.get_dict_repr()["type"] == "queue"
    ]
    worker = functions["backup_worker"].get_trigger().get_dict_repr()
    assert (jobs["queueName"], jobs["connection"]) == ("backup-jobs", "AzureWebJobsStorage")
    assert (worker["type"], worker["queueName"], worker["connection"]) == (
        "queueTrigger",
        "backup-jobs",
        "AzureWebJobsStorage",
    )


def _daily_run(functions) -> dict:
    """The timer, then the host delivering each queued item to the worker."""
    jobs = QueueOutput()
    functions["backup_daily"].get_user_function()(TimerRequest(past_due=False), jobs)
    return deliver(functions["backup_worker"].get_user_function(), jobs.messages)


def test_daily_timer_backs_up_the_configured_tables(functions, storage, env, monkeypatch, unique_name):
    tables = [unique_name("daily"), unique_name("daily")]
    for table in tables:
        seed_table(storage.tables, table, 40)
    monkeypatch.setenv("BACKUP_TABLES", ",".join(tables))
    get_settings.cache_clear()

    assert _daily_run(functions) == {}

    for table in tables:
        assert [m.entities for m in catalog.list_backups(storage.backups, table)] == [40]


def test_a_table_that_fails_for_good_fails_its_item_visibly_and_the_rest_are_backed_up(
    functions, storage, env, monkeypatch, unique_name
):
    good, missing = unique_name("good"), unique_name("gone")
    seed_table(storage.tables, good, 5)
    monkeypatch.setenv("BACKUP_TABLES", f"{missing},{good}")
    get_settings.cache_clear()

    poisoned = _daily_run(functions)

    [(message, error)] = poisoned.items()
    assert missing in message and "does not exist" in str(error)
    assert len(catalog.list_backups(storage.backups, good)) == 1
    assert catalog.list_backups(storage.backups, missing) == []


def test_daily_timer_with_a_bad_setting_fails_naming_it(functions, env, monkeypatch):
    monkeypatch.setenv("BACKUP_CONTAINER", "Bad_Container")
    get_settings.cache_clear()

    with pytest.raises(Exception, match="setting BACKUP_CONTAINER"):
        functions["backup_daily"].get_user_function()(TimerRequest(past_due=False), QueueOutput())


def test_post_backups_backs_up_the_requested_tables(functions, storage, unique_name):
    table = unique_name("ondemand")
    seed_table(storage.tables, table, 12)

    response = functions["backup_now"].get_user_function()(
        _post(json.dumps({"tables": [table]})), InvocationContext("backup_now")
    )

    assert response.status_code == 200
    body = _json(response)
    assert body["failed"] == []
    [backup] = body["backups"]
    assert (backup["table"], backup["entities"]) == (table, 12)
    assert catalog.read_manifest(storage.backups, backup["backup"]).sha256 == backup["sha256"]


def test_post_backups_without_a_body_backs_up_the_configured_table(functions, storage, env):
    seed_table(storage.tables, env["TABLE_NAME"], 3)

    response = functions["backup_now"].get_user_function()(_post(), InvocationContext("backup_now"))

    assert response.status_code == 200
    assert [b["table"] for b in _json(response)["backups"]] == [env["TABLE_NAME"]]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"tables": "candidates"}', "tables"),
        ('{"tables": []}', "at least one table"),
        ('{"tabels": ["candidates"]}', "tabels"),
        ('{"tables": ["bad-name"]}', "invalid table name"),
        ('{"all": "yes please"}', "all"),
        ("x" * 70_000, "larger than"),
    ],
)
def test_post_backups_refuses_bad_requests_with_one_line_and_writes_nothing(functions, storage, body, message):
    response = functions["backup_now"].get_user_function()(_post(body), InvocationContext("backup_now"))

    assert response.status_code == 400
    error = _json(response)["error"]
    assert message in error and "\n" not in error
    assert not storage.backups.exists()


def test_post_backups_for_an_unknown_table_is_404_and_writes_nothing(functions, storage, unique_name):
    missing = unique_name("nosuch")

    response = functions["backup_now"].get_user_function()(
        _post(json.dumps({"tables": [missing]})), InvocationContext("backup_now")
    )

    assert response.status_code == 404
    body = _json(response)
    assert body["failed"] == [{"table": missing, "error": body["failed"][0]["error"]}]
    assert "does not exist" in body["error"]
    assert catalog.list_backups(storage.backups, missing) == []


def test_get_backups_lists_complete_backups_newest_first(functions, storage, unique_name):
    table = unique_name("listed")
    seed_table(storage.tables, table, 7)
    older, newer = backup_table(storage, table), backup_table(storage, table)

    response = functions["list_backups"].get_user_function()(_get({"table": table}))

    assert response.status_code == 200
    body = _json(response)
    assert body["table"] == table
    assert [b["backup"] for b in body["backups"]] == [newer.backup, older.backup]
    assert body["backups"][0]["entities"] == 7 and body["backups"][0]["taken_at"].endswith("Z")


@pytest.mark.parametrize(
    ("params", "message"), [({"table": "no-dashes"}, "invalid table name"), ({"tabel": "x"}, "tabel")]
)
def test_get_backups_refuses_bad_queries(functions, env, params, message):
    response = functions["list_backups"].get_user_function()(_get(params))

    assert response.status_code == 400
    assert message in _json(response)["error"]


def test_http_functions_report_unreachable_storage_as_503(functions, env, monkeypatch):
    from localdev.azurite import connection_string, free_port

    dead = free_port()
    monkeypatch.setenv("BACKUP_BLOB_CONNECTION_STRING", connection_string(dead, dead, dead))
    monkeypatch.setenv("STORAGE_RETRIES", "0")
    get_settings.cache_clear()

    response = functions["list_backups"].get_user_function()(_get({}))

    assert response.status_code == 503
    assert "unreachable" in _json(response)["error"]


def test_the_function_key_in_the_query_string_is_not_taken_for_a_parameter(functions, storage, unique_name):
    table = unique_name("keyed")
    seed_table(storage.tables, table, 2)
    backup_table(storage, table)

    response = functions["list_backups"].get_user_function()(_get({"table": table, "code": "the-function-key"}))

    assert response.status_code == 200 and len(_json(response)["backups"]) == 1


def test_binding_parameters_carry_types_the_python_worker_accepts(functions):
    """The worker refuses string annotations (from __future__ import annotations) and builtin
    generics such as list[str] on binding parameters; a refused function never registers."""
    import inspect
    import types
    import typing

    for name, function in functions.items():
        for parameter in inspect.signature(function.get_user_function()).parameters.values():
            annotation = parameter.annotation
            assert not isinstance(annotation, str), (name, parameter.name)
            for argument in typing.get_args(annotation):
                assert not isinstance(argument, types.GenericAlias), (name, parameter.name, argument)


def test_every_function_is_registered_with_the_documented_binding(functions):
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    timers = {
        name: function.get_trigger().schedule
        for name, function in functions.items()
        if function.get_trigger().get_dict_repr()["type"] == "timerTrigger"
    }
    assert timers == {
        "backup_daily": "%BACKUP_SCHEDULE%",
        "verify_daily": "%VERIFY_SCHEDULE%",
        "prune_daily": "%PRUNE_SCHEDULE%",
        "dr_drill": "%DRILL_SCHEDULE%",
    }
    # Backup at 02:00, verification at 02:30, pruning at 03:00; drills monthly.
    assert {name: sample[setting.strip("%")] for name, setting in timers.items()} == {
        "backup_daily": "0 0 2 * * *",
        "verify_daily": "0 30 2 * * *",
        "prune_daily": "0 0 3 * * *",
        "dr_drill": "0 0 4 1 * *",
    }

    routes = {
        (str(method.value if hasattr(method, "value") else method), function.get_trigger().route)
        for function in functions.values()
        if function.get_trigger().get_dict_repr()["type"] == "httpTrigger"
        for method in function.get_trigger().methods
    }
    assert routes == {
        ("POST", "backups"),
        ("GET", "backups"),
        ("GET", "backups/{id}"),
        ("POST", "restore"),
        ("GET", "restore/{operation}"),
        ("GET", "drills"),
        ("GET", "audit"),
        ("GET", "export/{table}"),
        ("POST", "import/{table}"),
        ("GET", "status"),
        ("GET", "status/page"),
    }
    queues = {
        name: function.get_trigger().get_dict_repr()["queueName"]
        for name, function in functions.items()
        if function.get_trigger().get_dict_repr()["type"] == "queueTrigger"
    }
    assert queues == {"backup_worker": "backup-jobs", "restore_worker": "restore-jobs", "audit_writer": "%AUDIT_QUEUE%"}
