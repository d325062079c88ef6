"""The documentation is true: every relative link in README.md and docs/*.md resolves, every setting
has its row in docs/configuration.md, and every `$ tablebackup ...` example runs.

An example is a line starting `$ ` in a fenced ```console block; it may set environment variables
first (`$ READ_FROM_SECONDARY=true tablebackup ...`) and may end in `# exit N`, the exit code it is
documented to end with (0 otherwise). Each page's examples run in order, as `python -m tablebackup`
processes against Azurite, on a seeded table of their own; in each line
- `candidates` (and names built on it: `candidatesrestored`, `candidates.ndjson`) becomes that
  table's unique name, and `auditlogs` the test's own audit table;
- `<backup-id>` becomes the id of a backup taken before the page runs, and `./<backup-id>` is that
  backup downloaded as the Azure CLI leaves it; the placeholders for the connection string of another
  account are a second Azurite's;
- instants of November 2026 (the examples' "recent past") become real ones: now, or a day ago after
  `--since`. Other instants (an old export's date, a future `--now`) are kept.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from localdev.sample import candidates, seed_table
from tablebackup.backup.archiver import backup_table
from tablebackup.cli.app import main
from tablebackup.core.clients import Storage
from tablebackup.core.settings import Settings, get_settings
from tablebackup.storage.tablewriter import submit_operations, upsert_operations

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w-]*)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
EXIT_MARK = re.compile(r"#\s*exit\s+(\d+)\s*$")
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
RECENT_INSTANT = re.compile(r"2026-11-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,7})?Z")
HEALTHY_ACCOUNT = "<connection string of an account in a healthy region>"
CLEAN_ACCOUNT = "<connection string of a new, clean account>"
SEEDED_ENTITIES = 300


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


# --- reading the pages ---------------------------------------------------------------------------


def _blocks(text: str) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """The fenced code blocks (language, lines) and the lines outside them."""
    blocks, prose, current, fence = [], [], None, None
    for line in text.splitlines():
        opened = FENCE.match(line)
        if current is None and opened:
            fence, current = opened.group(1), (opened.group(2).lower(), [])
        elif current is not None and line.strip().startswith(fence) and not line.strip().strip(fence[0]):
            blocks.append(current)
            current = None
        elif current is not None:
            current[1].append(line)
        else:
            prose.append(line)
    assert current is None, "a code block is not closed"
    return blocks, prose


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, links to their text, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    _, prose = _blocks(page.read_text())
    seen: dict[str, int] = {}
    anchors = set()
    for line in prose:
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = _slug(heading.group(1))
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


@dataclass
class Example:
    page: Path
    line: str
    env: dict[str, str]
    args: list[str]
    expected: int


def _parse(page: Path, command: str) -> Example:
    """`[NAME=value ...] tablebackup args... [# exit N]`"""
    mark = EXIT_MARK.search(command)
    words = shlex.split(command, comments=True)
    env = {}
    while words and ASSIGNMENT.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    assert words and words[0] == "tablebackup", f"{_rel(page)}: a console line runs something else: $ {command}"
    return Example(page, command, env, words[1:], int(mark.group(1)) if mark else 0)


def _examples(page: Path) -> list[Example]:
    blocks, _ = _blocks(page.read_text())
    return [
        _parse(page, line.lstrip()[2:])
        for language, lines in blocks
        if language == "console"
        for line in lines
        if line.lstrip().startswith("$ ")
    ]


# --- links, names and settings -------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_relative_link_resolves(page):
    _, prose = _blocks(page.read_text())
    broken = []
    # A link's text may wrap onto the next line; code spans hold no links.
    for target in LINK.findall(re.sub(r"`[^`]*`", "", "\n".join(prose))):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading with that anchor in {linked.relative_to(ROOT)}")
    assert not broken, f"{_rel(page)}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_the_cli_is_named_tablebackup_and_its_examples_are_console_lines(page):
    blocks, _ = _blocks(page.read_text())
    text = page.read_text()
    assert "python -m cli" not in text
    # Shell scripts are for other tools (az, curl, make); every tablebackup command a reader may copy
    # is a `$ ` line of a console block, which this test runs.
    scripted = [
        line
        for language, lines in blocks
        if language in ("sh", "bash", "shell")
        for line in lines
        if re.match(r"^\s*(?:[A-Z_]+=\S+\s+)*tablebackup\s", line)
    ]
    assert not scripted, f"{_rel(page)}: tablebackup commands outside console blocks: {scripted}"


def test_every_setting_has_its_row_in_the_configuration_page():
    rows = [line for line in (ROOT / "docs" / "configuration.md").read_text().splitlines() if line.startswith("| `")]
    documented = {re.match(r"\| `([^`]+)` \|", row).group(1): row for row in rows}
    missing = [field.alias for field in Settings.model_fields.values() if field.alias not in documented]
    assert not missing, f"settings without a row in docs/configuration.md: {missing}"


def test_binding_settings_are_documented_as_required_with_the_sample_values(functions):
    from tests.test_infra import _binding_settings

    page = (ROOT / "docs" / "configuration.md").read_text()
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    for name in _binding_settings(functions):
        [row] = [line for line in page.splitlines() if line.startswith(f"| `{name}` |")]
        assert f"required (`{sample[name]}`)" in row, row
    assert "does not resolve to a value" in page


# --- running the examples ------------------------------------------------------------------------


@dataclass
class Workspace:
    """What one page's examples run against: their table, working folder and storage."""

    table: str
    folder: Path
    storage: Storage
    backup_id: str = ""
    other_account: str = ""  # the connection string of a second Azurite: "an account in a healthy region"


