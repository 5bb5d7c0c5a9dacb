"""The dashboard page: charts as inline SVG drawn from flow records (pure, no CDN)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from wxnet.gate.records import FlowRecord

__all__ = ["render_dashboard", "summary"]

_COLOURS = ("#2a9d8f", "#e76f51", "#264653", "#e9c46a", "#8ab17d", "#6d597a", "#f4a261")
W, H, PAD = 640, 220, 40


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def summary(records: Iterable[FlowRecord], now: float, buckets: int = 24) -> dict[str, object]:
    """Aggregates the page (and ``/api/summary``) shows."""
    recs = list(records)
    start = min((r.time for r in recs), default=now - 3600)
    span = max(60.0, now - start)
    width = span / buckets
    per_app: dict[str, list[int]] = {}
    per_device: dict[str, int] = {}
    per_device_time: dict[str, list[int]] = {}
    blocks = [0] * buckets
    blocked: dict[tuple[str, str, str], int] = {}
    for r in recs:
        i = min(buckets - 1, max(0, int((r.time - start) / width)))
        label = r.label or "unknown"
        if r.verdict == "allow":
            per_app.setdefault(label, [0] * buckets)[i] += r.bytes_up + r.bytes_down
            per_device[r.device] = per_device.get(r.device, 0) + r.bytes_up + r.bytes_down
            per_device_time.setdefault(r.device, [0] * buckets)[i] += r.bytes_up + r.bytes_down
        else:
            blocks[i] += 1
            what = r.name or f"{r.server}:{r.server_port}"
            key = (r.device, label, what)
            blocked[key] = blocked.get(key, 0) + 1
    return {
        "start": start,
        "bucket_seconds": width,
        "traffic_per_app": per_app,
        "traffic_per_device": per_device,
        "traffic_per_device_over_time": per_device_time,
        "blocks": blocks,
        "blocked": sorted(((*k, n) for k, n in blocked.items()), key=lambda x: -x[3])[:20],
    }


def _lines(series: dict[str, list[int]], title: str, chart_id: str = "chart-apps") -> str:
    top = max((v for s in series.values() for v in s), default=0) or 1
    n = max((len(s) for s in series.values()), default=1)
    step = (W - 2 * PAD) / max(1, n - 1)
    parts = [
        f'<svg class="chart" id="{chart_id}" viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="{_e(title)}">',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#999"/>',
        f'<text x="{PAD}" y="14" font-size="12">{_e(title)} (max {top} bytes per bucket)</text>',
    ]
    for k, (label, values) in enumerate(sorted(series.items())):
        colour = _COLOURS[k % len(_COLOURS)]
        pts = " ".join(
            f"{PAD + i * step:.1f},{H - PAD - (v / top) * (H - 2 * PAD):.1f}"
            for i, v in enumerate(values)
        )
        parts.append(
            f'<polyline class="series" data-label="{_e(label)}" fill="none" '
            f'stroke="{colour}" stroke-width="2" points="{pts}"/>'
        )
        parts.append(
            f'<text x="{W - PAD + 4 - 120}" y="{30 + 14 * k}" font-size="11" '
            f'fill="{colour}">{_e(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _bars(values: Sequence[tuple[str, int]], title: str, chart_id: str, colour: str) -> str:
    top = max((v for _, v in values), default=0) or 1
    n = max(1, len(values))
    bw = (W - 2 * PAD) / n
    parts = [
        f'<svg class="chart" id="{chart_id}" viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="{_e(title)}">',
        f'<text x="{PAD}" y="14" font-size="12">{_e(title)}</text>',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#999"/>',
    ]
    for i, (label, v) in enumerate(values):
        h = (v / top) * (H - 2 * PAD)
        x = PAD + i * bw
        parts.append(
            f'<rect class="bar" data-label="{_e(label)}" data-value="{v}" x="{x + 2:.1f}" '
            f'y="{H - PAD - h:.1f}" width="{max(1.0, bw - 4):.1f}" height="{h:.1f}" '
            f'fill="{colour}"><title>{_e(label)}: {v}</title></rect>'
        )
        if n <= 12:
            parts.append(
                f'<text x="{x + bw / 2:.1f}" y="{H - PAD + 14}" font-size="10" '
                f'text-anchor="middle">{_e(label)[:16]}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def render_dashboard(records: Iterable[FlowRecord], now: float, table: str) -> str:
    s = summary(records, now)
    per_app = s["traffic_per_app"]
    per_device = s["traffic_per_device"]
    per_device_time = s["traffic_per_device_over_time"]
    blocks = s["blocks"]
    blocked = s["blocked"]
    start = float(s["start"])  # type: ignore[arg-type]
    width = float(s["bucket_seconds"])  # type: ignore[arg-type]
    assert isinstance(per_app, dict) and isinstance(per_device, dict)
    assert isinstance(per_device_time, dict)
    assert isinstance(blocks, list) and isinstance(blocked, list)
    block_bars = [
        (datetime.fromtimestamp(start + i * width, UTC).strftime("%H:%M"), int(v))
        for i, v in enumerate(blocks)
    ]
    rows = "".join(
        f"<tr><td>{_e(d)}</td><td>{_e(a)}</td><td>{_e(w)}</td><td>{n}</td></tr>"
        for d, a, w, n in blocked
    )
    stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>wxnet gate</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
.chart {{ width: 100%; max-width: {W}px; border: 1px solid #ddd; margin: 0.5em 0; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 2px 8px; }}
</style></head>
<body>
<h1>wxnet gate <small>table inet {_e(table)}</small></h1>
<p id="stamp">Updated {stamp} UTC. <a href="/metrics">/metrics</a></p>
<h2>Traffic per app over time</h2>
{_lines(per_app, "bytes per app")}
<h2>Traffic per device over time</h2>
{_lines(per_device_time, "bytes per device", "chart-device-time")}
<h2>Traffic per device</h2>
{_bars(sorted(per_device.items()), "bytes per device", "chart-devices", "#264653")}
<h2>Blocked attempts over time</h2>
{_bars(block_bars, "blocked flows and queries", "chart-blocks", "#e76f51")}
<h2>Blocked attempts</h2>
<table id="blocked"><tr><th>device</th><th>app</th><th>name or address</th><th>count</th></tr>
{rows}</table>
<script>
setTimeout(function () {{ window.location.reload(); }}, 15000);
</script>
</body></html>
"""
