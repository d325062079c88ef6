"""Where an import reads from: a file, a request body, or a blob in the exports container. Each can
be opened more than once, because an import reads its input twice: to validate, then to write."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

from tablebackup.errors import InvalidInput, NotFound, StorageUnavailable


class Source(Protocol):
    @property
    def name(self) -> str: ...

    def open(self) -> BinaryIO: ...


class PayloadTooLarge(InvalidInput):
    """A request body over IMPORT_MAX_BODY_BYTES (HTTP 413)."""


@dataclass(frozen=True)
class FileSource:
    path: Path

    @property
    def name(self) -> str:
        return str(self.path)

    def open(self) -> BinaryIO:
        return self.path.open("rb")


@dataclass(frozen=True)
class BodySource:
    data: bytes
    name: str = "request body"

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data)


def body_source(data: bytes, max_bytes: int) -> BodySource:
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"request body is larger than {max_bytes:,} bytes; upload the file to the exports container "
            "and pass ?blob=<name>"
        )
    return BodySource(data)


class _DownloadReader(io.RawIOBase):
    """A readable file over a blob download, read as it is consumed."""

    def __init__(self, download):
        self._download = download

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        try:
            data = self._download.read(len(target))
        except AzureError as error:
            raise StorageUnavailable(f"reading blob failed: {str(error).splitlines()[0]}") from error
        target[: len(data)] = data
        return len(data)


@dataclass(frozen=True)
class BlobSource:
    container: ContainerClient
    blob: str

    @property
    def name(self) -> str:
        return self.blob

    def open(self) -> BinaryIO:
        try:
            download = self.container.download_blob(self.blob)
        except ResourceNotFoundError:
            raise NotFound(f"blob {self.blob!r} not found in container {self.container.container_name!r}") from None
        except AzureError as error:
            raise StorageUnavailable(
                f"blob storage at {self.container.url.split('?')[0]} is unreachable: {str(error).splitlines()[0]}"
            ) from error
        return io.BufferedReader(_DownloadReader(download), buffer_size=1024 * 1024)
