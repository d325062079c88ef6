"""Import a file of entities (an export in any format, or a backup data blob) into a table.

The input is read twice: first it is validated completely, and a malformed input is refused with
the line and reason of each problem before anything is written; then it is read again and written
with restore's planning and batch writer. Neither pass holds more than a window of entities; input
out of key order is grouped by partition on the way, through sorted runs on disk
(tablebackup.transfer.keyorder), so its batches form as sorted input's do.

`missing` compares the input with the table window by window over key ranges (as restore does), so
it reads the input in the service's key order: sorted the same way, its dry run included.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

from tablebackup.audit.entries import operation_entries
from tablebackup.core.clients import Storage
from tablebackup.core.entities import service_order
from tablebackup.core.errors import BackupError, InvalidInput
from tablebackup.repository import erasures
from tablebackup.storage.reconcile import Tally, plan_operations
from tablebackup.storage.tables import create_table, existing_spelling
from tablebackup.storage.tablewriter import submit_operations
from tablebackup.storage.targets import in_target_account, resolve_target
from tablebackup.transfer.dialects import NATIVE
from tablebackup.transfer.formats import check_format, open_content, read_records
from tablebackup.transfer.keyorder import KeyOrder
from tablebackup.transfer.records import MAX_PROBLEMS, MalformedInput, Problem
from tablebackup.transfer.sources import Source
from tablebackup.transfer.typerules import AmbiguousTypes, TypeRules

log = logging.getLogger(__name__)

MODES = ("replace", "merge", "missing")
_PROGRESS_EVERY = 1000

# Called with the phase ("validate <input>" or "import <table>") and the entities done so far.
Progress = Callable[[str, int], None]


@dataclass(frozen=True)
class ImportRequest:
    table: str
    format: str | None = None  # None: from the content, else the name
    mode: str = "replace"
    dry_run: bool = False
    actor: str = "unknown"  # who asked: the OS user of the CLI, the caller over HTTP
    # The table may be one of the app's own tables (tablebackup.storage.targets); import never deletes.
    allow_app_table: bool = False
    # Types for what the input leaves untyped (tablebackup.transfer.typerules): --types and --infer-types.
    types: dict[str, str] = field(default_factory=dict)
    infer_types: bool = False
    # Another storage account to write into (tablebackup.core.accounts): a setting's name or a table
    # endpoint. The audit trail and the erasure register stay the app's.
    target_account: str | None = None


@dataclass
class ImportResult:
    table: str
    format: str
    mode: str
    imported: int = 0
    skipped: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0
    # Which tool wrote the input (tablebackup.transfer.dialects), and what --infer-types typed: {name: {type: n}}.
    shape: str = "native"
    typed: dict[str, dict[str, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # An AzCopy export: its manifest, source table and time, and whether its checksums were verified.
    azcopy: dict | None = None
    target_account: str | None = None  # the account written into, when not the data account

    def as_json(self) -> dict:
        return {**asdict(self), "seconds": round(self.seconds, 3)}

    def refusals(self) -> str:
        """One line on the entities the service refused."""
        first = f"; first: {self.errors[0]}" if self.errors else ""
        return f"the service refused {self.failed} of the entities in {self.table}{first}"


@dataclass
class InputScan:
    format: str
    rules: TypeRules
    entities: int = 0
    out_of_order: str | None = None  # the first line whose key is not above the previous one
    descending: str | None = None  # the first line whose key is below the previous one (not a duplicate)

    def warnings(self) -> list[str]:
        if self.rules.next_marker:
            marker = json.dumps(self.rules.next_marker)
            return [
                f"the input is one page of an Azure CLI query: nextMarker {marker} says more entities follow; "
                "export them with az storage entity query --marker and import those files too"
            ]
        return []


def _parts(source: Source) -> list[Source]:
    """The files an input is read from, in order: one, or each data file of an AzCopy export."""
    parts = getattr(source, "part_sources", None)
    return list(parts()) if callable(parts) else [source]


def _part_records(part: Source, fmt: str | None, rules: TypeRules) -> tuple[str, Iterator]:
    """A file's format and records: read by the part itself where it knows how (an AzCopy CSV with
    its schema), else told from its content."""
    own = getattr(part, "records", None)
    found_records = own(rules) if callable(own) else None
    if found_records is not None:
        return found_records
    stream = part.open()
    try:
        content, found = open_content(stream, part.name, fmt)
    except BaseException:
        stream.close()
        raise

    def records():
        with stream:
            yield from read_records(content, found, rules)

    return found, records()


def validate_input(
    source: Source, fmt: str | None, on_progress: Progress | None = None, rules: TypeRules | None = None
) -> InputScan:
    """Read the whole input; MalformedInput listing its problems unless every record is valid, and
    AmbiguousTypes naming each property whose type the input does not say and no rule gives."""
    problems: list[Problem] = []
    total = 0
    previous = None
    rules = rules or TypeRules()
    parts = _parts(source)
    scan = InputScan(format=fmt or "json", rules=rules)
    for part in parts:
        # Several files: a problem names its file, and key order runs on across them.
        in_file = part.name.rsplit("/", 1)[-1] if len(parts) > 1 else None
        scan.format, records = _part_records(part, fmt, rules)
        for line, record in records:
            if isinstance(record, Problem):
                total += 1
                if len(problems) < MAX_PROBLEMS:
                    problems.append(record.in_file(in_file))
                continue
            scan.entities += 1
            key = service_order(record)
            if scan.out_of_order is None and previous is not None and key <= previous:
                scan.out_of_order = f"{in_file} line {line}" if in_file else f"line {line}"
            if scan.descending is None and previous is not None and key < previous:
                scan.descending = f"{in_file} line {line}" if in_file else f"line {line}"
            previous = key
            if on_progress and scan.entities % _PROGRESS_EVERY == 0:
                on_progress(f"validate {source.name}", scan.entities)
    if on_progress:
        on_progress(f"validate {source.name}", scan.entities)
    if total:
        raise MalformedInput(source.name, problems, total)
    if rules.ambiguous:
        raise AmbiguousTypes(source.name, rules.ambiguous)
    return scan


def read_entities(source: Source, fmt: str | None, rules: TypeRules) -> Iterator[dict]:
    """The entities of an input validate_input accepted, read again and typed by the same rules."""
    rules = rules.fresh()
    for part in _parts(source):
        _, records = _part_records(part, fmt, rules)
        for _, record in records:
            if isinstance(record, Problem):
                raise BackupError(f"{source.name} changed while it was imported: {record}")
            yield record


def import_entities(
    storage: Storage,
    request: ImportRequest,
    source: Source,
    *,
    on_progress: Progress | None = None,
) -> ImportResult:
    """Validate the whole input, then write it as the mode asks; a dry run only counts."""
    started = time.monotonic()
    if request.mode not in MODES:
        raise InvalidInput(f"unknown mode {request.mode!r}: use one of {', '.join(MODES)}")
    resolve_target(
        storage.settings,
        request.table,
        request.table,
        mode=request.mode,
        allow_app_table=request.allow_app_table,
        what="table to import into",
    )
    data, account = in_target_account(storage, request.target_account)  # the target side; audit stays here
    if request.format is not None:
        check_format(request.format)
    scan = validate_input(source, request.format, on_progress, TypeRules(request.types, request.infer_types))

    result = ImportResult(
        table=request.table,
        format=scan.format,
        mode=request.mode,
        dry_run=request.dry_run,
        shape=getattr(source, "shape", None) or scan.rules.shape or NATIVE,
        typed=scan.rules.typed_report(),
        warnings=scan.warnings() + (source.warnings() if callable(getattr(source, "warnings", None)) else []),
    )
    check = getattr(source, "check", None)
    if check is not None:
        result.azcopy = check.as_json()
    result.target_account = account.name if account else None
    plan = {"table": request.table, "source": source.name, "format": scan.format, "mode": request.mode}
    plan.update({"target_account": account.name} if account else {})
    # One pair of IMPORT entries: started before the first write, ended with what it wrote.
    audit = operation_entries(storage, "IMPORT", request.actor, request.table, plan, record=not request.dry_run)
    # Batches hold one partition: input out of key order is grouped by partition before it is written.
    # `missing` compares with the table in key order: its dry run needs the order too.
    grouping = KeyOrder(scan.descending, write=not request.dry_run or request.mode == "missing")
    with audit as entries, grouping:
        # An existing table under another spelling is that table: written under its own spelling.
        into = existing_spelling(data, request.table)
        exists = into is not None
        if not exists and not request.dry_run:
            create_table(data, request.table)
        client = data.tables.get_table_client(into or request.table)
        tally = Tally()
        erased = erasures.load(storage, request.table)
        entities = grouping.ordered(erased.without_erased(read_entities(source, request.format, scan.rules)))
        operations = plan_operations(entities, request.mode, client, exists, None, tally)
        if request.dry_run:
            for _ in operations:
                pass
            result.imported, result.skipped = tally.restored, tally.skipped + erased.skipped
        else:
            label = f"import {request.table}"
            # One entity the service refuses costs only itself; the counts are what this run wrote.
            outcome = submit_operations(
                client,
                operations,
                workers=storage.settings.restore_workers,
                on_progress=entries.counting((lambda count: on_progress(label, count)) if on_progress else None),
                isolate_refusals=True,
            )
            result.imported, result.failed, result.errors = outcome.written, outcome.failed, outcome.errors
            result.skipped = tally.skipped + outcome.existing + erased.skipped
        result.warnings += grouping.notes()
        result.seconds = time.monotonic() - started
        entries.result = {**result.as_json(), "source": source.name}
    log.info(
        "import %s: table=%s source=%s format=%s mode=%s imported=%d skipped=%d failed=%d actor=%s",
        "planned (dry run)" if request.dry_run else "complete",
        request.table,
        source.name,
        scan.format,
        request.mode,
        result.imported,
        result.skipped,
        result.failed,
        request.actor,
        extra={**result.as_json(), "source": source.name, "actor": request.actor},
    )
    return result
