"""The retries a table client is configured with (STORAGE_RETRIES and its backoff), for the retries
this project makes itself: $batch POSTs, which the SDK does not retry after a dropped connection or
a read timeout, and table pages whose body is cut off after the SDK handed the response over.

Every retry, the SDK's and this project's, is logged at WARNING on RETRY_LOG ("tablebackup.retries"),
one line naming what is retried, the attempt and what the attempt before it got, so a wrong endpoint
or a struggling account is seen at the first retry, not after minutes of backoff. The lines name a
request by method, host and path only: the query string may hold a SAS, and an entity's keys (which
may be personal data) are left out."""

from __future__ import annotations

import logging
import random
import re
import threading
import time
import weakref
from dataclasses import dataclass
from urllib.parse import urlsplit

from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableClient, TableServiceClient

# When the client's pipeline has no retry policy to copy (STORAGE_RETRIES' defaults).
_DEFAULT_RETRIES, _DEFAULT_BACKOFF, _DEFAULT_BACKOFF_MAX = 5, 0.8, 60.0

# The CLI shows this logger's lines on stderr unless --quiet (tablebackup.cli.output).
RETRY_LOG = logging.getLogger("tablebackup.retries")


@dataclass(frozen=True)
class RetrySettings:
    retries: int
    backoff: float
    backoff_max: float

    @classmethod
    def of(cls, client: TableClient | TableServiceClient) -> RetrySettings:
        """The client's own retry settings (STORAGE_RETRIES and its backoff), found in its pipeline."""
        try:
            policies = client._client._client._pipeline._impl_policies
        except AttributeError:
            policies = []
        for policy in policies:
            if hasattr(policy, "total_retries") and hasattr(policy, "backoff_factor"):
                return cls(policy.total_retries, policy.backoff_factor, policy.backoff_max)
        return cls(_DEFAULT_RETRIES, _DEFAULT_BACKOFF, _DEFAULT_BACKOFF_MAX)

    def delay(self, retry: int) -> float:
        """The backoff before retry N, within ±20%: writers throttled together must not all come
        back at the same instant (and leave the account idle in between)."""
        return min(self.backoff_max, self.backoff * 2 ** (retry - 1)) * random.uniform(0.8, 1.2)

    def wait(self, retry: int) -> None:
        time.sleep(self.delay(retry))

    def wait_to_retry(self, retry: int, what: str, reason: str, attempts: int | None = None) -> None:
        """Say that `what` is retried (retry 1 is the second attempt, of `attempts`: by default
        STORAGE_RETRIES + 1) and why, then wait its backoff."""
        delay = self.delay(retry)
        attempts = attempts or self.retries + 1
        RETRY_LOG.warning("retrying %s in %.1f s (attempt %d of %d) after %s", what, delay, retry + 1, attempts, reason)
        time.sleep(delay)


# What an exception's text tells about a failed attempt, in a few words and without its URL.
_REASONS = (
    (re.compile(r"\[Errno -?\d+\] [^'\"()\[\]<>]+"), None),
    (re.compile(r"timed? ?out", re.IGNORECASE), "timed out"),
    (re.compile(r"IncompleteRead|Connection broken|ChunkedEncodingError"), "the answer was cut off"),
    (re.compile(r"Connection aborted|RemoteDisconnected|Connection reset"), "the connection was closed"),
)


def failure_reason(error: BaseException) -> str:
    """Why an attempt failed, short and safe to log: the OS's reason for a failed connection, a
    timeout, a cut answer, or else the exception's type. Never the exception's text as it is:
    the requests library puts the URL, query string (a SAS) included, in it."""
    text = str(error)
    for pattern, reason in _REASONS:
        found = pattern.search(text)
        if found:
            return reason or found.group(0).strip()
    return type(error).__name__


_ENTITY_KEYS = re.compile(r"\((?:PartitionKey|RowKey)=[^/]*\)")


def describe_request(method: str, url: str) -> str:
    """`GET host/path` without the query string, and a table path without the entity's keys."""
    parts = urlsplit(url)
    return f"{method} {parts.netloc}{_ENTITY_KEYS.sub('(…)', parts.path)}"


class RetryLoggingTransport(RequestsTransport):
    """The HTTP transport of every storage client (tablebackup.core.clients): the SDK's retry
    policies send the same request object again on the same thread, so a request seen twice in a
    row is a retry, logged as it starts with what the attempt before it got.

    The transport, not the retry policy, because the Table clients' policy can't be replaced and
    the clients a service client hands out (get_table_client, get_container_client) share only
    its transport; a weak reference, so a $batch body is not kept alive by the log."""

    def __init__(self, retries: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self._attempts = retries + 1
        self._last = threading.local()

    def send(self, request, **kwargs):
        last = self._last
        previous = getattr(last, "request", None)
        if previous is not None and previous() is request:
            last.attempt += 1
            RETRY_LOG.warning(
                "retrying %s (attempt %d of at most %d) after %s",
                describe_request(request.method, request.url),
                last.attempt,
                self._attempts,
                last.outcome,
            )
        else:
            last.request, last.attempt = weakref.ref(request), 1
        try:
            response = super().send(request, **kwargs)
        except Exception as error:
            last.outcome = failure_reason(error)
            raise
        last.outcome = f"HTTP {response.status_code}"
        return response
