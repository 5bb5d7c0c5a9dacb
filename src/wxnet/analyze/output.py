"""Flow records as CSV rows and as a self-contained HTML report (``wxnet analyze``).

CSV has exactly the fields of ``--json`` (:meth:`FlowRecord.to_json`), in the same
(sorted) order; the nested ones (``evidence``, ``longlink``) are JSON text in their cell.

The HTML report is one file with no external resources: an inline SVG chart of the bytes
by application over time (each flow's bytes spread evenly over its duration, in up to
:data:`BUCKETS` time buckets, stacked), the summary by application, and the table of
flows (largest first, at most ``max_rows``) with their evidence.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from wxnet.analyze.engine import FlowRecord, Stats

__all__ = ["BUCKETS", "CSV_FIELDS", "csv_header", "csv_row", "render_report", "write_report"]

CSV_FIELDS = (
    "app",
    "bytes",
    "client",
    "client_bytes",
    "client_packets",
    "client_port",
    "confirmed",
    "duration",
    "end",
    "evidence",
    "label",
    "longlink",
    "packets",
    "server",
    "server_bytes",
    "server_packets",
    "server_port",
    "spoofed",
    "start",
    "transport",
)
#: Time buckets of the report's chart.
BUCKETS = 60
#: Flows listed in the report's table by default (largest first).
REPORT_ROWS = 10_000
_UNKNOWN_COLOUR = "#b0b0b0"
_COLOURS = (
    "#2e7d32",
    "#1565c0",
    "#ef6c00",
    "#6a1b9a",
    "#c62828",
    "#00838f",
    "#9e9d24",
    "#4e342e",
    "#757575",
)


def _colour(apps: list[str], k: int) -> str:
    return _UNKNOWN_COLOUR if apps[k] == "unknown" else _COLOURS[k]


def csv_header() -> list[str]:
    return list(CSV_FIELDS)


def csv_row(rec: FlowRecord) -> list[str]:
    obj = rec.to_json()
    row = []
    for name in CSV_FIELDS:
        value = obj.get(name)
        if name in ("evidence", "longlink"):
            row.append(json.dumps(value if value is not None else [], ensure_ascii=False))
        elif value is None:
            row.append("")
        elif isinstance(value, bool):
            row.append("true" if value else "false")
        else:
            row.append(str(value))
    return row


def _when(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return f"{ts:.0f}"


def _label(rec: FlowRecord) -> str:
    return rec.verdict.label if rec.verdict.app else "unknown"


def _series(
    recs: Sequence[FlowRecord], buckets: int
) -> tuple[float, float, list[str], dict[str, list[float]]]:
    """(start, bucket width, apps by bytes, bytes per bucket per app)."""
    t0 = min(r.start for r in recs)
    t1 = max(r.end for r in recs)
    width = max((t1 - t0) / buckets, 1e-6)
    totals: dict[str, int] = {}
    for r in recs:
        totals[_label(r)] = totals.get(_label(r), 0) + r.bytes
    apps = sorted(totals, key=lambda a: (-totals[a], a))
    shown = apps[: len(_COLOURS) - 1]
    if len(apps) > len(shown):
        shown.append("other")
    series = {a: [0.0] * buckets for a in shown}
    for r in recs:
        name = _label(r) if _label(r) in series else "other"
        first = min(int((r.start - t0) / width), buckets - 1)
        last = min(int((r.end - t0) / width), buckets - 1)
        share = r.bytes / (last - first + 1)
        row = series[name]
        for b in range(first, last + 1):
            row[b] += share
    return t0, width, shown, series


def _chart(recs: Sequence[FlowRecord]) -> str:
    if not recs:
        return '<p class="empty">No flows.</p>'
    w, h, left, bottom, top = 900, 320, 70, 40, 10
    t0, width, apps, series = _series(recs, BUCKETS)
    peak = max(sum(series[a][b] for a in apps) for b in range(BUCKETS)) or 1.0
    bar = (w - left - 10) / BUCKETS
    parts = [
        f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h + 40}" '
        f'width="{w}" height="{h + 40}" role="img" aria-label="bytes by application over time">'
    ]
    for i in range(5):  # grid and y labels
        y = top + (h - top - bottom) * i / 4
        value = peak * (1 - i / 4)
        parts.append(f'<line x1="{left}" x2="{w - 10}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_size(value)}</text>'
        )
    for b in range(BUCKETS):
        y = float(h - bottom)
        for k, a in enumerate(apps):
            v = series[a][b]
            if v <= 0:
                continue
            bh = (h - top - bottom) * v / peak
            y -= bh
            parts.append(
                f'<rect x="{left + b * bar:.1f}" y="{y:.1f}" width="{max(bar - 1, 1):.1f}" '
                f'height="{bh:.1f}" fill="{_colour(apps, k)}" data-app="{html.escape(a)}">'
                f"<title>{html.escape(a)}: {_size(v)}</title></rect>"
            )
    for i in range(4):  # x labels
        t = t0 + width * BUCKETS * i / 3
        x = left + (w - left - 10) * i / 3
        anchor = "start" if i == 0 else "end" if i == 3 else "middle"
        parts.append(
            f'<text x="{x:.1f}" y="{h - bottom + 18}" text-anchor="{anchor}">'
            f"{html.escape(_when(t))} UTC</text>"
        )
    x = left
    for k, a in enumerate(apps):  # legend
        parts.append(
            f'<rect x="{x}" y="{h + 12}" width="12" height="12" fill="{_colour(apps, k)}"/>'
            f'<text x="{x + 16}" y="{h + 22}" class="legend">{html.escape(a)}</text>'
        )
        x += 24 + 8 * len(a)
    parts.append("</svg>")
    return "".join(parts)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px}
.meta{color:#555} svg text{font-size:11px;fill:#333} .grid{stroke:#e0e0e0}
table{border-collapse:collapse;font-size:12px} th,td{padding:3px 8px;border-bottom:1px solid #eee;
text-align:left;vertical-align:top} th{background:#f5f5f5;position:sticky;top:0}
td.t{white-space:nowrap} td.n{text-align:right;font-variant-numeric:tabular-nums}
.ev{color:#444;max-width:520px}
.app-unknown{color:#888} .spoofed{color:#c62828;font-weight:600}
"""


