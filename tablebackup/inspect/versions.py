"""One entity's version compared with another: property by property, values with their EDM types.

Both sides are normalised as a write would send them (tablebackup.core.entities.writable): the
service's metadata (Timestamp, odata.*) never counts as a change, and an entity read live compares
exactly as it would once backed up (every Double annotated)."""

from __future__ import annotations

import hashlib

import orjson

from tablebackup.core.entities import KEYS, TYPE_SUFFIX, edm_type, writable


def from_wire(entity: dict) -> dict:
    """An entity as a query page sent it, as a backup line holds it (what encode_line does, without
    the round trip through bytes: the service's own JSON needs no validating): no etag, and every
    Double annotated, so a whole Double read live compares equal to the same Double backed up."""
    entity.pop("odata.etag", None)
    for name in [name for name, value in entity.items() if type(value) is float]:
        entity[name + TYPE_SUFFIX] = "Edm.Double"
    return entity


def same_version(old: dict, new: dict) -> bool:
    """True only if the two hold the same properties with the same values of the same JSON types
    (so changed_properties would find nothing), Timestamp aside: the cheap test for the common
    case, an unchanged entity. False means "look closer" (changed_properties), not necessarily
    "changed" (other service metadata, say, or -0.0 against 0.0)."""
    # Untouched since (the same Timestamp too). == alone takes 2 for 2.0 and True for 1: the types
    # must agree as well, compared in the one order both have (another order is looked at below).
    if old == new and list(old) == list(new) and list(map(type, old.values())) == list(map(type, new.values())):
        return True
    # Rewritten with the same properties, or changed: compared as JSON text (which tells 2 from
    # 2.0 and true from 1), in one key order, without the Timestamp.
    texts = []
    for entity in (old, new):
        body = dict(entity)
        for name in ("Timestamp", "Timestamp" + TYPE_SUFFIX):
            body.pop(name, None)
        try:
            texts.append(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
        except orjson.JSONEncodeError:
            return False  # a lone surrogate orjson cannot write: compared property by property
    return texts[0] == texts[1]


def typed_properties(entity: dict) -> dict[str, tuple[object, str]]:
    """{name: (value, EDM type)} of the entity's own properties: no keys, no service metadata."""
    body = writable(entity)
    return {
        name: (value, edm_type(body, name))
        for name, value in body.items()
        if name not in KEYS and not name.endswith(TYPE_SUFFIX)
    }


def _typed(pair: tuple[object, str] | None) -> dict | None:
    return None if pair is None else {"value": pair[0], "type": pair[1]}


def changed_properties(old: dict, new: dict) -> dict[str, dict]:
    """{name: {"old": {value, type} | None, "new": ...}} for each property that differs in value or
    in type (Int32 2 and Double 2.0 differ), was added or was removed; {} when the versions agree."""
    before, after = typed_properties(old), typed_properties(new)
    changes = {}
    for name in sorted(before.keys() | after.keys()):
        was, now = before.get(name), after.get(name)
        # Compared with the type, and the value's own JSON type: 2 == 2.0 and True == 1 in Python.
        if was is None or now is None or was[1] != now[1] or type(was[0]) is not type(now[0]) or was[0] != now[0]:
            changes[name] = {"old": _typed(was), "new": _typed(now)}
    return changes


def version_digest(entity: dict) -> str:
    """SHA-256 of the entity's keys, properties and types as a write would send them: equal digests,
    equal versions, whatever the service's metadata."""
    return hashlib.sha256(orjson.dumps(writable(entity), option=orjson.OPT_SORT_KEYS)).hexdigest()
