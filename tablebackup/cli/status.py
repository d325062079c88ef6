"""`status`: is every table protected? A table on a terminal, one document with --json, and an
exit code a pipeline can gate on (0: every table protected, 1: any is not)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from tablebackup.cli.common import CommandFailed, GivenPath, human_size, json_option, not_blank, open_storage
from tablebackup.cli.output import emit

_STYLE = {"protected": "bold green", "at risk": "bold yellow", "unprotected": "bold red"}


def _print_table(document: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped or redirected (and no COLUMNS): wide lines rather than names folded at 80 columns.
    console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200)
    table = Table(title=None, show_lines=False, expand=False)
    for column, justify in (
        ("Table", "left"),
        ("Verdict", "left"),
        ("Backup age", "right"),
        ("Entities", "right"),
        ("Size", "right"),
        ("Verified", "left"),
        ("Reason", "left"),
    ):
        table.add_column(column, justify=justify, overflow="fold", no_wrap=column in ("Table", "Verdict"))
    for row in document["tables"]:
        newest = row["newest_backup"]
        verification = row["verification"]
        table.add_row(
            row["table"],
            f"[{_STYLE[row['verdict']]}]{row['verdict']}[/]",
            f"{newest['age_hours']:.1f} h" if newest else "-",
            f"{newest['entities']:,}" if newest else "-",
            human_size(newest["bytes"]) if newest else "-",
            ("passed" if verification["ok"] else "FAILED") if verification else "never",
            row["reason"],
        )
    console.print(table)
    console.print(f"[{_STYLE[document['verdict']]}]{document['verdict']}[/]: {document['reason']}", highlight=False)


@click.command()
@click.option(
    "--table",
    "-t",
    "tables",
    multiple=True,
    callback=not_blank("a table name"),
    help="A table to report (repeatable; default: every table).",
)
@click.option(
    "--page",
    "page",
    type=GivenPath(dir_okay=False, writable=True, path_type=Path),
    help="Also write the status as a self-contained HTML page to this file.",
)
@json_option
def status(tables, page, as_json) -> None:
    """Say whether every table is protected: newest backup against the RPO, verification, drills."""
    from tablebackup.status.page import render
    from tablebackup.status.report import account_status

    document = account_status(open_storage(), list(tables) or None)
    if page is not None:
        page.write_text(render(document), encoding="utf-8")
    if as_json:
        emit(document, True, str)
    else:
        _print_table(document)
    if not document["ok"]:
        counts = document["counts"]
        raise CommandFailed(
            f"{counts['unprotected'] + counts['at risk']} of {len(document['tables'])} table(s) not protected"
        )
