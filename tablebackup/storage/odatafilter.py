"""The Table service's OData $filter syntax, parsed with a grammar and evaluated against backed-up entities.

A filter is parsed once (lark, LALR) straight into a tree of closures, with every literal converted
at parse time: matching an entity calls those closures and never walks a parse tree, because a
filter runs once per line over backups of millions of lines. Nothing is ever eval'd.

Syntax: `not` binds tighter than `and`, which binds tighter than `or`; parentheses group. A comparison
is `<property> <op> <literal>` or `<literal> <op> <property>` (read as the mirrored comparison), with
op one of eq ne gt ge lt le. `not` takes a parenthesised expression (or another `not`): OData's
precedence puts `not` above the comparison operators, so the service reads `not a eq 1` as
`(not a) eq 1`, which means something else, and it is refused here rather than read either way.
At most 15 comparisons, the service's limit of "discrete comparisons" in one $filter. Keywords are
lowercase and reserved. A property is an identifier (letters, digits, underscore), so annotations
("x@odata.type") and metadata ("odata.etag") can never be named. Literals: 'text' (a quote doubled
inside), 42 (Int32), 42L (Int64), 1.5 / 1e10 / 2d (Double), true / false,
datetime'2024-01-02T03:04:05.1234567Z' (up to 7 fractional digits, Z or an offset written +hh:mm,
inside the service's DateTime range 1601-01-01 to 9999-12-31 UTC),
guid'c9da6455-213d-42c9-9a79-3e9149a57833', and binary as hex: X'0aFF' / binary'0aFF'.

Semantics, modelled on the Table service's:
- A comparison on a property the entity lacks (or holds as null) is false, whatever the operator.
  `not` just negates, so `not (missing eq 1)` is true.
- A value compares only with a literal of its own EDM type; across types every operator is false,
  ne included (a string property against a number, a Guid property against a string literal, ...).
  This holds between the numeric types too: the service's documentation says "the constant value
  must be of the same data type as the property", so an Int32 literal (5) selects Int32 values, an
  Int64 literal (5L) Int64 values and a Double literal (5.0, 5d, 5e0) Double values. Azurite differs
  (it compares Int32 and Double by value, Int64 as text, and answers 500 for an Int64 literal
  against an Int32 value); this module follows the documentation, as docs/cli.md says.
- Int64 compares as a Python int, so its extremes are never rounded through a float. A NaN Double
  is unequal to everything: ne is true and every other operator false. Infinity and -Infinity
  order as usual.
- Strings compare ordinally by UTF-16 code unit, case-sensitively, as the service (and
  tablebackup.core.entities.service_order) does: an astral character sorts below U+E000..U+FFFF.
- DateTime compares as an instant in 100-ns ticks, so the 7th fractional digit counts; offsets are
  normalised to UTC and a value without one is taken as UTC. Timestamp is always a DateTime.
- Guid compares case-insensitively (ordering compares the lowercase text). Binary compares by bytes.
  Boolean: false < true.

Every refusal is InvalidInput with a one-line message naming the 1-based character position of the
problem: bad syntax, an invalid literal, an empty filter, one over 10,000 characters, more than 15
comparisons, `not` before a bare comparison, or parentheses and `not` nested more than 100 levels.
"""

from __future__ import annotations

import base64
import binascii
import math
import operator
import re
from collections.abc import Callable
from datetime import date
from typing import NamedTuple

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from tablebackup.core.entities import edm_type
from tablebackup.core.errors import InvalidInput

MAX_LENGTH = 10_000
MAX_DEPTH = 100
# "No more than 15 discrete comparisons are permitted within a $filter string" (Querying tables and
# entities, the Table service's REST reference). Azurite does not enforce it; the service does.
MAX_COMPARISONS = 15

Predicate = Callable[[dict], bool]


class _Compiled(NamedTuple):
    """A compiled subexpression, how deeply its parentheses and `not`s nest, where its comparisons'
    operators are (the first MAX_COMPARISONS + 1 of them, enough to name the one too many), and
    whether it is a bare comparison (which `not` may not take)."""

    predicate: Predicate
    depth: int
    comparisons: tuple[int, ...]
    bare: bool = False


# Literals are spelled out on each side rather than shared as a rule, so the parser's states, and
# with them the "expected ..." of an error, differ after a literal on the left and on the right.
# Keywords need \b so a property such as "notes" or "order" is not read as a keyword plus a name,
# and are never property names, so "a eq 1 or or b eq 2" is refused at the second "or". Priorities
# put literals before keywords before names, so datetime'...' is a literal but datetime a name.
_GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr (_OR and_expr)*
?and_expr: not_expr (_AND not_expr)*
?not_expr: NOT not_expr -> negation
         | OPEN or_expr ")" -> group
         | PROPERTY OP (STRING | NUMBER | TRUE | FALSE | DATETIME | GUID | BINARY) -> property_first
         | (STRING | NUMBER | TRUE | FALSE | DATETIME | GUID | BINARY) OP PROPERTY -> literal_first

