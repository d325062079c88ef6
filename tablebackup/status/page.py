"""The status document as one self-contained HTML page: a summary line, a row per table with its
verdict in colour and in words, and per table the details and charts (inline SVG). No script and
nothing fetched: the Content-Security-Policy says so, and every number is in the HTML itself."""

from __future__ import annotations

from datetime import datetime
from html import escape

from tablebackup.status import charts
from tablebackup.status.verdicts import AT_RISK, PROTECTED, UNPROTECTED, ago

# Sent as a header by the HTTP door and repeated in the page, so a saved copy is as strict.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
)
_MARK = {PROTECTED: "✔", AT_RISK: "▲", UNPROTECTED: "✖"}
_CSS = """
:root{--ok:#1a7f37;--risk:#9a6700;--bad:#cf222e;--ink:#1f2328;--mute:#59636e;--line:#d1d9e0;--bg:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);background:#fff}
main{max-width:1200px;margin:0 auto;padding:16px}
h1{font-size:1.4rem;margin:0 0 8px}
h2{font-size:1.1rem;margin:0 0 8px}
.summary{padding:12px 14px;border-radius:8px;border:2px solid;margin:8px 0 12px;font-size:1.05rem}
.summary.protected{border-color:var(--ok);background:#dafbe1}.summary.at-risk{border-color:var(--risk);background:#fff8c5}
.summary.unprotected{border-color:var(--bad);background:#ffebe9}
.meta,.note,.tick{color:var(--mute)}.meta{font-size:.85rem;margin:0 0 12px}
.verdict{display:inline-block;padding:1px 8px;border-radius:12px;font-weight:600;color:#fff;white-space:nowrap}
.verdict.protected{background:var(--ok)}.verdict.at-risk{background:var(--risk)}.verdict.unprotected{background:var(--bad)}
table.overview{width:100%;border-collapse:collapse;margin-bottom:20px}
.overview th,.overview td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
.overview thead th,.overview td.num{white-space:nowrap}
.overview th[scope=row]{overflow-wrap:break-word}
.overview td[data-field=verification],.overview td[data-field=drills]{white-space:nowrap}
.overview td[data-field=reason]{min-width:24ch;overflow-wrap:anywhere}
.wide{overflow-x:auto}
.overview th{background:var(--bg);font-size:.85rem}
.num{text-align:right;font-variant-numeric:tabular-nums}
section.table{border:1px solid var(--line);border-radius:8px;padding:12px 14px;margin:0 0 16px}
.facts{display:grid;grid-template-columns:repeat(auto-fit,minmax(230px,1fr));gap:4px 16px;margin:0 0 10px;padding:0}
.facts div{margin:0}.facts dt{font-size:.8rem;color:var(--mute)}.facts dd{margin:0 0 4px;overflow-wrap:anywhere}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(280px,1fr));gap:12px}
figure{margin:0}figcaption{font-size:.85rem;color:var(--mute)}
svg.chart{width:100%;height:auto;max-width:520px;background:var(--bg);border-radius:6px}
.axis{stroke:#8c959f;stroke-width:1}.line{fill:none;stroke:#0969da;stroke-width:2}.dot{fill:#0969da}
.tick,.note{font-size:10px;fill:#59636e}.bar.ok{fill:var(--ok)}.bar.failed{fill:var(--bad)}.cross{fill:var(--bad);font-size:10px}
.rto{stroke:var(--bad);stroke-dasharray:5 3;stroke-width:1.5}
ul.events{margin:4px 0 0;padding-left:18px;font-size:.9rem}
@media (max-width:700px){
 main{padding:10px}
 table.overview thead{display:none}
 table.overview,.overview tbody,.overview tr,.overview td{display:block;width:100%}
 .overview tr{border:1px solid var(--line);border-radius:8px;margin-bottom:10px;padding:6px 8px}
 .overview td{border:0;padding:2px 0;text-align:left}
 .overview td[data-label]::before{content:attr(data-label) ": ";color:var(--mute);font-size:.85rem}
}
"""


def _css_class(verdict: str) -> str:
    return verdict.replace(" ", "-")


def _badge(verdict: str) -> str:
    css = _css_class(verdict)
    return f'<span class="verdict {css}" data-verdict="{escape(verdict)}">{_MARK[verdict]} {escape(verdict)}</span>'


def _count(value) -> str:
    return "—" if value is None else f"{value:,}"


def size(value: float | None) -> str:
    """Bytes in binary units: `512 B`, `1.5 KiB`, `3.2 GiB`."""
    if value is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def _at(text: str | None) -> str:
    """An instant as `2026-12-01 02:30Z` (the JSON keeps the exact one)."""
    if not text:
        return "undated"
    return escape(f"{datetime.fromisoformat(text):%Y-%m-%d %H:%M}Z")


