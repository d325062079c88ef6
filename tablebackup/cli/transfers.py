"""`export` and `import`."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from tablebackup.cli.common import (
    CommandFailed,
    GivenPath,
    allow_app_table_option,
    current_user,
    human_size,
    json_option,
    not_blank,
    open_storage,
    parse_types_option,
    table_option,
    typed_lines,
    typing_options,
)
from tablebackup.cli.output import emit, progress
from tablebackup.cli.restores import target_account_option

FORMATS = ("ndjson", "json", "csv")


def _export_text(data: dict) -> str:
    return (
        f"exported {data['entities']:,} entities of {data['table']} to {data['file']} "
        f"({data['format']}, {human_size(data['bytes'])})"
    )


@click.command("export")
@table_option("The table to export.")
@click.option(
    "--filter",
    "query_filter",
    callback=not_blank("an OData filter"),
    help="OData filter: export only the entities it selects.",
)
@click.option(
    "--select",
    callback=not_blank("property names"),
    help="Comma-separated properties to export (keys are always included).",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="ndjson", show_default=True)
@click.option(
    "--output",
    "-o",
    callback=not_blank("a file name or -"),
    help="File to write, or - for stdout. Default: T-export-YYYYmmdd-HHMMSS.<format>.",
)
@json_option
def export(table, query_filter, select, fmt, output, as_json) -> None:
    """Export a table, or what a filter selects, as NDJSON (lossless, the backup encoding), JSON or CSV."""
    from tablebackup.transfer.exporter import ExportRequest, export_table, file_name, parse_select

    if output == "-" and as_json:
        raise click.UsageError("--json prints to stdout, which --output - uses for the data; give --output FILE")
    request = ExportRequest(
        table=table, filter=query_filter, select=parse_select(select), format=fmt, actor=current_user()
    )
    storage = open_storage()
    if output == "-":
        try:
            with progress() as report:
                export_table(storage, request, sys.stdout.buffer, on_progress=lambda n: report(f"export {table}", n))
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            # The reader stopped early (e.g. `| head`); keep Python's exit flush from failing too.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise CommandFailed("stdout was closed before the export finished") from None
        return
    path = Path(output or file_name(table, fmt, datetime.now(UTC)))
    try:
        sink = path.open("wb")
    except OSError as error:
        raise CommandFailed(f"cannot write {path}: {error.strerror or error}") from None
    try:
        with sink, progress() as report:
            result = export_table(storage, request, sink, on_progress=lambda n: report(f"export {table}", n))
    except BaseException as error:
        path.unlink(missing_ok=True)  # never leave a partial export behind
        if isinstance(error, OSError):
            raise CommandFailed(f"writing {path} failed: {error.strerror or error}") from None
        raise
    emit({**result.as_json(), "file": str(path)}, as_json, _export_text)


def _import_text(data: dict) -> str:
    verb = "would import" if data["dry_run"] else "imported"
    shape = "" if data.get("shape", "native") == "native" else f", written by {data['shape']}"
    account = f" of the target account {data['target_account']}" if data.get("target_account") else ""
    lines = [
        f"{verb} {data['imported']:,} entities into {data['table']}{account} (mode {data['mode']}, "
        f"{data['format']}{shape}); skipped {data['skipped']:,}, failed {data['failed']:,} in {data['seconds']:.1f} s"
    ]
    azcopy = data.get("azcopy")
    if azcopy:
        lines.append(
            f"AzCopy export {azcopy['manifest']}: table {azcopy['table']} of {azcopy['account']} at "
            f"{azcopy['exported_at']}, {azcopy['data_files']} data files, checksums {azcopy['checksums']}"
        )
    return "\n".join(lines + typed_lines(data) + [f"FAILED {error}" for error in data["errors"]])


def _problems_text(data: dict) -> str:
    more = data["problem_count"] - len(data["problems"])
    lines = [f"{p['file'] + ' ' if 'file' in p else ''}line {p['line']}: {p['reason']}" for p in data["problems"]]
    return "\n".join(lines + ([f"... and {more:,} more"] if more else []))


@click.command("import")
@table_option("The table to import into (created if missing).")
@click.option(
    "--input",
    "-i",
    "input_path",
    required=True,
    type=GivenPath(exists=True, path_type=Path),
    help="An export (.ndjson, .json, .csv), a backup data blob (gzip NDJSON), a folder holding a "
    "whole downloaded backup (its manifest.json and data blobs, one or several parts), an AzCopy 7.3 table "
    "export (its .manifest, or the folder holding it and its data files), a daily JSON export "
    "(<table>-<time>.json), or an az storage entity query output.",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Default: from the content, else the extension.")
@click.option(
    "--mode",
    type=click.Choice(["replace", "merge", "missing"]),
    default="replace",
    show_default=True,
    help="replace: InsertOrReplace; merge: InsertOrMerge; missing: only entities the table lacks "
    "(needs the file in key order, as export writes it).",
)
@click.option("--dry-run", is_flag=True, help="Validate and count what would be written; write nothing.")
@target_account_option("Import")
@allow_app_table_option
@typing_options
@click.option(
    "--skip-azcopy-checksums",
    is_flag=True,
    help="AzCopy export: import without checking the CRC64s in the data file names and the manifest's "
    "Checksum (see the README); the file list and every entity are still checked.",
)
@json_option
def import_(
    table,
    input_path,
    fmt,
    mode,
    dry_run,
    target_account,
    allow_app_table,
    types_text,
    infer_types,
    skip_azcopy_checksums,
    as_json,
) -> None:
    """Import an export or a backup data blob into a table. A malformed file writes nothing."""
    from tablebackup.transfer.azcopy import is_azcopy_export, open_export
    from tablebackup.transfer.importer import ImportRequest, import_entities
    from tablebackup.transfer.records import MalformedInput
    from tablebackup.transfer.sources import BackupFolderSource, FileSource
    from tablebackup.transfer.typerules import AmbiguousTypes

    request = ImportRequest(
        table=table,
        format=fmt,
        mode=mode,
        dry_run=dry_run,
        actor=current_user(),
        allow_app_table=allow_app_table,
        types=parse_types_option(types_text),
        infer_types=infer_types,
        target_account=target_account,
    )
    storage = open_storage()
    try:
        with progress() as report:
            if is_azcopy_export(input_path):
                if fmt:
                    raise click.UsageError("an AzCopy export's manifest gives its format; leave out --format")
                source = open_export(input_path, skip_checksums=skip_azcopy_checksums, on_progress=report)
            elif skip_azcopy_checksums:
                raise click.UsageError("--skip-azcopy-checksums is for an AzCopy export (a .manifest or its folder)")
            elif input_path.is_dir():
                source = BackupFolderSource(input_path)
            else:
                source = FileSource(input_path)
            result = import_entities(storage, request, source, on_progress=report)
    except MalformedInput as error:
        # The error document every failure prints with --json, with what is wrong in the input.
        emit({**error.as_json(), "exit_code": 1}, as_json, _problems_text)
        raise CommandFailed(str(error)) from None
    except AmbiguousTypes as error:
        if as_json:
            emit({**error.as_json(), "exit_code": 1}, as_json, str)
        raise CommandFailed(str(error)) from None
    emit(result.as_json(), as_json, _import_text)
    if result.failed:
        raise CommandFailed(result.refusals())
