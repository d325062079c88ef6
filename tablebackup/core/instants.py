"""Instants to the Table service's precision: 100 ns ticks, 7 fractional digits.

A datetime holds microseconds, so `2026-11-25T09:00:00.1234567Z` parsed as one loses its 7th digit
and an inclusive bound at that instant would leave out a change made at exactly it. An Instant is
a datetime that also keeps that digit (`tick`, 0-9 hundred-nanosecond ticks past its microsecond);
astimezone and replace keep it, so it survives being normalised to UTC, and instant_text writes it.
Arithmetic (a datetime plus a timedelta) gives a plain datetime-precision result.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_FRACTION = re.compile(r"(?<=[0-9]{2}:[0-9]{2}:[0-9]{2}\.)([0-9]{6})([0-9]+)")


class Instant(datetime):
    __slots__ = ("tick",)

    def astimezone(self, tz=None) -> Instant:
        return with_tick(super().astimezone(tz), tick_of(self))

    def replace(self, *args, **kwargs) -> Instant:
        moved = "microsecond" in kwargs or len(args) >= 7
        return with_tick(super().replace(*args, **kwargs), 0 if moved else tick_of(self))


def with_tick(moment: datetime, tick: int) -> datetime:
    """`moment` with `tick` hundred-nanosecond ticks past its microsecond (a plain datetime if 0)."""
    if not tick:
        return moment
    instant = Instant(
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
        moment.microsecond,
        tzinfo=moment.tzinfo,
        fold=moment.fold,
    )
    instant.tick = tick
    return instant


def tick_of(moment: datetime) -> int:
    """The 7th fractional digit of `moment`: 0 for a plain datetime."""
    return getattr(moment, "tick", 0)


def parse_instant(text: str) -> datetime:
    """An ISO-8601 instant (one without a zone is UTC), keeping a 7th fractional digit; digits past
    the 7th are dropped, which for an inclusive upper bound keeps what it names. ValueError if it
    is not an instant."""
    match = _FRACTION.search(text)
    tick = int(match.group(2)[0]) if match else 0
    if match:
        text = text[: match.start(2)] + text[match.end(2) :]
    moment = datetime.fromisoformat(text)
    return with_tick(moment if moment.tzinfo else moment.replace(tzinfo=UTC), tick)
