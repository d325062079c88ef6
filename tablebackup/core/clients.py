"""Storage clients built from the settings: connection strings locally, managed identity in Azure."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from urllib.parse import urlparse, urlunparse

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient, ContainerClient, ExponentialRetry

from tablebackup.core.accounts import TargetAccount
from tablebackup.core.errors import InvalidInput, SettingsError
from tablebackup.core.retrysettings import RetryLoggingTransport
from tablebackup.core.settings import Settings, get_settings


@functools.cache
def _credential(client_id: str | None):
    # Imported here: azure-identity is only needed where no connection string is given.
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=client_id)


def _transport_options(settings: Settings) -> dict:
    timeouts = {
        "connection_timeout": settings.storage_timeout_seconds,
        "read_timeout": settings.storage_timeout_seconds,
    }
    # Its own transport per client, which logs each of the SDK's retries (tablebackup.core.retrysettings);
    # reading in the blocks the Blob SDK gives the transport it builds itself (256 KiB, not 4 KiB).
    transport = RetryLoggingTransport(settings.storage_retries, connection_data_block_size=256 * 1024, **timeouts)
    return {**timeouts, "transport": transport}


def _table_options(settings: Settings) -> dict:
    return {
        **_transport_options(settings),
        "retry_total": settings.storage_retries,
        "retry_connect": settings.storage_retries,
        "retry_read": settings.storage_retries,
        "retry_status": settings.storage_retries,
        "retry_backoff_factor": settings.storage_retry_backoff_seconds,
        "retry_backoff_max": 60,
    }


def _from_connection_string(client_class, setting: str, value: str, **options):
    # The SDK's own refusal (a ValueError, a traceback in the CLI) named without quoting the value.
    try:
        return client_class.from_connection_string(value, **options)
    except ValueError:
        service = "Table" if client_class is TableServiceClient else "Blob"
        raise SettingsError(
            f"setting {setting}: the connection string is malformed or has no {service} service endpoint"
        ) from None


def table_service(settings: Settings) -> TableServiceClient:
    """The Table service whose tables are backed up; retries 500, 503 and timeouts with backoff."""
    options = _table_options(settings)
    if settings.storage_connection_string:
        return _from_connection_string(
            TableServiceClient, "AZURE_STORAGE_CONNECTION_STRING", settings.storage_connection_string, **options
        )
    return TableServiceClient(
        endpoint=settings.table_service_uri,
        credential=_credential(settings.table_client_id),
        **options,
    )


# The most one blob read holds in memory: the SDK's first GET is otherwise up to 32 MiB per open
# stream, and a chain restore reads two streams per link at once.
BLOB_READ_BYTES = 1024 * 1024


def _blob_options(settings: Settings) -> dict:
    return {
        **_transport_options(settings),
        "max_single_get_size": BLOB_READ_BYTES,
        "max_chunk_get_size": BLOB_READ_BYTES,
        "retry_policy": ExponentialRetry(
            initial_backoff=settings.storage_retry_backoff_seconds,
            increment_base=2,
            retry_total=settings.storage_retries,
            # Each kind of failure gets the same budget (the SDK caps each at 3 by default).
            retry_connect=settings.storage_retries,
            retry_read=settings.storage_retries,
            retry_status=settings.storage_retries,
        ),
    }


def blob_service(settings: Settings) -> BlobServiceClient:
    """The Blob service that holds the backups; every download is read in bounded ranges."""
    options = _blob_options(settings)
    if settings.backup_connection_string:
        return _from_connection_string(
            BlobServiceClient, "BACKUP_BLOB_CONNECTION_STRING", settings.backup_connection_string, **options
        )
    return BlobServiceClient(
        account_url=settings.backup_blob_service_uri,
        credential=_credential(settings.backup_client_id),
        **options,
    )


def secondary_endpoint(url: str, account: str, setting: str = "READ_FROM_SECONDARY") -> str:
    """The read-only secondary endpoint of an RA-GRS/RA-GZRS account: `<account>-secondary.` in the
    host name, or `/<account>-secondary` for path-style endpoints (Azurite, IP addresses)."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    if host.startswith(f"{account}."):
        netloc = f"{account}-secondary{host[len(account) :]}" + (f":{parsed.port}" if parsed.port else "")
        return urlunparse(parsed._replace(netloc=netloc))
    path = parsed.path.rstrip("/")
    if path.endswith(f"/{account}"):
        return urlunparse(parsed._replace(path=f"{path}-secondary"))
    raise SettingsError(f"{setting}: cannot tell the secondary endpoint of {url}")


@dataclass(frozen=True)
class Storage:
    """The clients one operation needs, built once from one settings object."""

    settings: Settings
    tables: TableServiceClient
    backups: ContainerClient
    # Where backup and verify read the tables from: the secondary endpoint during a regional outage.
    source_tables: TableServiceClient

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Storage:
        """The clients for these settings, built once per process: invocations share the clients'
        connection pools instead of opening new connections every time."""
        return _storage(settings or get_settings())

    @property
    def account(self) -> str:
        return self.tables.account_name

    def in_account(self, target: TargetAccount) -> Storage:
        """The clients of a restore or an import into another account: its tables (`tables` and
        `source_tables`: a safety backup reads the target's own primary) are the target account's;
        the backups and the settings, and with them the app's own tables, stay these. The data
        account named again (its endpoint, or a setting holding its connection string) is itself."""
        options = _table_options(self.settings)
        if target.setting is not None:
            try:
                tables = TableServiceClient.from_connection_string(target.connection_string(), **options)
            except ValueError:
                raise InvalidInput(
                    f"setting {target.setting}: the connection string is malformed or has no Table service endpoint"
                ) from None
        else:
            tables = TableServiceClient(
                endpoint=target.endpoint, credential=_credential(self.settings.table_client_id), **options
            )
        if _same_endpoint(tables.url, self.tables.url):
            return self
        # Its manifests must not claim a read from the data account's secondary.
        settings = self.settings.model_copy(update={"read_from_secondary": False})
        return Storage(settings=settings, tables=tables, backups=self.backups, source_tables=tables)

    def ensure_backup_container(self) -> None:
        """Before any backup is written: the container exists and can be written to."""
        self.refuse_backup_writes("take a backup")
        with contextlib.suppress(ResourceExistsError):
            self.backups.create_container()

    def refuse_backup_writes(self, what: str) -> None:
        """The secondary of the backup account is read-only: say so before trying, not after a 403."""
        if self.settings.backup_read_from_secondary:
            raise SettingsError(
                f"cannot {what} while BACKUP_READ_FROM_SECONDARY=true: the backup account's secondary is "
                "read-only; unset it once the backup account's region is back (or after its failover)"
            )


def _same_endpoint(one: str, other: str) -> bool:
    return one.rstrip("/").lower() == other.rstrip("/").lower()


@functools.cache
def _storage(settings: Settings) -> Storage:
    blobs = blob_service(settings)
    if settings.backup_read_from_secondary:
        # Regional outage of the backup account: read the backups from its RA-GRS/RA-GZRS secondary.
        blobs = BlobServiceClient(
            account_url=secondary_endpoint(blobs.url, blobs.account_name, "BACKUP_READ_FROM_SECONDARY"),
            credential=blobs.credential,
            **_blob_options(settings),
        )
    container = blobs.get_container_client(settings.backup_container)
    tables = table_service(settings)
    source = tables
    if settings.read_from_secondary:
        source = TableServiceClient(
            endpoint=secondary_endpoint(tables.url, tables.account_name),
            credential=tables.credential,
            **_table_options(settings),
        )
    return Storage(settings=settings, tables=tables, backups=container, source_tables=source)
