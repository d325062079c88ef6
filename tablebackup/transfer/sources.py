"""Where an import reads from: a file, a request body, or a blob in the exports container. Each can
be opened more than once, because an import reads its input twice: to validate, then to write."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

from tablebackup.core.errors import InvalidInput, NotFound, StorageUnavailable
from tablebackup.core.names import validate_blob_name


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

    def __post_init__(self) -> None:
        validate_blob_name(self.blob)  # the name must stay inside the container

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


class _Concatenated(io.RawIOBase):
    """The files one after another, as one stream. Concatenated gzip files are one gzip stream."""

    def __init__(self, paths: list[Path]):
        self._paths, self._current = list(paths), None

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while True:
            if self._current is None:
                if not self._paths:
                    return 0
                self._current = self._paths.pop(0).open("rb")
            count = self._current.readinto(target)
            if count:
                return count
            self._current.close()
            self._current = None

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
        super().close()


@dataclass(frozen=True)
class BackupFolderSource:
    """A backup downloaded whole (`az storage blob download-batch --pattern '<id>/*'`): its
    manifest names the data blobs, one or several parts, in key order."""

    path: Path

    @property
    def name(self) -> str:
        return str(self.path)

    def parts(self) -> list[Path]:
        from pydantic import ValidationError

        from tablebackup.repository.backupformat import MANIFEST_BLOB, Manifest

        manifest_path = self.path / MANIFEST_BLOB
        if not manifest_path.is_file():
            raise InvalidInput(f"{self.path} is a folder without a backup's {MANIFEST_BLOB}")
        try:
            manifest = Manifest.model_validate_json(manifest_path.read_bytes())
        except ValidationError as error:
            raise InvalidInput(f"{manifest_path} is not a backup manifest: {error.errors()[0]['msg']}") from None
        if manifest.kind != "full":
            raise InvalidInput(f"{manifest.backup} is an incremental: restore it from the container instead")
        paths = [self.path / Path(part.blob).name for part in manifest.data_parts()]
        missing = [str(path) for path in paths if not path.is_file()]
        if missing:
            raise InvalidInput(f"the backup's data blob {missing[0]} is missing from {self.path}")
        return paths

    def open(self) -> BinaryIO:
        return io.BufferedReader(_Concatenated(self.parts()), buffer_size=1024 * 1024)
