"""Values too large for a table property, kept as blobs in AUDIT_PAYLOAD_CONTAINER (backup account).

A String property holds at most 64 KiB as UTF-16, i.e. 32,768 UTF-16 code units. Larger values
go to a write-once blob whose name is derived from the entry, so a redelivered message finds its
blob already there instead of writing a second one.
"""

from __future__ import annotations

import contextlib

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContainerClient, ContentSettings

from tablebackup.core.clients import Storage, blob_service
from tablebackup.core.errors import NotFound, StorageUnavailable

MAX_PROPERTY_BYTES = 64 * 1024


def fits_in_property(text: str) -> bool:
    return len(text.encode("utf-16-le", errors="surrogatepass")) <= MAX_PROPERTY_BYTES


def _container(storage: Storage) -> ContainerClient:
    return blob_service(storage.settings).get_container_client(storage.settings.audit_payload_container)


def _unreachable(container: ContainerClient, error: AzureError) -> StorageUnavailable:
    return StorageUnavailable(f"audit payloads in {container.url.split('?')[0]}: {str(error).splitlines()[0]}")


def store(storage: Storage, name: str, data: bytes, content_type: str = "application/json") -> None:
    """Write the blob once; if it exists it came from an earlier delivery of the same message."""
    container = _container(storage)
    settings = ContentSettings(content_type=content_type)
    for attempt in (1, 2):
        try:
            container.upload_blob(name, data, overwrite=False, content_settings=settings)
            return
        except ResourceExistsError:
            return
        except ResourceNotFoundError as error:
            if attempt == 2:
                raise _unreachable(container, error) from error
            with contextlib.suppress(ResourceExistsError):
                container.create_container()
        except AzureError as error:
            raise _unreachable(container, error) from error


def load(storage: Storage, name: str) -> bytes:
    container = _container(storage)
    try:
        return container.download_blob(name).readall()
    except ResourceNotFoundError:
        raise NotFound(f"audit payload blob {name!r} is missing from {container.container_name!r}") from None
    except AzureError as error:
        raise _unreachable(container, error) from error
