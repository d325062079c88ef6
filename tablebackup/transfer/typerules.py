"""Types for inputs that do not record every EDM type: the seed's old JS backups, Azure CLI exports.

A reader of such an input gives each property as a `Value`: what the input holds, the EDM type it
reads as, and the other types it could equally have been (a string in DateTime form may be an
Edm.DateTime or an Edm.String; base64 text in an Azure CLI export an Edm.String or an Edm.Binary;
a whole number in a JS backup an Edm.Int32 or an Edm.Double).
Nothing is retyped silently: a value with alternatives needs a rule, either `--types name=Edm.X`
for the property or `--infer-types`, which takes the type it reads as and reports every property it
typed. Without a rule the property is ambiguous, and the import names it and writes nothing.
A rule applies to the values the input leaves untyped; a value the input types keeps its type.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tablebackup.core.entities import ANNOTATED_TYPES, EDM_TYPES, TYPE_SUFFIX
from tablebackup.core.errors import InvalidInput

TYPES_OPTION = "--types"
INFER_OPTION = "--infer-types"
_DOUBLE_WORDS = {"NaN", "Infinity", "-Infinity"}
_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# ISO 8601 with seconds and a zone: the JS SDK prints 3 digits and Z, the Azure CLI 6 (or none) and +00:00.
_DATETIME_RE = re.compile(
    r"^(?P<base>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(?P<fraction>\d{1,7}))?(?P<zone>Z|[+-]\d{2}:\d{2})$"
)
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class Value:
    """One property as an input holds it. `typed`: the input itself says `edm`."""

    raw: object
    edm: str
    alternatives: tuple[str, ...] = ()
    typed: bool = False


def looks_like_datetime(text: str) -> bool:
    return bool(_DATETIME_RE.match(text))


def parse_types(text: str | None) -> dict[str, str]:
    """`name=Edm.DateTime,score=Edm.Double` as {property: EDM type}."""
    rules: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, equals, edm = (part.strip() for part in item.partition("="))
        if not equals or not _NAME_RE.match(name):
            raise InvalidInput(f"{TYPES_OPTION} takes name=Edm.Type pairs separated by commas, not {item.strip()!r}")
        if edm not in EDM_TYPES:
            raise InvalidInput(f"{TYPES_OPTION} {name}={edm}: use one of {', '.join(sorted(EDM_TYPES))}")
        if name in rules and rules[name] != edm:
            raise InvalidInput(f"{TYPES_OPTION} gives {name} two types: {rules[name]} and {edm}")
        rules[name] = edm
    return rules


def _service_datetime(text: str) -> str:
    """A DateTime in the service's form: UTC, `Z`, the fraction as given (up to 7 digits)."""
    match = _DATETIME_RE.match(text)
    if not match:
        raise ValueError
    fraction = match["fraction"] or ""
    if match["zone"] == "Z":
        return f"{match['base']}{'.' + fraction if fraction else ''}Z"
    try:
        at = datetime.fromisoformat(match["base"] + match["zone"]).astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:30:00+01:00 is before DateTime's first instant
        raise ValueError from None
    # isoformat, not strftime: %Y does not pad a year before 1000 (0001-01-01, DateTime's minimum).
    return f"{at.replace(tzinfo=None).isoformat(timespec='seconds')}{'.' + fraction if fraction else ''}Z"


