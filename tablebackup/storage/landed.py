"""Whether a batch whose answer was lost (a 500, a dropped connection, a read timeout) landed.

An entity group transaction is atomic: it applied whole or not at all. So when a retry of a batch
is refused because an insert finds its entity there (409) or a delete finds it gone (404), the
target tells which: if every operation's effect is there (each inserted or replaced entity equal
to what was sent, each deleted key absent), the earlier attempt applied it; otherwise it did not,
and the refusals are about what others wrote.

Inserts are only planned for keys the target lacked when the plan read it (or into a table this
run created), so an entity equal to what was sent that was absent before the first attempt is this
run's. Another writer putting the very same entity there in between can't be told apart, and
leaves the target exactly as this run meant it to be.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from datetime import UTC, datetime

from tablebackup.core.entities import TYPE_SUFFIX, edm_type, writable
from tablebackup.core.errors import NotFound
from tablebackup.storage.tablequery import iter_pages, odata_string

_DATETIME_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?(Z|[+-]\d{2}:\d{2})?$")


def _datetime(text: str) -> object:
    match = _DATETIME_RE.match(text)
    if not match:
        return text
    minutes, seconds, fraction, zone = match.groups()
    offset = "+00:00" if zone in (None, "Z") else zone
    at = datetime.fromisoformat(f"{minutes}:{seconds or '00'}{offset}").astimezone(UTC)
    return at.replace(tzinfo=None).isoformat(timespec="seconds"), (fraction or "").ljust(7, "0")


def _double(value: object) -> object:
    if isinstance(value, str):
        return value  # NaN, Infinity, -Infinity
    return "NaN" if math.isnan(value) else float(value)


def _binary(value: str) -> object:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return value


_NORMAL = {
    "Edm.Double": _double,
    "Edm.DateTime": _datetime,
    "Edm.Guid": lambda value: value.lower(),
    "Edm.Int64": int,
    "Edm.Binary": _binary,
}


def comparable(entity: dict) -> dict:
    """name -> (EDM type, value) as the service stores it: the same entity sent in another
    spelling (2 or 2.0 for a Double, a DateTime with an offset, an upper-case Guid) compares equal."""
    body = writable(entity)
    result = {}
    for name, value in body.items():
        if name.endswith(TYPE_SUFFIX):
            continue
        edm = edm_type(body, name)
        result[name] = (edm, _NORMAL.get(edm, lambda v: v)(value))
    return result


def stored(client, entity: dict) -> dict | None:
    """The target's entity with this entity's keys, as wire JSON; None if absent."""
    query = f"PartitionKey eq {odata_string(entity['PartitionKey'])} and RowKey eq {odata_string(entity['RowKey'])}"
    try:
        for page in iter_pages(client, query_filter=query):
            if page:
                return page[0]
    except NotFound:
        return None
    return None


def batch_landed(client, batch: list[tuple[str, dict]]) -> bool:
    """Whether the target holds every effect of this batch of (action, entity) operations."""
    for action, entity in batch:
        found = stored(client, entity)
        if action == "delete":
            if found is not None:
                return False
        elif found is None:
            return False
        elif action == "merge":
            mine, theirs = comparable(entity), comparable(found)
            if any(theirs.get(name) != value for name, value in mine.items()):
                return False
        elif comparable(entity) != comparable(found):
            return False
    return True
