"""Whether a table exists, and creating one, even right after it was deleted."""

from __future__ import annotations

import time

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError

from tablebackup.core.clients import Storage
from tablebackup.core.errors import BackupError, StorageUnavailable
from tablebackup.core.retrysettings import RetrySettings, failure_reason
from tablebackup.storage.tablequery import odata_string

# A table deleted moments ago can't be recreated until the service finishes deleting it.
TABLE_RECREATE_SECONDS = 180


def existing_spelling(storage: Storage, table: str) -> str | None:
    """The spelling of the existing table that `table` names, in any case, or None. Azure's table
    names are case-insensitive (Azurite's are not): every case variant of a name lies between its
    upper- and lowercase spellings, so the service is asked for that range, per case of the first
    letter, and the match is made here."""
    rest_low, rest_high = table[1:].upper(), table[1:].lower()
    ranges = [
        f"(TableName ge {odata_string(first + rest_low)} and TableName le {odata_string(first + rest_high)})"
        for first in dict.fromkeys((table[0].upper(), table[0].lower()))
    ]
    try:
        found = [t.name for t in storage.tables.query_tables(" or ".join(ranges)) if t.name.lower() == table.lower()]
    except AzureError as error:
        raise StorageUnavailable(f"table storage is unreachable: {str(error).splitlines()[0]}") from error
    return table if table in found else (found[0] if found else None)


def addressed(storage: Storage, table: str) -> str:
    """The name to write to: an existing table's own spelling, else the name as given."""
    return existing_spelling(storage, table) or table


def table_exists(storage: Storage, table: str) -> bool:
    return existing_spelling(storage, table) is not None


def create_table(storage: Storage, table: str) -> None:
    """Create the table. A create whose answer was lost (the SDK does not retry a POST after a
    dropped connection or a read timeout) is sent again: "already exists" then means it landed."""
    deadline = time.monotonic() + TABLE_RECREATE_SECONDS
    retry = RetrySettings.of(storage.tables)
    lost = 0
    while True:
        try:
            storage.tables.create_table(table)
            return
        except ResourceExistsError:
            return
        except HttpResponseError as error:
            being_deleted = error.status_code == 409 and "TableBeingDeleted" in str(error)
            if not being_deleted or time.monotonic() > deadline:
                raise BackupError(f"creating table {table!r} failed: {str(error).splitlines()[0]}") from None
            time.sleep(5)
        except AzureError as error:
            lost += 1
            if lost > retry.retries:
                raise StorageUnavailable(f"creating table {table!r} failed: {str(error).splitlines()[0]}") from error
            retry.wait_to_retry(lost, f"creating table {table!r}", failure_reason(error))
