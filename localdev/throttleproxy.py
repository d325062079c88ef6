"""A proxy in front of Azurite's Table endpoint that throttles as Azure Table storage does, scaled
down to what one Azurite on a small machine can serve, for the tests and the scale bench.

Azure's published scalability targets for Table storage (learn.microsoft.com, "Scalability and
performance targets for Table storage"): 2,000 entities/s for one partition and 20,000 entities/s
(transactions of 1 KiB entities) for the account. Above them the service answers 503 Server Busy
(or 500 Operation Timeout), and clients back off and retry. Azurite throttles nothing, and on a
2-core machine it serves a few thousand entities/s at best, so the proxy keeps Azure's proportions
at a smaller scale: the account limit is ten times the partition limit, and every request takes a
latency scaled by the same factor, so that one stream alone stays well under the account limit as
one query stream does on Azure.

What is counted is entities, as the targets are stated: those a query page returns, the operations
of a $batch, one for a single-entity request, and one for any other table request (at least one
per request: every request is a transaction). Each partition and the account have a token bucket,
refilled at their rate and holding `burst_seconds` of it. A request is let through while the
buckets it needs are not in debt, and is charged what it costs. One that finds a bucket in debt
waits for it, as in the service's queue, up to `queue_seconds`; if the debt would take longer to
pay back, it is refused at once with 503 Server Busy and the Table service's JSON error document,
before it reaches Azurite, so a refused write writes nothing. No Retry-After: the service sends none
for ServerBusy, and the client backs off on its own (the SDK's exponential retry).

- A write's cost is known before it is sent: its partition is in its URL or body, and a $batch
  (an entity group transaction: one partition, at most 100 operations) is refused or let through
  whole, as the service does with a transaction, which one partition server runs atomically.
- A query's cost is known only from its answer: it is charged its `$top` (1,000 at most) on the
  partition it starts at (the continuation's NextPartitionKey, or the partition its filter names)
  when let through, then the entities it returned, partition by partition, instead.
- Latency: `request_seconds` plus `read_entity_seconds` for each entity a query returns, or
  `write_entity_seconds` for each entity written; Azurite's own time counts towards it.

Only the Table endpoint is proxied: on Azure the backups go to another storage account (blob), and
the queues belong to the Functions host's account, so neither counts against the table account's
targets; they stay direct to Azurite.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

# Azure's targets for Table storage [learn.microsoft.com: Scalability and performance targets].
AZURE_PARTITION_ENTITIES_PER_SECOND = 2_000
AZURE_ACCOUNT_ENTITIES_PER_SECOND = 20_000
# What one request costs in time on Azure, from a client in the account's region [estimate, as in
# docs/scaling.md]: a 1,000-entity page in ~200 ms (one query stream ~5,000 entities/s, a quarter
# of the account target), a 100-entity entity group transaction in ~100 ms, a single write ~21 ms.
AZURE_REQUEST_SECONDS = 0.020
AZURE_READ_ENTITY_SECONDS = 0.000_18
AZURE_WRITE_ENTITY_SECONDS = 0.000_8
# How long the service holds a request over the limits in its queue before refusing it [estimate:
# the docs say only that an overloaded partition answers 503 Server Busy or 500 Operation Timeout,
# which means requests queue first; 50 ms is well inside any client's timeout].
AZURE_QUEUE_SECONDS = 0.050

MAX_PAGE = 1000  # the most entities one query answer holds
SERVER_BUSY_PARTITION = "The server is busy."
SERVER_BUSY_ACCOUNT = "Operations per second is over the account limit."

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length"}
_WRITE_METHODS = {"POST", "PUT", "MERGE", "PATCH", "DELETE"}
_KEYS_RE = re.compile(r"\(PartitionKey='((?:[^']|'')*)',\s*RowKey='((?:[^']|'')*)'\)")
_BATCH_OPERATION_RE = re.compile(rb"^(POST|PUT|MERGE|PATCH|DELETE) (\S+) HTTP/1\.1\r?$", re.MULTILINE)
_FILTER_START_RE = re.compile(r"PartitionKey\s+(?:eq|ge|gt)\s+'((?:[^']|'')*)'")
_BATCH_PARTITION_RE = re.compile(rb'"PartitionKey"\s*:\s*"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Limits:
    """The simulated account: its limits (entities/s) and the latency of each request (seconds)."""

    partition_per_second: float
    account_per_second: float
    request_seconds: float
    read_entity_seconds: float
    write_entity_seconds: float
    burst_seconds: float = 1.0  # what a bucket holds when full, in seconds of its rate
    # How long a request may wait for its buckets to pay back their debt, as in the service's
    # queue, before it is refused; 0: refused at once.
    queue_seconds: float = 0.0

    @classmethod
    def scaled(cls, partition_per_second: float = 100, burst_seconds: float = 1.0) -> Limits:
        """Azure's targets and latencies, slowed down by one factor: the account allows ten times
        a partition, and a request takes as many times longer as the limits are lower."""
        factor = AZURE_PARTITION_ENTITIES_PER_SECOND / partition_per_second
        return cls(
            partition_per_second=partition_per_second,
            account_per_second=AZURE_ACCOUNT_ENTITIES_PER_SECOND / factor,
            request_seconds=AZURE_REQUEST_SECONDS * factor,
            read_entity_seconds=AZURE_READ_ENTITY_SECONDS * factor,
            write_entity_seconds=AZURE_WRITE_ENTITY_SECONDS * factor,
            burst_seconds=burst_seconds,
            queue_seconds=AZURE_QUEUE_SECONDS * factor,
        )

    @property
    def factor(self) -> float:
        """How many times slower than Azure's targets this account is."""
        return AZURE_ACCOUNT_ENTITIES_PER_SECOND / self.account_per_second

    def read_seconds(self, entities: int) -> float:
        return self.request_seconds + self.read_entity_seconds * entities

    def write_seconds(self, entities: int) -> float:
        return self.request_seconds + self.write_entity_seconds * entities

    def describe(self) -> str:
        page, batch = self.read_seconds(MAX_PAGE), self.write_seconds(100)
        return (
            f"simulated Azure Table account, Azure's targets / {self.factor:g}: "
            f"{self.partition_per_second:,.0f} entities/s per partition, {self.account_per_second:,.0f} per account "
            f"(buckets hold {self.burst_seconds:g} s; a request waits up to {self.queue_seconds:g} s for them, "
            f"then 503); latency {self.request_seconds * 1000:.0f} ms a request "
            f"+ {self.read_entity_seconds * 1000:.2f} ms an entity read, {self.write_entity_seconds * 1000:.2f} ms "
            f"an entity written: a 1,000-entity page {page:.2f} s (one stream {MAX_PAGE / page:,.0f}/s, "
            f"{MAX_PAGE / page / self.account_per_second:.2f} of the account), a 100-entity batch {batch:.2f} s "
            f"({100 / batch:,.0f}/s per batch in flight)"
        )


