"""The retries a table client is configured with (STORAGE_RETRIES and its backoff), for the retries
this project makes itself: $batch POSTs, which the SDK does not retry after a dropped connection or
a read timeout, and table pages whose body is cut off after the SDK handed the response over."""

from __future__ import annotations

import time
from dataclasses import dataclass

from azure.data.tables import TableClient, TableServiceClient

# When the client's pipeline has no retry policy to copy (STORAGE_RETRIES' defaults).
_DEFAULT_RETRIES, _DEFAULT_BACKOFF, _DEFAULT_BACKOFF_MAX = 5, 0.8, 60.0


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

    def wait(self, retry: int) -> None:
        time.sleep(min(self.backoff_max, self.backoff * 2 ** (retry - 1)))