def _seeded(ws: Workspace) -> None:
    seed_table(ws.storage.tables, ws.table, SEEDED_ENTITIES)
    ws.backup_id = backup_table(ws.storage, ws.table).backup


def _with_a_deleted_entity(ws: Workspace) -> None:
    """The sample entity the undelete examples bring back, deleted after the backup that holds it."""
    _seeded(ws)
    ws.storage.tables.get_table_client(ws.table).delete_entity("CANDIDATE", "0000042")


def _with_a_downloaded_backup(ws: Workspace) -> None:
    """As `az storage blob download-batch --pattern '<id>/*' -d .` leaves a backup."""
    _with_a_deleted_entity(ws)
    for blob in ws.storage.backups.list_blobs(name_starts_with=f"{ws.backup_id}/"):
        path = ws.folder / blob.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(ws.storage.backups.download_blob(blob.name).readall())


def _with_other_tools_exports(ws: Workspace) -> None:
    """The sample table without its Int64 property (the JS function could not export one), and what
    the tools of docs/migrating.md made of it: a daily JSON export in the container (and downloaded
    as old.json), an AzCopy 7.3 export in ./azcopy, and `az storage entity query` output."""
    from tests.azcliexport import entity_query
    from tests.azcopyexport import azcopy_export
    from tests.legacybackups import legacy_backup

    client = ws.storage.tables.create_table(ws.table)
    entities = [{k: v for k, v in e.items() if not k.startswith("salaryCents")} for e in candidates(60)]
    submit_operations(client, upsert_operations(iter(entities)))
    name, body = legacy_backup(ws.storage, ws.table, datetime(2025, 1, 13, 2, 0, tzinfo=UTC))
    assert name == f"{ws.table}-2025-01-13T02-00-00-000Z.json"
    (ws.folder / "old.json").write_bytes(body)
    azcopy_export(
        client,
        ws.folder / "azcopy",
        datetime(2024, 6, 30, 2, 0, tzinfo=UTC),
        manifest_name=f"myaccount_{ws.table}_20240630T020000.manifest",
    )
    (ws.folder / f"{ws.table}-az.json").write_text(entity_query(client))


SETUP: dict[str, Callable[[Workspace], None]] = {
    "docs/cli.md": _with_a_deleted_entity,
    "docs/runbook.md": _with_a_downloaded_backup,
    "docs/migrating.md": _with_other_tools_exports,
}
PAGES_WITH_EXAMPLES = [page for page in PAGES if _examples(page)]


def _substituted(ws: Workspace, command: str) -> str:
    command = re.sub(r"(?<![A-Za-z0-9])candidates", ws.table, command)
    command = re.sub(r"(?<![A-Za-z0-9])auditlogs(?![A-Za-z0-9])", os.environ["AUDIT_TABLE"], command)
    command = command.replace("<backup-id>", ws.backup_id)
    command = command.replace(HEALTHY_ACCOUNT, ws.other_account).replace(CLEAN_ACCOUNT, ws.other_account)
    leftover = re.search(r"<[^<>]+>", command)
    assert not leftover, f"no value for the placeholder {leftover.group(0)} in: {command}"
    return command


def _real_instants(args: list[str]) -> list[str]:
    now = datetime.now(UTC)
    real = []
    for i, arg in enumerate(args):
        if RECENT_INSTANT.fullmatch(arg):
            at = now - timedelta(days=1) if i and args[i - 1] == "--since" else now
            arg = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        real.append(arg)
    return real


def _run(ws: Workspace, example: Example, capsys, monkeypatch) -> None:
    """The example as `tablebackup` runs it, in this process (a hundred interpreters starting would
    cost a minute): the same main(), its own environment and folder, its own stdout and stderr."""
    runnable = _parse(example.page, _substituted(ws, example.line))
    with monkeypatch.context() as scoped:
        scoped.chdir(ws.folder)
        for name, value in runnable.env.items():
            scoped.setenv(name, value)
        get_settings.cache_clear()
        capsys.readouterr()
        code = main(_real_instants(runnable.args))
        out, err = capsys.readouterr()
    get_settings.cache_clear()
    assert code == example.expected, (
        f"{_rel(example.page)}: `$ {example.line}` exited {code}, documented {example.expected}\n"
        f"stdout: {out[-1500:]}\nstderr: {err[-1500:]}"
    )


@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES, ids=_rel)
def test_every_example_runs(page, audit_storage, unique_name, tmp_path, monkeypatch, capsys, request):
    ws = Workspace(table=unique_name("candidates"), folder=tmp_path, storage=audit_storage)
    if HEALTHY_ACCOUNT in page.read_text() or CLEAN_ACCOUNT in page.read_text():
        ws.other_account = request.getfixturevalue("other_account")
    SETUP.get(_rel(page), _seeded)(ws)
    monkeypatch.setenv("TABLE_NAME", ws.table)
    for example in _examples(page):
        _run(ws, example, capsys, monkeypatch)


def test_the_pages_have_examples():
    assert {_rel(page) for page in PAGES_WITH_EXAMPLES} >= {
        "README.md",
        "docs/cli.md",
        "docs/runbook.md",
        "docs/migrating.md",
        "docs/scaling.md",
    }
