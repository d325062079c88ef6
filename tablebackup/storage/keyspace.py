"""Find PartitionKey cut points of a table nobody has sampled yet, with cheap point queries.

A table's first backup has no key samples to cut it at. Like other distributed scanners of Azure
Tables, we probe the key space instead: `PartitionKey ge '<probe>'` with `$top=1` and
`$select=PartitionKey` answers with the first existing key at or after any string, at the cost of
one tiny request. Bisecting the gaps between the keys found so far (widest gap first) gives
existing keys spread evenly across the *key space*.

What it can't give is equal-count cuts: no query counts entities, so a range of the key space
holding most of the data stays one part. Those cuts are for one backup only: the backup records key
samples at even intervals of the data, and the next full backup is cut at those.

Key order is the service's: PartitionKeys compared by UTF-16 code units (see
tablebackup.core.entities.service_order), which is also how probes are built and compared.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from fractions import Fraction

from azure.data.tables import TableClient

from tablebackup.storage.tablequery import fetch_page, odata_string

# A table whose keys all fit in one page of the service's largest size is small: not worth cutting.
SMALL_TABLE_ENTITIES = 1_000
# No key holds a character below U+0020 (control characters are not allowed in keys), so the
# first key after k is at or after k + " ".
_LOWEST_KEY_CHAR = " "
# Printable ASCII: the characters most keys are made of, so the first probes land among them.
_BASE_ALPHABET = frozenset(range(0x20, 0x7F))
# Probes in a row that find nothing in a gap before asking for the key right after its low end.
_MISSES_BEFORE_STEP = 2
# Digits a midpoint may add beyond the longer of its two ends before we give up on it.
_EXTRA_DIGITS = 3


def _units(text: str) -> tuple[int, ...]:
    raw = text.encode("utf-16-be", "surrogatepass")
    return tuple(int.from_bytes(raw[index : index + 2], "big") for index in range(0, len(raw), 2))


def _text(units: list[int] | tuple[int, ...]) -> str:
    """The string of these UTF-16 code units, cut short at a lone surrogate (it can't be sent as
    UTF-8) and ended with the nearest unit that makes it whole: the lowest low surrogate after a
    high one, U+E000 (the next unit past the surrogates) for a low one. The caller checks that it
    still lies between its bounds."""
    units = list(units)
    index = 0
    while index < len(units):
        unit = units[index]
        if 0xD800 <= unit <= 0xDBFF:
            if index + 1 < len(units) and 0xDC00 <= units[index + 1] <= 0xDFFF:
                index += 2
                continue
            units = [*units[: index + 1], 0xDC00]
            break
        if 0xDC00 <= unit <= 0xDFFF:
            units = [*units[:index], 0xE000]
            break
        index += 1
    return b"".join(unit.to_bytes(2, "big") for unit in units).decode("utf-16-be")


def _before(left: str, right: str | None) -> bool:
    """left < right in the service's order; None is past every key."""
    return right is None or _units(left) < _units(right)


@dataclass
class KeySpaceProbe:
    """The outcome of probing one table: its cut points (existing keys, increasing) and how many
    queries it took."""

    first: str | None = None
    cuts: list[str] = field(default_factory=list)
    queries: int = 0
    small: bool = False


class _Prober:
    def __init__(self, client: TableClient, budget: int) -> None:
        self.client = client
        self.budget = budget
        self.queries = 0

    def page(self, params: dict) -> tuple[list[dict], bool]:
        """One page of keys; follows a continuation the service gives with an empty page (it may
        stop at a partition server's boundary or after 5 s without a result)."""
        continuation = None
        while True:
            self.queries += 1
            keys, continuation = fetch_page(self.client, params, continuation)
            if keys or continuation is None or self.queries >= self.budget:
                return keys, continuation is not None

    def next_key(self, probe: str) -> str | None:
        """The first existing PartitionKey at or after probe, or None."""
        params = {"$top": "1", "$select": "PartitionKey", "$filter": f"PartitionKey ge {odata_string(probe)}"}
        keys, _ = self.page(params)
        return keys[0]["PartitionKey"] if keys else None


