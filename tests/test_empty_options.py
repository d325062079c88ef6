"""Narrowing options are never empty (issue #22): a given but empty or blank value that names or
narrows what a command touches (a table, a backup, a filter, a file...) is bad usage, never the
option's default: CLI exit 2 with one `error:` line naming the option, HTTP 400 naming the field,
and nothing written. Keys are the exception: an empty PartitionKey or RowKey is a key."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import uuid
from pathlib import Path

import azure.functions as func
import orjson
import pytest

from localdev.host import InvocationContext, QueueOutput
from localdev.sample import seed_table
from tablebackup.backup.archiver import backup_table
from tablebackup.core.settings import get_settings
from tablebackup.repository import catalog, erasures
from tests.test_cli import run_cli
from tests.wire import table_state


def run_cli_here(*args: str) -> subprocess.CompletedProcess:
    """The CLI's main() in this process, with its own stdout and stderr."""
    from tablebackup.cli.app import main
    from tablebackup.core.settings import get_settings

    out, err = io.StringIO(), io.StringIO()
    get_settings.cache_clear()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    get_settings.cache_clear()
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


ROOT = Path(__file__).resolve().parent.parent
EXISTING_FILE = str(ROOT / "pyproject.toml")


@pytest.fixture
def backed_up(storage, unique_name):
    """A table with entities and one backup: what a refused command must leave as it was."""
    table = unique_name("narrow")
    seed_table(storage.tables, table, 20)
    backup_table(storage, table)
    client = storage.tables.get_table_client(table)
    return table, client


def _snapshot(storage, table: str, client) -> tuple:
    return table_state(client), catalog.backup_attempts(storage.backups, table), erasures.count(storage, table)


def _one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    return lines[0]


# (arguments, the option the error must name); {t} is the backed-up table.
CLI_CASES = [
    (["restore", "-t", "{t}", "--backup", "latest", "--filter", "", "--mode", "mirror"], "--filter"),
    (["restore", "-t", "{t}", "--backup", "latest", "--filter", "  ", "--mode", "mirror"], "--filter"),
    (["restore", "-t", "", "--backup", "latest"], "--table"),
    (["restore", "-t", "{t}", "--backup", ""], "--backup"),
    (["restore", "-t", "{t}", "--backup", "latest", "--target", " "], "--target"),
    (["restore", "-t", "{t}", "--backup", "latest", "--types", ""], "--types"),
    (["restore", "-t", "{t}", "--as-of", ""], "--as-of"),
    (["undelete", "-t", "{t}", "--partition-key", "", "--row-key", "", "--target", ""], "--target"),
    (["backup", "-t", ""], "--table"),
    (["backup", "-t", "{t}", "-t", " "], "--table"),
    (["list-backups", "--table", ""], "--table"),
    (["show", "-t", "{t}", "--backup", ""], "--backup"),
    (["diff", "-t", "{t}", "--from", ""], "--from"),
    (["diff", "-t", "{t}", "--from", "latest", "--to", ""], "--to"),
    (["diff", "-t", "{t}", "--from", "latest", "--filter", ""], "--filter"),
    (["diff", "-t", "{t}", "--from", "latest", "--output", ""], "--output"),
    (["history", "-t", "", "--partition-key", "", "--row-key", ""], "--table"),
    (["prune", "-t", "", "--keep-daily", "0", "--keep-weekly", "0", "--keep-monthly", "0"], "--table"),
    (["prune", "-t", "{t}", "--now", ""], "--now"),
    (["export", "-t", ""], "--table"),
    (["export", "-t", "{t}", "--filter", "", "--output", "-"], "--filter"),
    (["export", "-t", "{t}", "--select", " ", "--output", "-"], "--select"),
    (["export", "-t", "{t}", "--output", ""], "--output"),
    (["import", "-t", "{t}", "--input", ""], "--input"),
    (["import", "-t", "", "--input", EXISTING_FILE], "--table"),
    (["import", "-t", "{t}", "--input", EXISTING_FILE, "--types", " "], "--types"),
    (["status", "-t", ""], "--table"),
    (["status", "--page", ""], "--page"),
    (["audit", "-t", ""], "--table"),
    (["audit", "--user", ""], "--user"),
    (["audit", "--since", ""], "--since"),
    (["audit", "--operation", ""], "--operation"),
    (["verify", "-t", ""], "--table"),
    (["verify", "-t", "{t}", "--backup", ""], "--backup"),
    (["drill", "-t", " "], "--table"),
    (["erase", "-t", "", "--partition-key", "p", "--row-key", "r", "--reason", "ticket 1"], "--table"),
    (["erase", "-t", "{t}", "--partition-key", "p", "--row-key", "r", "--reason", " "], "--reason"),
]


