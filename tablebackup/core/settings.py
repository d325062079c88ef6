"""The app's settings: read once from the environment, validated, named as in docs/configuration.md."""

from __future__ import annotations

import binascii
import functools
import re
from base64 import b64decode
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tablebackup.core.errors import InvalidInput, SettingsError
from tablebackup.core.names import validate_table_name

# A blob container name: 3-63 lowercase letters, digits and single hyphens.
_CONTAINER_RE = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]\Z")


def check_connection_string(value: str) -> str:
    """A connection string's shape, checked without ever quoting it (it holds the key): `name=value`
    pairs separated by `;`, an AccountKey in base64 with its AccountName, endpoints as URLs."""
    pairs: dict[str, str] = {}
    for part in filter(None, (segment.strip() for segment in value.split(";"))):
        name, equals, text = part.partition("=")
        if not equals or not name.strip() or not text.strip():
            raise ValueError("the connection string is malformed: expected name=value pairs separated by ';'")
        pairs[name.strip().lower()] = text.strip()
    if not pairs:
        raise ValueError("the connection string is malformed: expected name=value pairs separated by ';'")
    if pairs.get("usedevelopmentstorage", "").lower() == "true":
        return value
    if "accountkey" in pairs:
        try:
            b64decode(pairs["accountkey"], validate=True)
        except binascii.Error:
            raise ValueError("the connection string is malformed: its AccountKey is not base64") from None
        if "accountname" not in pairs:
            raise ValueError("the connection string is malformed: it has an AccountKey but no AccountName")
    elif "sharedaccesssignature" not in pairs:
        raise ValueError("the connection string is malformed: it has neither an AccountKey nor a SharedAccessSignature")
    for name in ("blobendpoint", "tableendpoint", "queueendpoint"):
        if name in pairs and not re.match(r"^https?://[^\s/]+", pairs[name]):
            raise ValueError("the connection string is malformed: an endpoint in it is not an http(s) URL")
    if "accountname" not in pairs and not ({"blobendpoint", "tableendpoint"} & set(pairs)):
        raise ValueError("the connection string is malformed: it names neither an AccountName nor an endpoint")
    return value


def _as_value_error(check, value):
    # pydantic reports only ValueError as a validation error of the field.
    try:
        return check(value)
    except InvalidInput as error:
        raise ValueError(str(error)) from None