def _check(result: dict | None, label: str) -> str:
    if not result:
        return f"no {label} recorded"
    outcome = "passed" if result["ok"] else "FAILED"
    return f"{outcome} {_at(result['at'])}"


def _cell(label: str, text: str, css: str = "", field: str = "", value=None) -> str:
    attributes = f' data-label="{escape(label)}"'
    if css:
        attributes += f' class="{css}"'
    if field:
        attributes += f' data-field="{field}"'
    if value is not None:
        attributes += f' data-value="{escape(str(value))}"'
    return f"<td{attributes}>{text}</td>"


def _lately(result: dict | None, now: datetime, label: str) -> str:
    """`passed 3.2 h ago`, for the overview's narrow cells."""
    if not result:
        return f"no {label}"
    outcome = "passed" if result["ok"] else "FAILED"
    return f"{outcome} {ago(now, datetime.fromisoformat(result['at']))}" if result["at"] else outcome


def _overview_row(row: dict, now: datetime) -> str:
    newest = row["newest_backup"] or {}
    drills = row["drills"]
    drill_text = (
        "<br>".join(f"{kind} {_lately(drills[kind], now, 'drill')}" for kind in ("entity", "full") if drills[kind])
        or "no drill"
    )
    cells = [
        f'<th scope="row"><a href="#t-{escape(row["table"])}">{escape(row["table"])}</a></th>',
        _cell("Verdict", _badge(row["verdict"]), field="verdict", value=row["verdict"]),
        _cell("Reason", escape(row["reason"]), field="reason"),
        _cell(
            "Backup age",
            "—" if newest.get("age_hours") is None else f"{newest['age_hours']:.1f} h",
            "num",
            "age_hours",
            newest.get("age_hours"),
        ),
        _cell("Entities", _count(newest.get("entities")), "num", "entities", newest.get("entities")),
        _cell("Size", size(newest.get("bytes")), "num", "bytes", newest.get("bytes")),
        _cell("Verified", _lately(row["verification"], now, "verification"), field="verification"),
        _cell("Drills", drill_text, field="drills"),
    ]
    backup = escape(newest.get("backup") or "")
    return (
        f'<tr data-table="{escape(row["table"])}" data-verdict="{escape(row["verdict"])}" data-backup="{backup}">'
        f"{''.join(cells)}</tr>"
    )


def _fact(term: str, text: str) -> str:
    return f"<div><dt>{escape(term)}</dt><dd>{text}</dd></div>"


def _events(items: list[str]) -> str:
    return '<ul class="events">' + "".join(f"<li>{item}</li>" for item in items) + "</ul>" if items else "none"


def _restored(record: dict) -> str:
    scope = "the whole table (mirror)" if record["whole"] else f"mode {record['mode']}"
    if record.get("filter"):
        scope += f", filter {record['filter']}"
    undo = f"; safety backup {record['safety_backup']}" if record.get("safety_backup") else ""
    return escape(f"from {record['backup']} at {record['restored_at']} ({scope}){undo}: take a backup")


