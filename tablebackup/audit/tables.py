"""Create-only writes to the audit tables: entries are never updated or deleted by the app."""

from __future__ import annotations

import contextlib

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableServiceClient

from tablebackup.core.errors import BackupError, StorageUnavailable


class Refused(BackupError):
    """The service refused the entity itself (HTTP 4xx): writing it again can never succeed."""


def insert_once(service: TableServiceClient, table: str, entity: dict) -> bool:
    """Insert the entity; False if one with its keys already exists. The table is created on first use."""
    client = service.get_table_client(table)
    for attempt in (1, 2):
        try:
            client.create_entity(entity)
            return True
        except ResourceExistsError:
            return False
        except ResourceNotFoundError as error:
            if attempt == 2:
                raise StorageUnavailable(f"table {table!r} could not be created: {_first_line(error)}") from error
            with contextlib.suppress(ResourceExistsError):
                service.create_table(table)
        except HttpResponseError as error:
            if error.status_code and 400 <= error.status_code < 500 and error.status_code not in (408, 429):
                raise Refused(f"table {table!r} refused the entity: {_first_line(error)}") from error
            raise StorageUnavailable(f"writing to table {table!r} failed: {_first_line(error)}") from error
        except AzureError as error:
            raise StorageUnavailable(f"table storage is unreachable: {_first_line(error)}") from error
    return False  # unreachable: the second attempt returns or raises


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