class Settings(BaseSettings):
    """Every setting the app reads. Environment names are the aliases."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    # Where the tables live: a connection string, or an endpoint for an identity-based connection.
    storage_connection_string: str | None = Field(None, alias="AZURE_STORAGE_CONNECTION_STRING", repr=False)
    table_service_uri: str | None = Field(None, alias="TABLES__tableServiceUri")
    table_client_id: str | None = Field(None, alias="TABLES__clientId")

    # Where backups go.
    backup_connection_string: str | None = Field(None, alias="BACKUP_BLOB_CONNECTION_STRING", repr=False)
    backup_blob_service_uri: str | None = Field(None, alias="BACKUPS__blobServiceUri")
    backup_client_id: str | None = Field(None, alias="BACKUPS__clientId")
    backup_container: str = Field("table-backups", alias="BACKUP_CONTAINER")

    table_name: str = Field("candidates", alias="TABLE_NAME")
    # The daily run: full every day, or incrementals with a weekly full on FULL_BACKUP_DAY.
    backup_mode: Literal["full", "incremental"] = Field("full", alias="BACKUP_MODE")
    # Fan-out: a full backup of a table whose last full backup had at least FANOUT_THRESHOLD_ENTITIES
    # is split into PartitionKey ranges of about PART_TARGET_ENTITIES, at most MAX_PARTS.
    fanout_threshold_entities: int = Field(2_000_000, ge=1, alias="FANOUT_THRESHOLD_ENTITIES")
    part_target_entities: int = Field(1_000_000, ge=1, alias="PART_TARGET_ENTITIES")
    max_parts: int = Field(64, ge=1, le=512, alias="MAX_PARTS")
    backup_runs_table: str = Field("backupruns", alias="BACKUP_RUNS_TABLE")
    # A smaller table is read by this many parallel PartitionKey range streams in one process.
    read_streams: int = Field(2, ge=1, le=16, alias="READ_STREAMS")
    # Incrementals re-read entities changed this long before their parent started (clock skew, writes in flight).
    incremental_overlap_minutes: float = Field(15, ge=0, le=24 * 60, alias="INCREMENTAL_OVERLAP_MINUTES")
    full_backup_day: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"] = Field(
        "sunday", alias="FULL_BACKUP_DAY"
    )
    backup_tables: str | None = Field(None, alias="BACKUP_TABLES")

    # Restores over HTTP above this many entities run on the queue instead (HTTP answers are capped at 230 s).
    restore_http_max_entities: int = Field(50_000, ge=0, alias="RESTORE_HTTP_MAX_ENTITIES")
    restore_operations_table: str = Field("restoreoperations", alias="RESTORE_OPERATIONS_TABLE")
    # Batches (one partition, <= 100 entities) in flight at once while restoring.
    restore_workers: int = Field(4, ge=1, le=32, alias="RESTORE_WORKERS")
    # A queued restore (or `restore --parallel N`) is cut into PartitionKey ranges of about this many
    # entities, each one queue message that any instance can run (tablebackup.restore.ranges).
    restore_part_entities: int = Field(1_000_000, ge=1, alias="RESTORE_PART_ENTITIES")

    # Retention: keep the newest backup of each of the last N days, ISO weeks and months with backups.
    retention_daily: int = Field(30, ge=0, le=3660, alias="RETENTION_DAILY")
    retention_weekly: int = Field(12, ge=0, le=520, alias="RETENTION_WEEKLY")
    retention_monthly: int = Field(12, ge=0, le=1200, alias="RETENTION_MONTHLY")
    # Safety backups (taken just before a restore or an import writes into a table) fill none of
    # those slots: each is kept this many days after it was taken, then deleted.
    safety_backup_keep_days: int = Field(30, ge=0, le=3660, alias="SAFETY_BACKUP_KEEP_DAYS")

    # Verification and drills.
    required_fields: str | None = Field(None, alias="REQUIRED_FIELDS")
    backup_max_age_hours: float = Field(26, gt=0, le=24 * 366, alias="BACKUP_MAX_AGE_HOURS")
    notify_webhook_url: str | None = Field(None, alias="NOTIFY_WEBHOOK_URL", repr=False)
    verifications_table: str = Field("backupverifications", alias="VERIFICATIONS_TABLE")
    drills_table: str = Field("drillreports", alias="DRILLS_TABLE")
    rto_minutes: float = Field(60, gt=0, alias="RTO_MINUTES")

    # The audit trail: entries in a table of the data account, large payloads in the backup account.
    audit_table: str = Field("auditlogs", alias="AUDIT_TABLE")
    audit_rejected_table: str = Field("auditrejected", alias="AUDIT_REJECTED_TABLE")
    audit_payload_container: str = Field("audit-payloads", alias="AUDIT_PAYLOAD_CONTAINER")
    audit_query_days: int = Field(7, ge=1, le=3660, alias="AUDIT_QUERY_DAYS")

    # GDPR erasure register: digests of erased keys, skipped by restore, import and export.
    erasures_table: str = Field("erasures", alias="ERASURES_TABLE")

    # Export and import.
    export_container: str = Field("exports", alias="EXPORT_CONTAINER")
    export_inline_max_entities: int = Field(5_000, ge=0, alias="EXPORT_INLINE_MAX_ENTITIES")
    import_max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024, alias="IMPORT_MAX_BODY_BYTES")

    # Regional outage: backup and verify read the tables from the RA-GRS/RA-GZRS secondary (read-only).
    read_from_secondary: bool = Field(False, alias="READ_FROM_SECONDARY")
    # Regional outage of the backup account: list, verify, status and restore read the backups from
    # its RA-GRS/RA-GZRS secondary; nothing can be written there, so backups and prune refuse.
    backup_read_from_secondary: bool = Field(False, alias="BACKUP_READ_FROM_SECONDARY")

    # Transient failures (500, 503, timeouts) are retried this many times with exponential backoff.
    storage_retries: int = Field(5, ge=0, le=20, alias="STORAGE_RETRIES")
    storage_retry_backoff_seconds: float = Field(0.8, gt=0, le=60, alias="STORAGE_RETRY_BACKOFF_SECONDS")
    storage_timeout_seconds: int = Field(60, ge=1, le=600, alias="STORAGE_TIMEOUT_SECONDS")

    @field_validator(
        "storage_connection_string",
        "table_service_uri",
        "backup_connection_string",
        "backup_blob_service_uri",
        "table_client_id",
        "backup_client_id",
        "backup_tables",
        "required_fields",
        "notify_webhook_url",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("storage_connection_string", "backup_connection_string")
    @classmethod
    def _is_connection_string(cls, value: str | None) -> str | None:
        return None if value is None else check_connection_string(value)

    @field_validator("backup_mode", "full_backup_day", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("table_service_uri", "backup_blob_service_uri", "notify_webhook_url")
    @classmethod
    def _is_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http(s) URL such as https://<account>.table.core.windows.net")
        return value

    @field_validator("backup_container", "audit_payload_container", "export_container")
    @classmethod
    def _is_container_name(cls, value: str) -> str:
        if not _CONTAINER_RE.match(value):
            raise ValueError("must be 3-63 lowercase letters, digits or single hyphens")
        return value

    @field_validator(
        "table_name",
        "restore_operations_table",
        "verifications_table",
        "drills_table",
        "audit_table",
        "audit_rejected_table",
        "erasures_table",
        "backup_runs_table",
    )
    @classmethod
    def _is_table_name(cls, value: str) -> str:
        return _as_value_error(validate_table_name, value)

    @field_validator("backup_tables")
    @classmethod
    def _is_table_list(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "*":
            return value
        for name in value.split(","):
            _as_value_error(validate_table_name, name.strip())
        return value

    @field_validator("required_fields")
    @classmethod
    def _is_required_fields(cls, value: str | None) -> str | None:
        if value is not None:
            _parse_required_fields(value)
        return value

    @model_validator(mode="after")
    def _has_connections(self) -> Settings:
        if not (self.storage_connection_string or self.table_service_uri):
            raise SettingsError(
                "AZURE_STORAGE_CONNECTION_STRING or TABLES__tableServiceUri must be set "
                "(the storage account whose tables are backed up)"
            )
        if not (self.backup_connection_string or self.backup_blob_service_uri):
            raise SettingsError(
                "BACKUP_BLOB_CONNECTION_STRING or BACKUPS__blobServiceUri must be set "
                "(the storage account that holds the backups)"
            )
        return self

    @property
    def required_fields_by_table(self) -> dict[str, list[str]]:
        """REQUIRED_FIELDS `candidates:email,name;orders:id` as {table: [fields]}."""
        return _parse_required_fields(self.required_fields) if self.required_fields else {}

    @property
    def scheduled_tables(self) -> list[str] | None:
        """The tables the daily run backs up; None means every table in the account."""
        if self.backup_tables is None:
            return [self.table_name]
        if self.backup_tables.strip() == "*":
            return None
        return [name.strip() for name in self.backup_tables.split(",") if name.strip()]


def _parse_required_fields(text: str) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for group in filter(None, (part.strip() for part in text.split(";"))):
        table, colon, names = group.partition(":")
        properties = [name.strip() for name in names.split(",") if name.strip()]
        if not colon or not properties:
            raise ValueError(f"expected table:field1,field2[;table2:field] but got {group!r}")
        # Keyed by the canonical (lowercase) name: table names are case-insensitive.
        fields[_as_value_error(validate_table_name, table.strip()).lower()] = properties
    return fields


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    name = first["loc"][0] if first["loc"] else ""
    field = Settings.model_fields.get(str(name))
    setting = (field.alias if field and field.alias else str(name)) or "settings"
    message = first["msg"].removeprefix("Value error, ")
    return f"setting {setting}: {message}"


def load_settings() -> Settings:
    """Read and validate the settings now; a bad one raises SettingsError naming it."""
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError(_describe(error)) from None


@functools.cache
def get_settings() -> Settings:
    """The settings, read once per process."""
    return load_settings()