def _section(row: dict, document: dict, now: datetime) -> str:
    table = row["table"]
    newest = row["newest_backup"]
    retention = row["retention"]
    growth = row["trend"]["growth"]
    verification = row["verification"]
    oldest = retention["oldest_restorable"]
    facts = [
        _fact("Verdict", f"{_badge(row['verdict'])} {escape(row['reason'])}"),
        _fact(
            "Latest (what a restore of latest uses)",
            escape(row.get("latest_problem") or "none")
            if newest is None
            else f"{escape(newest['backup'])} ({escape(newest['kind'])}), {newest['age_hours']:.1f} h old, "
            f"{newest['entities']:,} entities, {size(newest['bytes'])}; taken: {escape(newest['reason_text'])}; "
            f"chosen as {escape(newest['latest']['why'])}",
        ),
        _fact(
            "Restored in place since the newest backup",
            "no" if not row.get("restored_in_place") else _restored(row["restored_in_place"]),
        ),
        _fact(
            "In progress",
            _events([f"{escape(a['backup'])} since {_at(a['started_at'])}" for a in row["in_progress"]]),
        ),
        _fact(
            "Failed in the last 30 days",
            _events(
                [
                    f"{_at(f['at'])} {escape(f['backup'] or f['item'])}: {escape(f['error'])}"
                    for f in row["failures"][:5]
                ]
            ),
        ),
        _fact(
            "Verification of latest",
            "none recorded"
            if verification is None
            else _check(verification, "verification")
            + (f" ({escape(verification['backup'])})" if verification.get("backup") else "")
            + "".join(
                f"; {escape(c.get('name', ''))}: {escape(str(c.get('detail', '')))}"
                for c in verification["failed_checks"][:2]
            ),
        ),
        *(
            _fact(
                f"Last {kind} drill",
                "none recorded"
                if drill is None
                else _check(drill, "drill")
                + (
                    f", restored in {drill['restore_seconds']:.1f} s"
                    if isinstance(drill["restore_seconds"], int | float)
                    else ""
                )
                + "".join(
                    f"; {escape(c.get('name', ''))}: {escape(str(c.get('detail', '')))}"
                    for c in drill["failed_checks"][:2]
                ),
            )
            for kind, drill in row["drills"].items()
        ),
        _fact(
            "Retention",
            f"{retention['complete_backups']:,} complete backups kept; oldest restorable "
            + (f"{escape(oldest['backup'])} ({_at(oldest['taken_at'])})" if oldest else "none")
            + f"; newest chain {len(retention['newest_chain'])} link(s)"
            + f"; {retention['incomplete_debris']} incomplete attempt(s) left over",
        ),
        _fact(
            f"Growth over {growth.get('days', 0) or 0:g} days",
            "not enough backups"
            if growth["entities_per_day"] is None
            else f"{growth['entities_per_day']:+,.1f} entities/day"
            + (f" ({growth['entities_percent']:+.1f}%)" if growth["entities_percent"] is not None else "")
            + f", {size(growth['bytes_per_day'])}/day",
        ),
        _fact(
            "Legacy backups",
            f"{row['legacy_backups']['count']}"
            + (
                f" ({_at(row['legacy_backups']['oldest'])} to {_at(row['legacy_backups']['newest'])})"
                if row["legacy_backups"]["count"]
                else ""
            ),
        ),
        _fact("Erasures registered", f"{row['erasures']:,}"),
        _fact(
            "Newest audited application change (point-in-time reach)",
            _at(row["audit"]["newest_event"])
            if row["audit"]["newest_event"]
            else f"none in the last {row['audit']['lookback_days']} days",
        ),
    ]
    start, end = charts.window(now, row["trend"]["days"])
    points = [(datetime.fromisoformat(p["taken_at"]), p) for p in row["trend"]["points"]]
    figures = [
        (
            f"Entities, last {row['trend']['days']} days",
            charts.time_series(f"entities of {table}", [(at, p["entities"]) for at, p in points], start, end, _count),
        ),
        (
            f"Backup size, last {row['trend']['days']} days",
            charts.time_series(f"bytes of {table}", [(at, p["bytes"]) for at, p in points], start, end, size),
        ),
        (
            f"Drill restore time against the RTO ({document['thresholds']['rto_minutes']:g} min)",
            charts.drill_times(
                f"drill restore times of {table}", row["drill_history"], document["thresholds"]["rto_minutes"] * 60
            ),
        ),
    ]
    figure_html = "".join(
        f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>" for caption, svg in figures
    )
    return (
        f'<section class="table" id="t-{escape(table)}" data-table="{escape(table)}">'
        f"<h2>{escape(table)} {_badge(row['verdict'])}</h2>"
        f'<dl class="facts">{"".join(facts)}</dl><div class="charts">{figure_html}</div></section>'
    )


def render(document: dict) -> str:
    """The page for a status document from tablebackup.status.report.account_status."""
    now = datetime.fromisoformat(document["generated_at"])
    verdict = document["verdict"]
    limits = document["thresholds"]
    counts = document["counts"]
    rows = "".join(_overview_row(row, now) for row in document["tables"])
    sections = "".join(_section(row, document, now) for row in document["tables"])
    head = ["Table", "Verdict", "Reason", "Backup age", "Entities", "Size", "Verified", "Drills"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">
<title>Backup status: {escape(verdict)}</title>
<style>{_CSS}</style></head>
<body><main>
<h1>Backup protection status</h1>
<p class="summary {_css_class(verdict)}" data-overall="{escape(verdict)}">
{_badge(verdict)} {escape(document["reason"])}</p>
<p class="meta">{counts[PROTECTED]} protected, {counts[AT_RISK]} at risk, {counts[UNPROTECTED]} unprotected ·
account {escape(document["account"])}, container {escape(document["container"])} ·
generated {escape(document["generated_at"])} ·
RPO {limits["rpo_hours"]:g} h (at risk after {limits["at_risk_after_hours"]:g} h) · RTO {limits["rto_minutes"]:g} min
(at risk above {limits["at_risk_restore_minutes"]:g} min) ·
drills expected every {limits["drill_max_age_days"]} days</p>
<div class="wide"><table class="overview"><thead><tr>{"".join(f'<th scope="col">{h}</th>' for h in head)}</tr></thead>
<tbody>{rows}</tbody></table></div>
{sections}
</main></body></html>
"""