class TokenBucket:
    """Refilled at `rate` per second up to `capacity`; charges may take it into debt, and nothing
    is let through until the debt is paid back."""

    def __init__(self, rate: float, capacity: float, now: float):
        self.rate, self.capacity = rate, capacity
        self.level, self.stamp = capacity, now

    def refill(self, now: float) -> float:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        return self.level


@dataclass
class Counters:
    """What the proxy did: entities let through, requests refused by which limit."""

    entities: int = 0
    requests: int = 0
    refused_partition: int = 0
    refused_account: int = 0
    by_partition: dict[str, int] = field(default_factory=dict)
    by_table: dict[str, int] = field(default_factory=dict)

    @property
    def refused(self) -> int:
        return self.refused_partition + self.refused_account


@dataclass
class _Plan:
    """What one request is expected to cost, before it is sent."""

    partition: str | None  # the partition it reads first or writes; None: the account only
    cost: int
    is_query: bool = False
    writes: int = 0  # entities it writes (for the latency)
    table: str | None = None  # the table it reads or writes, if one


def _unquote_key(text: str) -> str:
    return text.replace("''", "'")


def _decode_token(token: str) -> str | None:
    """Azurite's continuation NextPartitionKey is the key in base64; Azure's is opaque."""
    try:
        return base64.b64decode(token, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def _table_of(url: str) -> str | None:
    """The table a request's path names: /account/Table(...) or /account/Table()."""
    segments = [segment for segment in unquote(urlsplit(url).path).split("/") if segment]
    if len(segments) < 2 or segments[1].startswith(("Tables", "$batch")):
        return None
    return segments[1].split("(", 1)[0]


def plan_request(method: str, path: str, body: bytes) -> _Plan:
    """Which table and partition a table request touches first and what it costs, from its URL and body."""
    plan = _plan_request(method, path, body)
    if urlsplit(path).path.endswith("/$batch"):
        first = _BATCH_OPERATION_RE.search(body)
        plan.table = _table_of(first.group(2).decode(errors="replace")) if first else None
    else:
        plan.table = _table_of(path)
    return plan


def _plan_request(method: str, path: str, body: bytes) -> _Plan:
    parts = urlsplit(path)
    resource = unquote(parts.path)
    if resource.endswith("/$batch"):
        operations = _BATCH_OPERATION_RE.findall(body)
        partition = None
        for _, url in operations:
            keys = _KEYS_RE.search(unquote(url.decode(errors="replace")))
            if keys:
                partition = _unquote_key(keys.group(1))
                break
        if partition is None:
            found = _BATCH_PARTITION_RE.search(body)
            partition = orjson.loads(b'"' + found.group(1) + b'"') if found else None
        return _Plan(partition, max(1, len(operations)), writes=len(operations))
    keys = _KEYS_RE.search(resource)
    if method in _WRITE_METHODS:
        partition = _unquote_key(keys.group(1)) if keys else None
        if partition is None and method == "POST" and not resource.rstrip("/").endswith("/Tables") and body:
            try:  # an insert: the keys are in the body
                partition = orjson.loads(body).get("PartitionKey")
            except (orjson.JSONDecodeError, AttributeError):
                partition = None
        return _Plan(partition, 1, writes=1 if partition is not None else 0)
    if keys:  # a point read
        return _Plan(_unquote_key(keys.group(1)), 1)
    if method == "GET" and resource.endswith("()"):
        query = parse_qs(parts.query)
        top = min(MAX_PAGE, int(query.get("$top", [MAX_PAGE])[0] or MAX_PAGE))
        partition = None
        if "NextPartitionKey" in query:
            partition = _decode_token(query["NextPartitionKey"][0])
        elif "$filter" in query:
            found = _FILTER_START_RE.search(query["$filter"][0])
            partition = _unquote_key(found.group(1)) if found else None
        return _Plan(partition, max(1, top), is_query=True)
    return _Plan(None, 1)


def server_busy(message: str, version: str | None) -> tuple[bytes, dict[str, str]]:
    """The service's 503 answer: the Table service's JSON error document and its headers."""
    request_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    instant = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}0Z"
    body = orjson.dumps(
        {
            "odata.error": {
                "code": "ServerBusy",
                "message": {"lang": "en-US", "value": f"{message}\nRequestId:{request_id}\nTime:{instant}"},
            }
        }
    )
    headers = {
        "Cache-Control": "no-cache",
        "Content-Type": "application/json;odata=minimalmetadata;streaming=true;charset=utf-8",
        "Server": "Windows-Azure-Table/1.0 Microsoft-HTTPAPI/2.0",
        "x-ms-request-id": request_id,
        "x-ms-error-code": "ServerBusy",
        "X-Content-Type-Options": "nosniff",
        "Date": now.strftime("%a, %d %b %Y %H:%M:%S GMT"),
    }
    if version:
        headers["x-ms-version"] = version
    return body, headers


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        pass  # a client that hangs up on a kept-alive connection is no news