def render_report(name: str, recs: Sequence[FlowRecord], stats: Stats, max_rows: int) -> str:
    """The report as one HTML document."""
    by_app: dict[str, list[int]] = {}
    for r in recs:
        row = by_app.setdefault(_label(r), [0, 0, 0])
        row[0] += 1
        row[1] += r.packets
        row[2] += r.bytes
    summary = "".join(
        f'<tr><td>{html.escape(a)}</td><td class="n">{f}</td><td class="n">{p}</td>'
        f'<td class="n">{b}</td></tr>'
        for a, (f, p, b) in sorted(by_app.items(), key=lambda kv: (-kv[1][2], kv[0]))
    )
    ordered = sorted(recs, key=lambda r: (-r.bytes, r.start))
    rows = []
    for r in ordered[:max_rows]:
        v = r.verdict
        ev = "<br>".join(
            f"<b>{html.escape(e.kind)}</b>: {html.escape(e.detail)}" for e in v.evidence
        )
        cls = "spoofed" if v.spoofed else "app-unknown" if not v.app else ""
        rows.append(
            f'<tr class="flow"><td class="t">{html.escape(_when(r.start))}</td>'
            f"<td>{html.escape(r.client)}:{r.client_port}</td>"
            f"<td>{html.escape(r.server)}:{r.server_port}</td><td>{r.transport}</td>"
            f'<td class="{cls}">{html.escape(v.label)}</td><td class="ev">{ev or "-"}</td>'
            f'<td class="n">{r.duration:.3f}</td>'
            f'<td class="n">{r.client_packets}/{r.server_packets}</td>'
            f'<td class="n">{r.client_bytes}/{r.server_bytes}</td></tr>'
        )
    more = (
        f'<p class="meta">{len(ordered) - max_rows} smaller flows not listed.</p>'
        if len(ordered) > max_rows
        else ""
    )
    span = ""
    if stats.first_ts is not None:
        span = f"{_when(stats.first_ts)} to {_when(stats.last_ts)} UTC; "
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>wxnet analyze: {html.escape(name)}</title><style>{_CSS}</style></head><body>"
        f"<h1>wxnet analyze: {html.escape(name)}</h1>"
        f'<p class="meta">{span}{stats.packets} packets, {stats.flows} flows, '
        f"{stats.dns_answers} DNS answers learned, {stats.malformed} malformed.</p>"
        f"<h2>Traffic by application over time</h2>{_chart(recs)}"
        '<h2>Summary by application</h2><table id="summary"><tr><th>app</th>'
        "<th>flows</th><th>packets</th><th>bytes</th></tr>"
        f"{summary}</table>"
        '<h2>Flows (largest first)</h2><table id="flows"><tr><th>start (UTC)</th>'
        "<th>client</th><th>server</th><th>proto</th><th>app</th><th>evidence</th>"
        "<th>duration s</th><th>packets c&gt;s/s&gt;c</th><th>bytes c&gt;s/s&gt;c</th></tr>"
        f"{''.join(rows)}</table>{more}</body></html>\n"
    )


def write_report(
    path: Path, name: str, recs: Sequence[FlowRecord], stats: Stats, max_rows: int = REPORT_ROWS
) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_report(name, recs, stats, max_rows), encoding="utf-8")
    tmp.replace(path)