def coerce(edm: str, raw: object) -> object:
    """The value in backup-line form as an `edm`; ValueError if it cannot be one."""
    if edm == "Edm.String" and isinstance(raw, str):
        return raw
    if edm == "Edm.Boolean" and isinstance(raw, bool):
        return raw
    if isinstance(raw, bool):
        raise ValueError
    if edm == "Edm.Int32" and type(raw) is int and _INT32[0] <= raw <= _INT32[1]:
        return raw
    if edm == "Edm.Int64" and isinstance(raw, int | str) and _INT64[0] <= int(raw) <= _INT64[1]:
        return str(int(raw))
    if edm == "Edm.Double":
        if isinstance(raw, str) and raw in _DOUBLE_WORDS:
            return raw
        if isinstance(raw, float) and not math.isfinite(raw):
            return "NaN" if math.isnan(raw) else ("Infinity" if raw > 0 else "-Infinity")
        if type(raw) in (int, float):
            return float(raw)
    if edm == "Edm.DateTime" and isinstance(raw, str):
        return _service_datetime(raw)
    if edm == "Edm.Guid" and isinstance(raw, str) and _GUID_RE.match(raw):
        return raw
    if edm == "Edm.Binary" and isinstance(raw, str):
        base64.b64decode(raw, validate=True)
        return raw
    raise ValueError


@dataclass
class Ambiguity:
    types: tuple[str, ...]
    first_line: int
    example: object
    count: int = 0


@dataclass
class TypeRules:
    """The user's rules, and what applying them found: ambiguous and inferred properties."""

    types: dict[str, str] = field(default_factory=dict)
    infer: bool = False
    ambiguous: dict[str, Ambiguity] = field(default_factory=dict)
    inferred: dict[str, Counter] = field(default_factory=dict)
    # What the reader found: which tool's shape the input has, and an Azure CLI page's next marker.
    shape: str | None = None
    next_marker: object = None

    def fresh(self) -> TypeRules:
        """The same rules, nothing found yet (for a second pass over the input)."""
        return TypeRules(types=self.types, infer=self.infer)

    def entity(self, line: int, properties: dict[str, Value]) -> dict:
        """An entity in backup-line form; InvalidInput if a rule does not fit a value."""
        entity: dict = {}
        for name, value in properties.items():
            edm, raw = value.edm, value.raw
            if not value.typed and name in self.types:
                edm = self.types[name]
            elif value.alternatives:
                if self.infer:
                    self.inferred.setdefault(name, Counter())[edm] += 1
                else:
                    found = self.ambiguous.setdefault(
                        name, Ambiguity(types=(edm, *value.alternatives), first_line=line, example=raw)
                    )
                    found.count += 1
            try:
                entity[name] = coerce(edm, raw)
            except (ValueError, binascii.Error):
                rule = f" ({TYPES_OPTION} {name}={edm})" if name in self.types and not value.typed else ""
                raise InvalidInput(f"property {name!r}: {_short(raw)} is not a valid {edm}{rule}") from None
            if edm in ANNOTATED_TYPES:
                entity[name + TYPE_SUFFIX] = edm
        return entity

    def typed_report(self) -> dict[str, dict[str, int]]:
        """What --infer-types typed: {property: {EDM type: entities}}."""
        return {name: dict(counts) for name, counts in sorted(self.inferred.items())}


def _short(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "…"


class AmbiguousTypes(InvalidInput):
    """Properties whose type the input does not tell, and no rule for them: nothing was written."""

    def __init__(self, name: str, ambiguous: dict[str, Ambiguity]):
        self.properties = ambiguous
        described = "; ".join(
            f"{prop} ({' or '.join(found.types)}: {_short(found.example)} on line {found.first_line}"
            f"{f' and {found.count - 1:,} more' if found.count > 1 else ''})"
            for prop, found in sorted(ambiguous.items())
        )
        example = ",".join(f"{prop}={found.types[0]}" for prop, found in sorted(ambiguous.items()))
        noun = "property" if len(ambiguous) == 1 else "properties"
        super().__init__(
            f"{name} does not say the type of {len(ambiguous)} {noun}: {described}; give each a type with "
            f"{TYPES_OPTION} {example} (or another type), or use {INFER_OPTION} to type them as they look"
        )

    def as_json(self) -> dict:
        return {
            "error": str(self),
            "ambiguous": {
                prop: {"types": list(found.types), "line": found.first_line, "entities": found.count}
                for prop, found in sorted(self.properties.items())
            },
        }