class ThrottleProxy:
    """The proxy, on a free loopback port; use as a context manager."""

    def __init__(self, target_port: int, limits: Limits, clock: Callable[[], float] = time.monotonic):
        self.target_port = target_port
        self.limits = limits
        self.counters = Counters()
        self._lock = threading.Lock()
        self._clock = clock  # the buckets' time (the tests hold it still); latency is real time
        self._account = TokenBucket(limits.account_per_second, limits.account_per_second * limits.burst_seconds, 0)
        self._account.stamp = self._clock()
        self._partitions: dict[str, TokenBucket] = {}
        self._upstream = threading.local()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy._serve(self, body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_MERGE = do_OPTIONS = _handle

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- the buckets --------------------------------------------------------------------------

    def _partition(self, key: str, now: float) -> TokenBucket:
        bucket = self._partitions.get(key)
        if bucket is None:
            rate = self.limits.partition_per_second
            bucket = self._partitions[key] = TokenBucket(rate, rate * self.limits.burst_seconds, now)
        return bucket

    def _debt_seconds(self, plan: _Plan) -> tuple[float, str | None]:
        """How long until none of the plan's buckets is in debt, and which one holds it up longest."""
        now = self._clock()
        wait, message = 0.0, None
        if plan.partition is not None:
            partition = self._partition(plan.partition, now)
            if partition.refill(now) <= 0:
                wait, message = (1 - partition.level) / partition.rate, SERVER_BUSY_PARTITION
        if self._account.refill(now) <= 0 and (1 - self._account.level) / self._account.rate > wait:
            wait, message = (1 - self._account.level) / self._account.rate, SERVER_BUSY_ACCOUNT
        return wait, message

    def _admit(self, plan: _Plan) -> str | None:
        """Let the request through once none of its buckets is in debt, charging its cost, and
        return None; or, if that is further off than the queue holds a request, the refusal's message."""
        waited_until = time.monotonic() + self.limits.queue_seconds
        while True:
            with self._lock:
                wait, message = self._debt_seconds(plan)
                if message is None:
                    self._account.level -= plan.cost
                    if plan.partition is not None:
                        self._partitions[plan.partition].level -= plan.cost
                    self.counters.requests += 1
                    if not plan.is_query:
                        self._count(plan, plan.partition, plan.cost)
                    return None
                if time.monotonic() + wait > waited_until:
                    if message == SERVER_BUSY_PARTITION:
                        self.counters.refused_partition += 1
                    else:
                        self.counters.refused_account += 1
                    return message
            time.sleep(min(wait, 0.02))  # another request may get in first: look again

    def _count(self, plan: _Plan, partition: str | None, entities: int) -> None:
        self.counters.entities += entities
        if plan.table is not None:
            self.counters.by_table[plan.table] = self.counters.by_table.get(plan.table, 0) + entities
        if partition is not None:
            self.counters.by_partition[partition] = self.counters.by_partition.get(partition, 0) + entities

    def _settle_query(self, plan: _Plan, payload: bytes) -> int:
        """Replace a query's reservation with what it returned, partition by partition."""
        try:
            entities = orjson.loads(payload).get("value") or []
        except (orjson.JSONDecodeError, AttributeError):
            entities = []
        counts: dict[str, int] = {}
        for entity in entities:
            # Without PartitionKey in its $select, an entity is counted on the partition it started at.
            key = entity.get("PartitionKey", plan.partition) if isinstance(entity, dict) else None
            if key is not None:
                counts[key] = counts.get(key, 0) + 1
        returned = max(1, len(entities))
        with self._lock:
            now = self._clock()
            self._account.refill(now)
            self._account.level += plan.cost - returned
            if plan.partition is not None:
                self._partition(plan.partition, now).refill(now)
                self._partitions[plan.partition].level += plan.cost
            for key, count in counts.items():
                self._partition(key, now).refill(now)
                self._partitions[key].level -= count
                self._count(plan, key, count)
            if not counts:
                self._count(plan, None, 1)
        return len(entities)

    # -- the traffic --------------------------------------------------------------------------

    def _forward(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, str, list, bytes]:
        for attempt in range(2):
            connection = getattr(self._upstream, "connection", None)
            if connection is None:
                connection = self._upstream.connection = http.client.HTTPConnection(
                    "127.0.0.1", self.target_port, timeout=120
                )
            try:
                connection.request(method, path, body=body or None, headers=headers)
                response = connection.getresponse()
                return response.status, response.reason, response.getheaders(), response.read()
            except (http.client.HTTPException, OSError):
                connection.close()
                self._upstream.connection = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _serve(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        plan = plan_request(handler.command, handler.path, body)
        refusal = self._admit(plan)
        started = time.monotonic()  # a wait in the queue comes on top of the request's latency
        if refusal is not None:
            payload, headers = server_busy(refusal, handler.headers.get("x-ms-version"))
            handler.send_response(503, "Server Busy")
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
            return
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_HEADERS}
        status, reason, response_headers, payload = self._forward(handler.command, handler.path, headers, body)
        if plan.is_query:  # an answer other than a page returned nothing: its reservation goes back
            latency = self.limits.read_seconds(self._settle_query(plan, payload if status == 200 else b"{}"))
        elif plan.writes:
            latency = self.limits.write_seconds(plan.writes)
        else:
            latency = self.limits.request_seconds
        time.sleep(max(0.0, latency - (time.monotonic() - started)))
        handler.send_response(status, reason)
        for name, value in response_headers:
            if name.lower() not in _HOP_HEADERS:
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def __enter__(self) -> ThrottleProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def table_port(connection_string: str) -> int:
    return int(connection_string.split("TableEndpoint=http://127.0.0.1:")[1].split("/")[0])


def through_proxy(connection_string: str, proxy_port: int) -> str:
    """The same connection string with its Table endpoint at the proxy (blob and queue direct)."""
    return connection_string.replace(
        f"TableEndpoint=http://127.0.0.1:{table_port(connection_string)}/",
        f"TableEndpoint=http://127.0.0.1:{proxy_port}/",
    )


@contextmanager
def throttled(connection_string: str, limits: Limits) -> Iterator[tuple[ThrottleProxy, str]]:
    """A ThrottleProxy in front of the Azurite of `connection_string`, and the connection string
    that goes through it for tables."""
    with ThrottleProxy(table_port(connection_string), limits) as proxy:
        yield proxy, through_proxy(connection_string, proxy.port)