@pytest.mark.parametrize(("args", "option"), CLI_CASES, ids=[" ".join([*a[:1], o]) for a, o in CLI_CASES])
def test_a_blank_narrowing_option_is_bad_usage_and_writes_nothing(storage, backed_up, args, option):
    table, client = backed_up
    before = _snapshot(storage, table, client)

    # In this process, as the docs' examples run: 37 interpreters starting would cost half a minute;
    # the subprocess path is covered by the cases below.
    result = run_cli_here(*[arg.replace("{t}", table) for arg in args])

    assert result.returncode == 2, result.stderr
    line = _one_error_line(result)
    assert option in line, line
    assert result.stdout == ""
    assert _snapshot(storage, table, client) == before


def test_with_json_the_refusal_is_one_document(storage, backed_up):
    table, _ = backed_up

    result = run_cli("restore", "-t", table, "--backup", "latest", "--filter", "", "--mode", "mirror", "--json")

    assert result.returncode == 2
    document = json.loads(result.stdout)
    assert document["exit_code"] == 2 and "--filter" in document["error"] and "is empty" in document["error"]


def test_omitted_options_keep_their_defaults(storage, env, backed_up):
    """list-backups without --table still lists TABLE_NAME's backups (here: a table with none)."""
    seed_table(storage.tables, env["TABLE_NAME"], 1)

    result = run_cli("list-backups")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"no complete backups of {env['TABLE_NAME']}"


def test_list_backups_of_a_table_that_neither_exists_nor_has_backups_says_so(storage, unique_name):
    missing = unique_name("nosuch")

    result = run_cli("list-backups", "--table", missing)

    assert result.returncode == 1
    line = _one_error_line(result)
    assert f"table {missing!r} neither exists nor has complete backups" in line


@pytest.mark.parametrize("now", ["0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"])
def test_prune_now_beyond_the_calendar_in_utc_is_bad_usage(storage, backed_up, now):
    table, client = backed_up
    before = _snapshot(storage, table, client)

    result = run_cli(
        "prune", "-t", table, "--now", now, "--keep-daily", "0", "--keep-weekly", "0", "--keep-monthly", "0"
    )

    assert result.returncode == 2, result.stderr
    line = _one_error_line(result)
    assert "--now" in line and "outside the years 0001 to 9999" in line
    assert _snapshot(storage, table, client) == before


