"""Small inline SVG charts for the status page: a value over time, and drill restore times against
the RTO. Plain SVG with <title> tooltips: no script, nothing loaded from anywhere."""

from __future__ import annotations

from datetime import datetime, timedelta
from html import escape

WIDTH, HEIGHT = 360, 150
LEFT, RIGHT, TOP, BOTTOM = 52, 8, 10, 22  # plot margins, room for the axis labels


def _svg(label: str, body: list[str]) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}" '
        f'xmlns="http://www.w3.org/2000/svg">' + "".join(body) + "</svg>"
    )


def _frame(top_label: str, left_label: str, right_label: str) -> list[str]:
    bottom, right = HEIGHT - BOTTOM, WIDTH - RIGHT
    return [
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}"/>',
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end">{escape(top_label)}</text>',
        f'<text class="tick" x="{LEFT - 4}" y="{bottom}" text-anchor="end">0</text>',
        f'<text class="tick" x="{LEFT}" y="{HEIGHT - 6}">{escape(left_label)}</text>',
        f'<text class="tick" x="{right}" y="{HEIGHT - 6}" text-anchor="end">{escape(right_label)}</text>',
    ]


def _empty(label: str, text: str) -> str:
    return _svg(
        label,
        [
            *_frame("", "", ""),
            f'<text class="note" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">{escape(text)}</text>',
        ],
    )


def time_series(label: str, points: list[tuple[datetime, float]], start: datetime, end: datetime, short) -> str:
    """A line over [start, end]; `short` formats a value for the axis and tooltips."""
    if not points:
        return _empty(label, "no backups in this window")
    span = max((end - start).total_seconds(), 1)
    top = max(value for _, value in points) or 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def xy(at: datetime, value: float) -> tuple[float, float]:
        x = LEFT + plot_w * min(max((at - start).total_seconds() / span, 0), 1)
        return round(x, 1), round(TOP + plot_h * (1 - value / top), 1)

    coords = [xy(at, value) for at, value in points]
    body = _frame(short(top), f"{start:%d %b}", f"{end:%d %b}")
    body.append(f'<polyline class="line" points="{" ".join(f"{x},{y}" for x, y in coords)}"/>')
    for (x, y), (at, value) in zip(coords, points, strict=True):
        body.append(
            f'<circle class="dot" cx="{x}" cy="{y}" r="2.5">'
            f"<title>{at:%Y-%m-%d %H:%M}Z: {escape(short(value))}</title></circle>"
        )
    return _svg(label, body)


def drill_times(label: str, drills: list[dict], rto_seconds: float) -> str:
    """One bar per drill (oldest left): its restore time, with the RTO as a dashed line. Failed
    drills are drawn in the failure colour and marked with a cross."""
    timed = [d for d in drills if isinstance(d.get("restore_seconds"), int | float)]
    if not timed:
        return _empty(label, "no timed drill yet")
    top = max(rto_seconds * 1.15, *(d["restore_seconds"] for d in timed))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / len(timed)
    first, last = timed[0]["at"] or "", timed[-1]["at"] or ""
    body = _frame(_duration(top), first[:10], last[:10])
    for number, drill in enumerate(timed):
        height = max(plot_h * drill["restore_seconds"] / top, 1)
        x, y = LEFT + number * slot + slot * 0.2, TOP + plot_h - height
        outcome = "passed" if drill["ok"] else "FAILED"
        tip = f"{drill['at']}: {drill['kind']} drill {outcome}, restored in {_duration(drill['restore_seconds'])}"
        css = "bar ok" if drill["ok"] else "bar failed"
        body.append(
            f'<rect class="{css}" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.6:.1f}" height="{height:.1f}">'
            f"<title>{escape(tip)}</title></rect>"
        )
        if not drill["ok"]:
            body.append(f'<text class="cross" x="{x + slot * 0.3:.1f}" y="{y - 2:.1f}" text-anchor="middle">✖</text>')
    rto_y = TOP + plot_h * (1 - rto_seconds / top)
    body.append(f'<line class="rto" x1="{LEFT}" y1="{rto_y:.1f}" x2="{WIDTH - RIGHT}" y2="{rto_y:.1f}"/>')
    body.append(
        f'<text class="tick rto-label" x="{WIDTH - RIGHT}" y="{rto_y - 3:.1f}" text-anchor="end">'
        f"RTO {_duration(rto_seconds)}</text>"
    )
    return _svg(label, body)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def window(end: datetime, days: int) -> tuple[datetime, datetime]:
    return end - timedelta(days=days), end