STRING.3: /'(?:[^']|'')*'/
DATETIME.3: /datetime'[^']*'/
GUID.3: /guid'[^']*'/
BINARY.3: /(?:X|binary)'[^']*'/
NUMBER.3: /-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?[lLdD]?\b/
TRUE.2: /true\b/
FALSE.2: /false\b/
NOT.2: /not\b/
_AND.2: /and\b/
_OR.2: /or\b/
OP.2: /(?:eq|ne|gt|ge|lt|le)\b/
OPEN: "("
PROPERTY: /(?!(?:and|or|not|true|false|eq|ne|gt|ge|lt|le)\b)[A-Za-z_][A-Za-z0-9_]*/

%ignore /\s+/
"""

_OPERATORS = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
_MIRRORED = {"eq": "eq", "ne": "ne", "gt": "lt", "ge": "le", "lt": "gt", "le": "ge"}
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_DATETIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,7}))?)?"
    r"(?:Z|([+-])([0-9]{2}):([0-9]{2}))?"
)
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")
_TICKS_PER_SECOND = 10**7
_TICKS_PER_DAY = 86_400 * _TICKS_PER_SECOND
# The service's DateTime range, 1601-01-01T00:00:00Z to 9999-12-31T23:59:59.9999999Z, in ticks.
_DATETIME_RANGE = (
    (date(1601, 1, 1).toordinal() - 1) * _TICKS_PER_DAY,
    date(9999, 12, 31).toordinal() * _TICKS_PER_DAY - 1,
)


def datetime_ticks(text: str) -> int | None:
    """100-ns ticks since 0001-01-01 UTC (.NET's DateTime.Ticks), or None if not a valid DateTime."""
    match = _DATETIME.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, sign, zone_hours, zone_minutes = match.groups()
    hour, minute, second = int(hour), int(minute), int(second or 0)
    if hour > 23 or minute > 59 or second > 59:
        return None
    try:
        days = date(int(year), int(month), int(day)).toordinal() - 1
    except ValueError:
        return None
    seconds = days * 86_400 + hour * 3_600 + minute * 60 + second
    if sign:
        if int(zone_hours) > 23 or int(zone_minutes) > 59:
            return None
        offset = int(zone_hours) * 3_600 + int(zone_minutes) * 60
        seconds += -offset if sign == "+" else offset
    # Ticks are counted as integers from the digits, so no precision goes through a float.
    return seconds * _TICKS_PER_SECOND + int((fraction or "").ljust(7, "0"))


# Readers turn an entity's wire value into the comparable form of its family, or None if the
# value does not hold what its type says.
def utf16(text: str) -> bytes:
    """The string's UTF-16 code units, in an order bytes compare as the service compares strings.
    surrogatepass: a lone surrogate the service holds is one code unit like any other."""
    return text.encode("utf-16-be", "surrogatepass")


def _read_string(value: object) -> bytes | None:
    return utf16(value) if isinstance(value, str) else None


def _read_boolean(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _read_int32(value: object) -> int | None:
    return value if type(value) is int else None


def _read_int64(value: object) -> int | None:
    try:
        return int(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _read_double(value: object) -> float | None:
    # The wire carries NaN and the infinities as "NaN", "Infinity", "-Infinity", which float() reads.
    if type(value) is bool:
        return None
    try:
        return float(value) if isinstance(value, int | float | str) else None
    except ValueError:
        return None


def _read_datetime(value: object) -> int | None:
    return datetime_ticks(value) if isinstance(value, str) else None


def _read_guid(value: object) -> str | None:
    return value.lower() if isinstance(value, str) else None


def _read_binary(value: object) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True) if isinstance(value, str) else None
    except (binascii.Error, ValueError):
        return None


# A literal's family: the EDM types it can be compared with, each with its reader.
_Family = dict[str, Callable[[object], object]]
_STRINGS: _Family = {"Edm.String": _read_string}
_BOOLEANS: _Family = {"Edm.Boolean": _read_boolean}
_INT32S: _Family = {"Edm.Int32": _read_int32}
_INT64S: _Family = {"Edm.Int64": _read_int64}
_DOUBLES: _Family = {"Edm.Double": _read_double}
_DATETIMES: _Family = {"Edm.DateTime": _read_datetime}
_GUIDS: _Family = {"Edm.Guid": _read_guid}
_BINARIES: _Family = {"Edm.Binary": _read_binary}


def _refusal(index: int, reason: str) -> InvalidInput:
    return InvalidInput(f"invalid filter at position {index + 1}: {reason}")


def _literal(token: Token) -> tuple[_Family, object]:
    kind, text = token.type, str(token)
    if kind == "STRING":
        return _STRINGS, utf16(text[1:-1].replace("''", "'"))
    if kind in ("TRUE", "FALSE"):
        return _BOOLEANS, kind == "TRUE"
    if kind == "NUMBER":
        return _number(token)
    body = text[text.index("'") + 1 : -1]
    if kind == "DATETIME":
        ticks = datetime_ticks(body)
        if ticks is None:
            raise _refusal(token.start_pos, f"{_show(text)} is not a valid DateTime")
        if not _DATETIME_RANGE[0] <= ticks <= _DATETIME_RANGE[1]:
            raise _refusal(
                token.start_pos,
                f"{_show(text)} is outside the Table service's DateTime range (1601-01-01 to 9999-12-31 UTC)",
            )
        return _DATETIMES, ticks
    if kind == "GUID":
        if not _GUID.fullmatch(body):
            raise _refusal(token.start_pos, f"{_show(text)} is not a valid Guid")
        return _GUIDS, body.lower()
    if not _HEX.fullmatch(body):
        raise _refusal(token.start_pos, f"{_show(text)} is not valid binary (an even number of hex digits)")
    return _BINARIES, bytes.fromhex(body)


def _whole(digits: str) -> int | None:
    """The literal's value, or None past 19 significant digits: beyond any Int64, and int() refuses
    more than 4,300 digits with a ValueError."""
    significant = digits.lstrip("-").lstrip("0") or "0"
    if len(significant) > 19:
        return None
    return -int(significant) if digits.startswith("-") else int(significant)


def _number(token: Token) -> tuple[_Family, int | float]:
    text = str(token)
    suffix = text[-1].lower() if text[-1] in "lLdD" else ""
    digits = text[:-1] if suffix else text
    whole = not any(mark in digits for mark in ".eE")
    if suffix == "l":
        if not whole:
            raise _refusal(token.start_pos, f"{_show(text)} is not a valid Int64 (a whole number is needed)")
        value = _whole(digits)
        if value is None or not _INT64[0] <= value <= _INT64[1]:
            raise _refusal(token.start_pos, f"{_show(text)} is outside the Int64 range")
        return _INT64S, value
    if suffix == "d" or not whole:
        double = float(digits)
        if not math.isfinite(double):
            raise _refusal(token.start_pos, f"{_show(text)} is outside the Double range")
        return _DOUBLES, double
    value = _whole(digits)
    if value is None or not _INT32[0] <= value <= _INT32[1]:
        raise _refusal(token.start_pos, f"{_show(text)} is outside the Int32 range (an Int64 needs the L suffix)")
    return _INT32S, value


def _comparison(name: str, op: str, literal: tuple[_Family, object]) -> Predicate:
    family, wanted = literal
    compare = _OPERATORS[op]
    # The service types Timestamp as a DateTime although the wire gives it no annotation.
    is_timestamp = name == "Timestamp"

    def predicate(entity: dict) -> bool:
        value = entity.get(name)
        if value is None:
            return False
        read = family.get("Edm.DateTime" if is_timestamp else edm_type(entity, name))
        if read is None:
            return False
        have = read(value)
        return have is not None and compare(have, wanted)

    return predicate


# Plain loops rather than any()/all() over a generator: they short-circuit the same way and cost
# half as much per entity.
def _any_of(predicates: tuple[Predicate, ...]) -> Predicate:
    def predicate(entity: dict) -> bool:
        for part in predicates:  # noqa: SIM110
            if part(entity):
                return True
        return False

    return predicate


def _all_of(predicates: tuple[Predicate, ...]) -> Predicate:
    def predicate(entity: dict) -> bool:
        for part in predicates:  # noqa: SIM110
            if not part(entity):
                return False
        return True

    return predicate


def _deeper(depth: int, token: Token) -> int:
    # Checked as the parser reduces, so a deep filter is refused before its closures could nest
    # deep enough to exhaust the stack when matching.
    if depth + 1 > MAX_DEPTH:
        raise _refusal(token.start_pos, f"parentheses and 'not' nest more than {MAX_DEPTH} levels deep from here")
    return depth + 1


@v_args(inline=True)
class _Compiler(Transformer):
    """Run by the LALR parser at each reduction, so no parse tree is ever built or walked."""

    def or_expr(self, *parts: _Compiled) -> _Compiled:
        return _combined(_any_of, parts)

    def and_expr(self, *parts: _Compiled) -> _Compiled:
        return _combined(_all_of, parts)

    def negation(self, keyword: Token, part: _Compiled) -> _Compiled:
        if part.bare:
            raise _refusal(
                keyword.start_pos,
                "'not' needs parentheses around a comparison: OData reads 'not a eq 1' as '(not a) eq 1'; "
                "write 'not (a eq 1)'",
            )
        predicate = part.predicate
        return _Compiled(lambda entity: not predicate(entity), _deeper(part.depth, keyword), part.comparisons)

    def group(self, bracket: Token, part: _Compiled) -> _Compiled:
        return _Compiled(part.predicate, _deeper(part.depth, bracket), part.comparisons)

    def property_first(self, name: Token, op: Token, literal: Token) -> _Compiled:
        return _Compiled(_comparison(str(name), str(op), _literal(literal)), 0, (op.start_pos,), bare=True)

    def literal_first(self, literal: Token, op: Token, name: Token) -> _Compiled:
        return _Compiled(_comparison(str(name), _MIRRORED[str(op)], _literal(literal)), 0, (op.start_pos,), bare=True)


def _combined(combine: Callable[[tuple[Predicate, ...]], Predicate], parts: tuple[_Compiled, ...]) -> _Compiled:
    return _Compiled(
        combine(tuple(part.predicate for part in parts)),
        max(part.depth for part in parts),
        tuple(position for part in parts for position in part.comparisons)[: MAX_COMPARISONS + 1],
    )


_PARSER = Lark(_GRAMMAR, parser="lalr", lexer="contextual", transformer=_Compiler())

_EXPECTATIONS = {
    "OP": "a comparison operator: eq ne gt ge lt le",
    "PROPERTY": "a property name",
    "STRING": "a literal value",
    "NUMBER": "a literal value",
    "TRUE": "a literal value",
    "FALSE": "a literal value",
    "DATETIME": "a literal value",
    "GUID": "a literal value",
    "BINARY": "a literal value",
    "NOT": "'not'",
    "OPEN": "'('",
    "RPAR": "')'",
    "_AND": "'and'",
    "_OR": "'or'",
    "$END": "the end of the filter",
}
_OPENING_QUOTE = re.compile(r"[A-Za-z]*'")
_QUOTED = re.compile(r"[A-Za-z]*'(?:[^']|'')*'")
_CHUNK = re.compile(r"[\w.-]+|.", re.DOTALL)


def _show(text: str) -> str:
    # repr escapes line breaks, keeping the message on one line; long tokens are cut short.
    return repr(text if len(text) <= 40 else text[:40] + "…")


def _syntax_error(text: str, error: UnexpectedInput) -> InvalidInput:
    if isinstance(error, UnexpectedToken) and error.token.type != "$END":
        index, found, expected = error.token.start_pos, str(error.token), error.expected
    elif isinstance(error, UnexpectedCharacters):
        index, expected = error.pos_in_stream, error.allowed
        found = _CHUNK.match(text, index).group()
    else:
        index, found, expected = len(text), "", getattr(error, "expected", ())
    if index >= len(text):
        problem = "unexpected end of filter"
    elif _OPENING_QUOTE.match(text, index) and not _QUOTED.match(text, index):
        problem = "unterminated quoted literal"
    else:
        problem = f"unexpected {_show(found)}"
    wanted = list(dict.fromkeys(words for name, words in _EXPECTATIONS.items() if name in expected))
    if not wanted:
        return _refusal(index, problem)
    listed = wanted[0] if len(wanted) == 1 else ", ".join(wanted[:-1]) + " or " + wanted[-1]
    return _refusal(index, f"{problem} (expected {listed})")


class ODataFilter:
    """A parsed filter: `matches(entity)` says whether a backed-up entity satisfies it."""

    __slots__ = ("matches", "text")

    def __init__(self, text: str, predicate: Predicate) -> None:
        self.text = text
        # The compiled predicate itself, so matching costs no extra method call per entity.
        self.matches: Predicate = predicate

    def __repr__(self) -> str:
        return f"ODataFilter({self.text!r})"


def parse_filter(text: str) -> ODataFilter:
    """The filter in `text`, compiled; InvalidInput naming the position of any problem."""
    if not isinstance(text, str):
        raise InvalidInput("invalid filter: it must be text")
    if len(text) > MAX_LENGTH:
        raise _refusal(MAX_LENGTH, f"the filter is longer than {MAX_LENGTH:,} characters ({len(text):,})")
    if not text.strip():
        raise _refusal(0, "the filter is empty")
    try:
        compiled = _PARSER.parse(text)
    except UnexpectedInput as error:
        raise _syntax_error(text, error) from None
    if len(compiled.comparisons) > MAX_COMPARISONS:
        raise _refusal(
            compiled.comparisons[MAX_COMPARISONS],
            f"more than {MAX_COMPARISONS} comparisons; the Table service allows at most "
            f"{MAX_COMPARISONS} discrete comparisons in one $filter",
        )
    predicate = compiled.predicate
    return ODataFilter(text, predicate)