def test_prune_now_at_the_calendars_edges_runs(storage, backed_up):
    table, _ = backed_up

    for now in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"):
        result = run_cli("prune", "-t", table, "--now", now, "--dry-run", "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["dry_run"] is True


def test_erase_from_a_table_that_neither_exists_nor_has_a_backup_is_bad_usage(storage, unique_name):
    missing = unique_name("nosuch")

    result = run_cli("erase", "-t", missing, "--partition-key", "p", "--row-key", "r", "--reason", "ticket 7")

    assert result.returncode == 2, result.stderr
    assert "neither exists nor has a backup" in _one_error_line(result)
    assert erasures.count(storage, missing) == 0


def test_erase_with_blank_keys_of_no_entity_is_bad_usage(storage, backed_up):
    table, client = backed_up
    before = _snapshot(storage, table, client)

    result = run_cli("erase", "-t", table, "--partition-key", "", "--row-key", " ", "--reason", "ticket 8")

    assert result.returncode == 2, result.stderr
    assert "is blank and no entity with these keys" in _one_error_line(result)
    assert _snapshot(storage, table, client) == before


# HTTP: each door's request with one blank value that names or narrows.


def _get(route: str, params: dict, route_params: dict | None = None) -> func.HttpRequest:
    return func.HttpRequest(
        "GET", f"http://localhost/api/{route}", body=b"", params=params, route_params=route_params or {}
    )


def _post(route: str, body: dict | bytes, params: dict | None = None, route_params: dict | None = None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return func.HttpRequest(
        "POST", f"http://localhost/api/{route}", body=data, params=params or {}, route_params=route_params or {}
    )


def _call(functions, name: str, request: func.HttpRequest) -> func.HttpResponse:
    function = functions[name].get_user_function()
    if name == "restore_table":
        return function(request, QueueOutput())
    if name == "backup_now":
        return function(request, InvocationContext(name))
    return function(request)


@pytest.fixture
def exports(env, monkeypatch):
    monkeypatch.setenv("EXPORT_CONTAINER", f"exports-{uuid.uuid4().hex[:12]}")
    get_settings.cache_clear()


# (function, request maker taking the table, the field the error must name)
HTTP_CASES = [
    (
        "restore_table",
        lambda t: _post("restore", {"table": t, "backup": "latest", "filter": "", "mode": "mirror"}),
        "filter",
    ),
    (
        "restore_table",
        lambda t: _post("restore", {"table": t, "backup": "latest", "filter": " ", "mode": "mirror"}),
        "filter",
    ),
    ("restore_table", lambda t: _post("restore", {"table": "", "backup": "latest"}), "table"),
    ("restore_table", lambda t: _post("restore", {"table": t, "backup": " "}), "backup"),
    ("restore_table", lambda t: _post("restore", {"table": t, "backup": "latest", "target": ""}), "target"),
    ("backup_now", lambda t: _post("backups", {"tables": [t, ""]}), "tables.1"),
    ("list_backups", lambda t: _get("backups", {"table": ""}), "table"),
    ("show_backup", lambda t: _get("backups/latest", {"table": " "}, {"id": "latest"}), "table"),
    ("export_table", lambda t: _get(f"export/{t}", {"filter": ""}, {"table": t}), "filter"),
    ("export_table", lambda t: _get(f"export/{t}", {"select": " "}, {"table": t}), "select"),
    (
        "import_table",
        lambda t: _post(f"import/{t}", b'{"PartitionKey":"a","RowKey":"b"}\n', {"types": ""}, {"table": t}),
        "types",
    ),
    ("import_table", lambda t: _post(f"import/{t}", b"", {"blob": ""}, {"table": t}), "blob"),
    ("list_audit_entries", lambda t: _get("audit", {"table": ""}), "table"),
    ("list_audit_entries", lambda t: _get("audit", {"user": " "}), "user"),
    ("list_audit_entries", lambda t: _get("audit", {"operation": ""}), "operation"),
    ("list_audit_entries", lambda t: _get("audit", {"continuation": ""}), "continuation"),
    ("get_status", lambda t: _get("status", {"table": ""}), "table"),
    ("get_status_page", lambda t: _get("status/page", {"table": ""}), "table"),
    ("list_drills", lambda t: _get("drills", {"table": ""}), "table"),
]


@pytest.mark.parametrize(
    ("name", "make", "field"), HTTP_CASES, ids=[f"{name}-{field}-{i}" for i, (name, _, field) in enumerate(HTTP_CASES)]
)
def test_a_blank_narrowing_field_is_400_and_writes_nothing(functions, storage, exports, backed_up, name, make, field):
    table, client = backed_up
    before = _snapshot(storage, table, client)

    response = _call(functions, name, make(table))

    assert response.status_code == 400, response.get_body()
    error = orjson.loads(response.get_body())["error"]
    assert field in error and "is empty" in error and "\n" not in error, error
    assert _snapshot(storage, table, client) == before


def test_an_empty_key_is_a_key_over_http(functions, audit_storage):
    """?partitionKey= asks for the entities whose PartitionKey is empty; it is not refused."""
    response = _call(functions, "list_audit_entries", _get("audit", {"partitionKey": "", "rowKey": ""}))

    assert response.status_code == 200, response.get_body()
    assert orjson.loads(response.get_body())["entries"] == []


def test_get_backups_of_a_table_that_neither_exists_nor_has_backups_is_404(functions, storage, unique_name):
    missing = unique_name("nosuch")

    response = _call(functions, "list_backups", _get("backups", {"table": missing}))

    assert response.status_code == 404
    assert "neither exists nor has complete backups" in orjson.loads(response.get_body())["error"]
