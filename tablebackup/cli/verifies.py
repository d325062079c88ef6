"""`verify` and `drill`."""

from __future__ import annotations

import click

from tablebackup.cli.common import CommandFailed, json_option, not_blank, open_storage, table_option
from tablebackup.cli.output import emit


def _check_tag(check: dict) -> str:
    if not check["ok"]:
        return "FAIL"
    return "WARN" if check.get("warning") else "ok  "


def _checks_text(checks: list[dict]) -> list[str]:
    return [f"  {_check_tag(check)} {check['name']}: {check['detail']}" for check in checks]


def _verify_text(data: dict) -> str:
    lines = []
    for outcome in data["results"]:
        verdict = "passed" if outcome["ok"] else "FAILED"
        if outcome["ok"] and outcome.get("warnings"):
            verdict += f" with {len(outcome['warnings'])} warning(s)"
        lines.append(f"{outcome['table']}: {outcome['backup'] or 'no backup'} {verdict}")
        lines += _checks_text(outcome["checks"])
    return "\n".join(lines) or "no backed-up tables to verify"


@click.command()
@click.option(
    "--table",
    "-t",
    callback=not_blank("a table name"),
    help="The table whose backup to verify (default: its newest complete backup).",
)
@click.option("--backup", "-b", callback=not_blank("a backup id"), help="A backup id to verify instead of the newest.")
@click.option("--all", "every_table", is_flag=True, help="Verify the newest complete backup of every backed-up table.")
@json_option
def verify(table, backup, every_table, as_json) -> None:
    """Verify a backup: manifest, checksum, every entity, count, required fields, and age (RPO)."""
    from tablebackup.verify.checker import verify_and_record

    if every_table == bool(table):
        raise click.UsageError("give --table T or --all")
    if backup and every_table:
        raise click.UsageError("--backup goes with --table, not --all")
    outcomes = verify_and_record(open_storage(), table, backup, every_table=every_table)
    if every_table:
        data = {"ok": all(o.ok for o in outcomes), "results": [o.as_json() for o in outcomes]}
        emit(data, as_json, _verify_text)
    else:
        data = outcomes[0].as_json()
        emit(data, as_json, lambda d: _verify_text({"results": [d]}))
    if not all(o.ok for o in outcomes):
        raise CommandFailed("; ".join(o.summary() for o in outcomes if not o.ok))


def _drill_text(data: dict) -> str:
    verdict = "passed" if data["ok"] else "FAILED"
    head = f"{data['kind']} drill of {data['table']} from {data['backup'] or 'no backup'} {verdict}"
    return "\n".join([head, *_checks_text(data["checks"])])


@click.command()
@table_option("The table whose newest backup to drill.")
@click.option("--full", is_flag=True, help="Restore the whole backup instead of one random entity.")
@json_option
def drill(table, full, as_json) -> None:
    """Rehearse a restore into a scratch table, compare it with the backup, and check RTO and RPO."""
    from tablebackup.verify.drills import run_drill

    report = run_drill(open_storage(), table, full=full)
    emit(report.as_json(), as_json, _drill_text)
    if not report.ok:
        raise CommandFailed(f"the drill of {table} failed")
