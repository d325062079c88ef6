"""Query a table as the service's own JSON pages, untouched by the SDK's entity model.

The SDK's TableEntity drops DateTime's 7th fractional digit and turns whole Doubles into ints;
the wire JSON (odata=minimalmetadata) carries every value and its @odata.type exactly. So we send
the query through the SDK's pipeline (auth, retries, API version) and keep the raw JSON.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import orjson
from azure.core.exceptions import AzureError
from azure.core.rest import HttpRequest
from azure.data.tables import TableClient

from tablebackup.core import wirejson
from tablebackup.core.errors import BackupError, InvalidInput, NotFound, StorageUnavailable
from tablebackup.core.retrysettings import RetrySettings, failure_reason

_HEADERS = {
    "Accept": "application/json;odata=minimalmetadata",
    "DataServiceVersion": "3.0",
    "MaxDataServiceVersion": "3.0;NetFx",
}

Page = list[dict]
Continuation = tuple[str, str | None] | None


def odata_string(value: str) -> str:
    """A string literal for a $filter, quotes doubled as OData requires."""
    return "'" + value.replace("'", "''") + "'"


def partition_range(low: str | None, high: str | None) -> str | None:
    """A $filter for PartitionKeys `low <= key < high` (None: unbounded); None when unbounded both ways."""
    clauses = [f"PartitionKey ge {odata_string(low)}"] if low is not None else []
    clauses += [f"PartitionKey lt {odata_string(high)}"] if high is not None else []
    return " and ".join(clauses) or None


def key_window(after: dict | None, upto: dict | None) -> str | None:
    """A $filter for the keys in (after, upto], in the service's key order (None: unbounded)."""
    clauses = []
    if after is not None:
        pk, rk = odata_string(after["PartitionKey"]), odata_string(after["RowKey"])
        clauses.append(f"(PartitionKey gt {pk} or (PartitionKey eq {pk} and RowKey gt {rk}))")
    if upto is not None:
        pk, rk = odata_string(upto["PartitionKey"]), odata_string(upto["RowKey"])
        clauses.append(f"(PartitionKey lt {pk} or (PartitionKey eq {pk} and RowKey le {rk}))")
    return " and ".join(clauses) or None


def _query_string(params: dict) -> str:
    """The query string with every value percent-encoded: HttpRequest's params leave them as they
    are, so a '+' in a filter (datetime'...+02:00') would arrive as a space and '&', '#' or '%' in a
    string literal would cut the filter short. The names ($filter, NextRowKey, ...) are plain."""
    return "&".join(f"{name}={quote(str(value), safe='')}" for name, value in params.items())


def _error_message(response) -> str:
    try:
        return orjson.loads(response.content)["odata.error"]["message"]["value"].splitlines()[0]
    except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):
        return response.reason or f"HTTP {response.status_code}"


def _unreachable(client: TableClient, error: AzureError) -> StorageUnavailable:
    return StorageUnavailable(
        f"table storage at {client.url.split('?')[0]} is unreachable: {str(error).splitlines()[0]}"
    )


# Rounds of the pipeline's retries a page read answered 503 Server Busy gets, waiting between them.
BUSY_ROUNDS = 3


def _get(client: TableClient, query: dict, retry: RetrySettings):
    """GET one page: the response and its body, read whole (asked for again if it is cut off)."""
    reason = ""
    for attempt in range(retry.retries + 1):
        if attempt:
            retry.wait_to_retry(attempt, f"reading a page of table {client.table_name!r}", reason)
        request = HttpRequest("GET", f"/{client.table_name}()?{_query_string(query)}", headers=_HEADERS)
        try:
            # The generated client's send_request runs the SDK pipeline: auth, retry with backoff.
            # stream=True keeps the pipeline from parsing the JSON a second time with the stdlib.
            response = client._client.send_request(request, stream=True)
        except AzureError as error:
            raise _unreachable(client, error) from error
        try:
            return response, response.read()
        except AzureError as error:
            # A body cut off mid-read (IncompleteRead, a broken chunked encoding, a read timeout)
            # comes after the pipeline's retries: the page is asked for again here.
            if attempt == retry.retries:
                raise _unreachable(client, error) from error
            reason = failure_reason(error)
    raise AssertionError("unreachable")


def fetch_page(client: TableClient, params: dict, continuation: Continuation) -> tuple[Page, Continuation]:
    """One page of a query (params: $filter, $select, $top) from a continuation, and the next
    page's continuation (None: the last page). iter_pages reads a whole query ahead of use."""
    query = dict(params)
    if continuation:
        query["NextPartitionKey"] = continuation[0]
        if continuation[1] is not None:
            query["NextRowKey"] = continuation[1]
    retry = RetrySettings.of(client)
    for busy in itertools.count(1):
        response, content = _get(client, query, retry)
        if response.status_code != 503 or busy > BUSY_ROUNDS:
            break
        # Server Busy after the pipeline's own retries: the account or partition is over its
        # target. The service asks for a slower pace, not for giving up (as the batch writer).
        # The pipeline backed off already: a short wait (the first backoffs again), then a new round.
        what = f"reading a page of table {client.table_name!r}"
        retry.wait_to_retry(busy, what, "HTTP 503 (Server Busy), after its retries", BUSY_ROUNDS + 1)
    if response.status_code == 404:
        raise NotFound(f"table {client.table_name!r} does not exist in account {client.account_name!r}")
    if response.status_code == 400 and "$filter" in params:
        # The service refused the filter (a syntax or limit this project's parser let through):
        # the caller's input, not a storage failure.
        raise InvalidInput(f"the Table service refused the filter: {_error_message(response)}")
    if response.status_code != 200:
        # Busy or failing after every retry is transient (a queued work item is delivered again).
        kind = StorageUnavailable if response.status_code in (408, 429, 500, 502, 503, 504) else BackupError
        raise kind(
            f"querying table {client.table_name!r} failed with HTTP {response.status_code}: {_error_message(response)}"
        )
    next_pk = response.headers.get("x-ms-continuation-NextPartitionKey")
    next_rk = response.headers.get("x-ms-continuation-NextRowKey")
    return wirejson.loads(content)["value"], ((next_pk, next_rk) if next_pk is not None else None)


def iter_pages(
    client: TableClient,
    *,
    query_filter: str | None = None,
    select: list[str] | None = None,
    page_size: int = 1000,
) -> Iterator[Page]:
    """Yield the table's entities as raw wire-JSON pages, fetching the next page while the caller
    works on the current one. Memory holds at most two pages."""
    params: dict = {"$top": str(page_size)}
    if query_filter:
        params["$filter"] = query_filter
    if select:
        params["$select"] = ",".join(select)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="table-page") as pool:
        pending = pool.submit(fetch_page, client, params, None)
        while pending is not None:
            page, continuation = pending.result()
            pending = pool.submit(fetch_page, client, params, continuation) if continuation else None
            yield page
            del page  # let the caller's page go before the next one arrives: two pages at most
