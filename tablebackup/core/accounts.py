"""The storage account a restore or an import writes into when it is not the data account.

Given as the name of a setting (an environment variable, an app setting in Azure) that holds the
account's connection string, so the key itself is never typed on a command line, kept in a queued
request or printed; or as the account's table endpoint, reached with DefaultAzureCredential (the
app's managed identity, or the operator's `az login`).

An endpoint must be `https://<account>.table.<Azure storage suffix>`, nothing more: the credential
sends a bearer token for Azure Storage to that host, so no other host is ever named, and a path,
query (a SAS) or user name is refused rather than silently dropped. Plain http is for loopback
hosts only (Azurite, path-style: `http://127.0.0.1:10002/<account>`).

Over HTTP a caller holding a function key could otherwise name any app setting: only names ending
in `_CONNECTION_STRING` are taken there, and never the backup account's own (docs/security.md).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from azure.data.tables import TableServiceClient

from tablebackup.core.errors import InvalidInput
from tablebackup.core.settings import check_connection_string

# A whole environment variable name, nothing around it.
_SETTING_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ACCOUNT = r"[a-z0-9]{3,24}"
# Azure's public and sovereign clouds; the DNS-zone endpoints (<account>.z<NN>.table.storage.azure.net).
_AZURE_TABLE_HOST_RE = re.compile(
    rf"{_ACCOUNT}\.(?:table\.core\.(?:windows\.net|chinacloudapi\.cn|usgovcloudapi\.net)"
    r"|z[0-9]{2}\.table\.storage\.azure\.net)\Z"
)
# An endpoint is whatever starts with a URL scheme (a connection string holds URLs further on).
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_PLAIN_HOST_RE = re.compile(r"[a-z0-9.-]{1,253}\Z|[0-9a-f:.]{2,45}\Z")
_LOOPBACK_PATH_RE = re.compile(rf"/{_ACCOUNT}/?\Z")
HTTP_SETTING_SUFFIX = "_CONNECTION_STRING"
# Settings that hold connection strings but never name a target: the backup account's tables are not
# for restored data (its writer is the backup alone), and Application Insights is no storage account.
NEVER_TARGETS = ("BACKUP_BLOB_CONNECTION_STRING", "APPLICATIONINSIGHTS_CONNECTION_STRING")
EXAMPLES = "a setting holding its connection string (DR_STORAGE_CONNECTION_STRING) or its table endpoint (https://<account>.table.core.windows.net)"


@dataclass(frozen=True)
class TargetAccount:
    """A target account as given, checked; holds no secret (a setting's value is read when used)."""

    setting: str | None = None  # the name of the setting holding the connection string
    endpoint: str | None = None  # the table endpoint, normalised (no trailing slash)

    @property
    def name(self) -> str:
        """How it is named in results, the audit trail and undo commands."""
        return self.setting or self.endpoint or ""

    def connection_string(self) -> str:
        """The setting's value: read now, never kept, never shown."""
        return os.environ[self.setting]


def parse_target_account(text: str, *, over_http: bool = False) -> TargetAccount:
    """The target account `text` names, or InvalidInput: one line that never quotes a value that
    may hold a key (a pasted connection string, a SAS URL)."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("the target account is empty: give " + EXAMPLES + ", or leave it out")
    if _SCHEME_RE.match(text):
        return TargetAccount(endpoint=_endpoint(text))
    if not _SETTING_RE.match(text):
        raise InvalidInput(
            "the target account is neither a setting name nor an endpoint (not shown: it may hold a key): give "
            + EXAMPLES
        )
    return TargetAccount(setting=_setting(text, over_http))


def _setting(name: str, over_http: bool) -> str:
    if name in NEVER_TARGETS:
        raise InvalidInput(f"setting {name} is not a target account: name a setting for the account to restore into")
    if over_http and not name.endswith(HTTP_SETTING_SUFFIX):
        raise InvalidInput(
            f"setting {name}: over HTTP a target account's setting name must end in {HTTP_SETTING_SUFFIX} "
            "(docs/security.md)"
        )
    value = os.environ.get(name)
    if value is None:
        raise InvalidInput(f"setting {name} is not set: set it to the target account's connection string")
    if not value.strip():
        raise InvalidInput(f"setting {name} is blank: set it to the target account's connection string")
    try:
        check_connection_string(value)
    except ValueError as error:
        raise InvalidInput(f"setting {name}: {error}") from None
    try:  # the SDK's own reading (no request is sent): a Table endpoint must come out of it
        TableServiceClient.from_connection_string(value)
    except ValueError:
        raise InvalidInput(
            f"setting {name}: the connection string is malformed or has no Table service endpoint"
        ) from None
    return name


def _endpoint(text: str) -> str:
    if any(character.isspace() for character in text):  # urlsplit would drop a tab or newline silently
        raise InvalidInput("the target account's endpoint holds white space: give the URL alone")
    try:
        parts = urlsplit(text)
        host, port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        raise InvalidInput("the target account's endpoint is not a URL: give " + EXAMPLES) from None
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        # A SAS or a key in the URL: not echoed, and not used (access is by DefaultAzureCredential).
        raise InvalidInput(
            "the target account's endpoint holds credentials, a query or a fragment (not shown): give the endpoint "
            "alone, https://<account>.table.core.windows.net; access is by DefaultAzureCredential"
        )
    # Only a plain host name is echoed: anything else in a URL may be a pasted secret.
    shown = f"{parts.scheme}://{host}" if _PLAIN_HOST_RE.match(host) else "given"
    if _loopback(host):
        if parts.scheme not in ("http", "https") or not _LOOPBACK_PATH_RE.match(parts.path):
            raise InvalidInput(
                f"the target account's endpoint {shown}: a loopback endpoint (Azurite) is "
                "http(s)://<host>:<port>/<account>, the path the account name alone"
            )
        return f"{parts.scheme}://{parts.netloc.lower()}{parts.path.rstrip('/')}"
    if parts.scheme != "https":
        raise InvalidInput(f"the target account's endpoint {shown} is not https (http is for Azurite on loopback only)")
    if not _AZURE_TABLE_HOST_RE.match(host) or port not in (None, 443):
        secondary = " (a -secondary endpoint is read-only)" if "-secondary." in host else ""
        raise InvalidInput(
            f"the target account's endpoint {shown} is not an account's table endpoint: "
            f"https://<account>.table.core.windows.net{secondary}"
        )
    if parts.path not in ("", "/"):
        raise InvalidInput(f"the target account's endpoint {shown} has a path: give https://{host} alone")
    return f"https://{host}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