class _Space:
    """Strings as fractions in [0, 1), digit by digit, so that the widths of gaps compare and a
    midpoint can be computed. The digits are the code units of an alphabet: printable ASCII and the
    units of the table's first keys, each a digit, and each stretch of units between two of them
    one digit too, after which a string's value stops. The alphabet is fixed for one probe: keys
    found later (a rare CJK key among ASCII ones) don't widen the space around themselves. Digit 0
    ends a string. The value never decreases in the service's order; equal values mean "can't tell
    apart here", never a wrong order."""

    def __init__(self, strings: list[str]) -> None:
        units = set(_BASE_ALPHABET)
        for text in strings:
            units.update(_units(text))
        self.alphabet = sorted(units)
        # Digit d (from 1) stands for cells[d - 1]: (unit, exact). A stretch between two units of
        # the alphabet is a cell only if a key character fits in it; its unit is the lowest one.
        self.cells: list[tuple[int, bool]] = []
        self.exact: list[int] = []
        self.between: list[int] = []
        for index in range(len(self.alphabet) + 1):
            below = self.alphabet[index - 1] if index else None
            above = self.alphabet[index] if index < len(self.alphabet) else 0x10000
            unit = _key_unit_after(below) if below is not None else None
            if unit is not None and unit < above:
                self.cells.append((unit, False))
            # The digit of units after alphabet[index - 1]: that cell, or the one below if none fits.
            self.between.append(len(self.cells))
            if index < len(self.alphabet):
                self.cells.append((above, True))
                self.exact.append(len(self.cells))
        self.base = len(self.cells) + 1

    def _digit(self, unit: int) -> tuple[int, bool]:
        index = bisect.bisect_left(self.alphabet, unit)
        if index < len(self.alphabet) and self.alphabet[index] == unit:
            return self.exact[index], True
        return self.between[index], False

    def value(self, text: str | None, length: int) -> int:
        if text is None:
            return self.base**length  # 1.0: past every string
        digits = []
        for unit in _units(text)[:length]:
            digit, exact = self._digit(unit)
            digits.append(digit)
            if not exact:
                break  # a unit between two of the alphabet: what follows it can't be told apart
        number = 0
        for digit in digits + [0] * (length - len(digits)):
            number = number * self.base + digit
        return number

    def width(self, low: str, high: str | None) -> Fraction:
        length = max(len(_units(low)), len(_units(high or ""))) + 1
        return Fraction(self.value(high, length) - self.value(low, length), self.base**length)

    def midpoint(self, low: str, high: str | None) -> str | None:
        """A string strictly between low and high, about half way in this space, or None."""
        length = max(len(_units(low)), len(_units(high or ""))) + 1
        for _ in range(_EXTRA_DIGITS):
            a, b = self.value(low, length), self.value(high, length)
            if b - a >= 2:
                probe = self._string((a + b) // 2, length)
                if _before(low, probe) and _before(probe, high):
                    return probe
                return None
            length += 1
        return None

    def _string(self, number: int, length: int) -> str:
        digits = []
        for _ in range(length):
            number, digit = divmod(number, self.base)
            digits.append(digit)
        digits.reverse()
        while digits and digits[-1] == 0:
            digits.pop()
        if 0 in digits:  # an end of string inside: the shortest string past it is the lowest char there
            digits = [*digits[: digits.index(0)], 1]
        units = []
        for digit in digits:
            unit, exact = self.cells[digit - 1]
            units.append(unit)
            if not exact:
                break  # nothing after it counts in this space
        return _text(units)


def _key_unit_after(unit: int) -> int | None:
    """The lowest code unit above `unit` a key may hold (not a control character), or None."""
    unit += 1
    if 0x7F <= unit <= 0x9F:
        unit = 0xA0
    return unit if unit <= 0xFFFF else None


def probe_cuts(client: TableClient, parts: int, budget: int) -> KeySpaceProbe:
    """Up to parts-1 existing PartitionKeys, increasing, that cut the table's key space into
    ranges of about equal width, from at most `budget` queries. A table that fits in one page, or
    whose keys can't be cut (one partition), gets no cut."""
    prober = _Prober(client, budget)
    head, more = prober.page({"$top": str(SMALL_TABLE_ENTITIES), "$select": "PartitionKey"})
    if not head:
        return KeySpaceProbe(queries=prober.queries, small=True)
    first = head[0]["PartitionKey"]
    if not more:
        return KeySpaceProbe(first=first, queries=prober.queries, small=True)
    # Keys found right after one known already (the first page's last, each successor asked for)
    # are spares: cuts only if too few spread ones are found, as they make small parts.
    spares = {head[-1]["PartitionKey"]} - {first}
    cuts: set[str] = set()
    # One query settles the commonest unsplittable table: no key after the first page's (one
    # partition, or the few the page holds), so nothing to bisect.
    after = prober.next_key(head[-1]["PartitionKey"] + _LOWEST_KEY_CHAR)
    if after is not None:
        spares.add(after)
    # Gaps of unknown content: (low, high, misses) holds no key we know of, low an existing key,
    # high an exclusive bound (a key, a probe, or None: past the end of the key space); misses: how
    # many probes in a row found nothing in it, None once its low end has been stepped past.
    gaps: list[tuple[str, str | None, int | None]] = [] if after is None else [(after, None, 0)]
    space = _Space([entity["PartitionKey"] for entity in head])
    while gaps and len(cuts) < parts - 1 and prober.queries < budget:
        low, high, misses = gaps.pop(max(range(len(gaps)), key=lambda index: space.width(*gaps[index][:2])))
        probe = space.midpoint(low, high)
        if probe is None:
            continue  # too narrow to cut at any sensible depth
        found = prober.next_key(probe)
        if found is not None and _before(found, high):
            cuts.add(found)
            gaps.append((found, high, 0))
            misses = None if misses is None else 0
        elif misses is not None:
            misses += 1
        if misses == _MISSES_BEFORE_STEP and prober.queries < budget:
            # Halving a gap that holds nothing never ends: after a few misses, one query for the
            # key right after low tells whether there is any (a spare: it is next to low). Once
            # per gap, or a run of keys close together would be walked one by one.
            step = prober.next_key(low + _LOWEST_KEY_CHAR)
            if step is None or not _before(step, probe):
                continue  # the gap is empty
            spares.add(step)
            low, misses = step, None
        if _before(low + _LOWEST_KEY_CHAR, probe):  # else no key can lie strictly between
            gaps.append((low, probe, misses))
    ordered = sorted(cuts, key=_units)
    if len(ordered) < parts - 1:
        ordered = sorted(cuts | set(sorted(spares - cuts, key=_units)[: parts - 1 - len(ordered)]), key=_units)
    return KeySpaceProbe(first=first, cuts=ordered, queries=prober.queries)
