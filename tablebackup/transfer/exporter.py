"""Export a table, or what an OData filter selects, as NDJSON, JSON or CSV: to a file or stream, or,
over HTTP, inline when small and to a blob in the exports container when not."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.blob import ContainerClient

from tablebackup.audit.entries import record_operation
from tablebackup.core import telemetry
from tablebackup.core.clients import Storage, blob_service
from tablebackup.core.entities import KEYS
from tablebackup.core.errors import InvalidInput, StorageUnavailable
from tablebackup.core.names import validate_table_name
from tablebackup.repository import erasures
from tablebackup.repository.backupformat import BlockSink
from tablebackup.storage.odatafilter import parse_filter
from tablebackup.storage.tablequery import iter_pages
from tablebackup.transfer.formats import CONTENT_TYPES, check_format, entity_writer

log = logging.getLogger(__name__)

_PROPERTY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}\Z")


@dataclass(frozen=True)
class ExportRequest:
    table: str
    filter: str | None = None
    select: tuple[str, ...] = ()
    format: str = "ndjson"
    actor: str = "unknown"  # who asked: the OS user of the CLI, the caller over HTTP


@dataclass
class ExportResult:
    table: str
    format: str
    entities: int = 0
    bytes: int = 0

    def as_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class InlineExport:
    body: bytes
    entities: int
    content_type: str
    file_name: str


@dataclass(frozen=True)
class BlobExport:
    blob: str
    container: str
    account: str
    entities: int
    bytes: int
    format: str

    def as_json(self) -> dict:
        return {
            **asdict(self),
            "fetch": f"az storage blob download --account-name {self.account} -c {self.container} -n {self.blob} "
            f"-f {self.blob} --auth-mode login",
        }


def file_name(table: str, fmt: str, at: datetime) -> str:
    """The CLI's default output name: T-export-YYYYmmdd-HHMMSS.<ext> (UTC)."""
    return f"{table}-export-{at.astimezone(UTC):%Y%m%d-%H%M%S}.{fmt}"


def parse_select(text: str | None) -> tuple[str, ...]:
    """`a, b,c` as property names."""
    return check_select(tuple(dict.fromkeys(name.strip() for name in (text or "").split(",") if name.strip())))


def check_select(names: tuple[str, ...]) -> tuple[str, ...]:
    for name in names:
        if not _PROPERTY_RE.match(name):
            raise InvalidInput(f"invalid property name {name!r} in select: use letters, digits and underscores")
    return names


def _pages(storage: Storage, request: ExportRequest) -> Iterator[list[dict]]:
    """Validate the request, then yield its entities page by page as wire JSON."""
    validate_table_name(request.table)
    check_format(request.format)
    if request.filter is not None:
        parse_filter(request.filter)  # refuses with the position before the service sees it
    # Keys are always exported, whatever is selected.
    select = [*KEYS, *(name for name in check_select(request.select) if name not in KEYS)]
    pages = iter_pages(
        storage.source_tables.get_table_client(request.table),
        query_filter=request.filter,
        select=select if request.select else None,
    )
    erased = erasures.load(storage, request.table)
    for page in pages:
        # With $select the service sends a property an entity lacks as null: it is absent.
        entities = [{name: value for name, value in entity.items() if value is not None} for entity in page]
        yield list(erased.without_erased(entities))


def export_table(
    storage: Storage,
    request: ExportRequest,
    sink: BinaryIO,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> ExportResult:
    """Stream the export into `sink`; nothing is written to it before the first page is read."""
    result = ExportResult(table=request.table, format=request.format)
    writer = None
    counted = _CountingSink(sink)
    with telemetry.operation("export", request.table, format=request.format):
        for page in _pages(storage, request):
            writer = writer or entity_writer(request.format, counted)
            writer.write_page(page)
            result.entities += len(page)
            if on_progress:
                on_progress(result.entities)
        (writer or entity_writer(request.format, counted)).finish()
        telemetry.record_volume("export", request.table, result.entities, counted.bytes)
    result.bytes = counted.bytes
    log.info(
        "export complete: table=%s format=%s entities=%d actor=%s",
        request.table,
        request.format,
        result.entities,
        request.actor,
        extra={**result.as_json(), "filter": request.filter, "actor": request.actor},
    )
    record_operation(storage, "EXPORT", request.actor, request.table, {**result.as_json(), "filter": request.filter})
    return result


class _CountingSink:
    def __init__(self, sink: BinaryIO):
        self._sink, self.bytes = sink, 0

    def write(self, data: bytes) -> int:
        self.bytes += len(data)
        return self._sink.write(data)


def export_for_http(storage: Storage, request: ExportRequest) -> InlineExport | BlobExport:
    """At most EXPORT_INLINE_MAX_ENTITIES entities inline; more go to a blob, streamed in blocks, so
    no answer ever holds a whole table."""
    limit = storage.settings.export_inline_max_entities
    pages = _pages(storage, request)
    head: list[dict] = []
    for page in pages:
        head += page
        if len(head) > limit:
            break
    else:
        return _inline(request, head)
    return _to_blob(storage, request, head, pages)


def _inline(request: ExportRequest, entities: list[dict]) -> InlineExport:
    body = io.BytesIO()
    writer = entity_writer(request.format, body)
    writer.write_page(entities)
    writer.finish()
    return InlineExport(
        body=body.getvalue(),
        entities=len(entities),
        content_type=CONTENT_TYPES[request.format],
        file_name=file_name(request.table, request.format, datetime.now(UTC)),
    )


def exports_container(storage: Storage) -> ContainerClient:
    """EXPORT_CONTAINER, in the backup account: where large exports go and imports may read from."""
    return blob_service(storage.settings).get_container_client(storage.settings.export_container)


def _to_blob(storage: Storage, request: ExportRequest, head: list[dict], rest: Iterator[list[dict]]) -> BlobExport:
    container = exports_container(storage)
    # Unique, and starting with the table's name so lifecycle rules can match by prefix.
    stamp = f"{datetime.now(UTC):%Y%m%d-%H%M%S}"
    name = f"{request.table}-export-{stamp}-{uuid.uuid4().hex[:8]}.{request.format}"
    entities = len(head)
    try:
        with contextlib.suppress(ResourceExistsError):
            container.create_container()
        sink = BlockSink(container, name)
        writer = entity_writer(request.format, sink)
        writer.write_page(head)
        head.clear()  # the rest streams page by page
        for page in rest:
            writer.write_page(page)
            entities += len(page)
        writer.finish()
        sink.commit()
    except AzureError as error:
        raise StorageUnavailable(f"writing export blob {name!r} failed: {str(error).splitlines()[0]}") from error
    log.info(
        "export written to blob: table=%s blob=%s entities=%d actor=%s",
        request.table,
        name,
        entities,
        request.actor,
        extra={"table": request.table, "blob": name, "entities": entities, "actor": request.actor},
    )
    details = {"blob": name, "entities": entities, "format": request.format, "filter": request.filter}
    record_operation(storage, "EXPORT", request.actor, request.table, details)
    return BlobExport(
        blob=name,
        container=container.container_name,
        account=container.account_name,
        entities=entities,
        bytes=sink.bytes,
        format=request.format,
    )
