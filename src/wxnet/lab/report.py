"""The lab's report: a terminal table, Markdown, JSON and an SVG picture. Pure code.

The picture is the fault matrix the seed walked through by hand (S7): one row and one
column per single fault, each cell the case with both faults (the diagonal: the single
fault alone; top-left: no fault), coloured by outcome and path, with a mark for the
expectations that failed. Cases that do not fit the grid (three faults or more) are drawn
in a strip below it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from xml.sax.saxutils import escape

from wxnet.lab.expectations import Check
from wxnet.lab.faults import FAULTS, parse_case
from wxnet.lab.results import CaseResult, Link, Outcome

__all__ = ["Report", "render_json", "render_markdown", "render_svg", "render_table"]

_COLUMNS = ("case", "outcome", "path", "first msg", "sent/acked", "recv", "lost", "dup",
            "image", "poor net", "checks")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Report:
    """Results and the checks made over them."""

    results: tuple[CaseResult, ...]
    checks: tuple[Check, ...]
    meta: tuple[tuple[str, str], ...] = ()

    @property
    def failed_checks(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def checks_for(self, case: str) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.case == case)


def _row(r: CaseResult, report: Report) -> tuple[str, ...]:
    checks = report.checks_for(r.case)
    failed = [c.claim for c in checks if not c.passed]
    verdict = ("FAIL " + ",".join(failed)) if failed else f"ok ({len(checks)})"
    first = "-" if r.first_delivery_s is None else f"{r.first_delivery_s:.2f}s"
    return (
        r.case,
        str(r.outcome),
        r.path,
        first,
        f"{r.sent}/{r.acked}",
        f"{r.received}/{r.peer_sent}",
        str(r.lost),
        str(r.duplicated),
        "yes" if r.image_ok else "no",
        "yes" if r.network_poor else "no",
        verdict,
    )


def render_table(report: Report) -> str:
    """A fixed-width table for the terminal, then one line per failed check."""
    rows = [_COLUMNS] + [_row(r, report) for r in report.results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    failed = report.failed_checks
    lines.append("")
    lines.append(
        f"{len(report.checks) - len(failed)}/{len(report.checks)} expectations hold"
        + ("" if not failed else "; failed:")
    )
    lines += [f"  {c.claim} {c.case}: {c.detail}" for c in failed]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _md(cell: str) -> str:
    return cell.replace("|", "\\|")


def render_markdown(report: Report) -> str:
    out = ["# wxnet lab report", ""]
    for key, value in report.meta:
        out.append(f"- {key}: {value}")
    if report.meta:
        out.append("")
    out.append("| " + " | ".join(_COLUMNS) + " |")
    out.append("|" + "---|" * len(_COLUMNS))
    for r in report.results:
        out.append("| " + " | ".join(_md(c) for c in _row(r, report)) + " |")
    out += ["", "## Expectations (S9, S12, S13, S14; S16/S19: nothing lost or duplicated)", ""]
    out.append("| claim | case | result | detail |")
    out.append("|---|---|---|---|")
    for c in report.checks:
        mark = "pass" if c.passed else "**FAIL**"
        out.append(f"| {c.claim} | {_md(c.case)} | {mark} | {_md(c.detail)} |")
    details = [r for r in report.results if r.detail]
    if details:
        out += ["", "## Case details", ""]
        out += [f"- `{r.case}`: {r.detail}" for r in details]
    failed_cases = {c.case for c in report.failed_checks}
    logged = [r for r in report.results if r.events and r.case in failed_cases]
    if logged:
        out += ["", "## The client's log of each case with a failed expectation", ""]
        for r in logged:
            out += [f"### {r.case}", "", "```", *r.events, "```", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def render_json(report: Report) -> str:
    doc = {
        "meta": dict(report.meta),
        "results": [r.to_json() for r in report.results],
        "checks": [
            {"claim": c.claim, "case": c.case, "passed": c.passed, "detail": c.detail}
            for c in report.checks
        ],
        "passed": not report.failed_checks,
    }
    return json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


# -- SVG ---------------------------------------------------------------------------------

_CELL_W, _CELL_H, _HEAD_W, _HEAD_H, _PAD = 132, 64, 120, 44, 16
_FILL = {
    (Outcome.WORKED, Link.LONG): "#2e9d4f",
    (Outcome.WORKED, Link.SHORT): "#8cc65a",
    (Outcome.WORKED, Link.EXTRA): "#3f8fd2",
    Outcome.PARTIAL: "#f0b429",
    Outcome.FAILED: "#d64545",
    Outcome.TIMEOUT: "#a83279",
    Outcome.ERROR: "#7b7b7b",
}
_LEGEND = (
    ("#2e9d4f", "worked: long link 8080"),
    ("#8cc65a", "worked: short link 80"),
    ("#3f8fd2", "worked: extra port 14000"),
    ("#f0b429", "partial"),
    ("#d64545", "failed"),
    ("#a83279", "timeout"),
    ("#7b7b7b", "lab error"),
)


def _fill(r: CaseResult) -> str:
    if r.outcome is Outcome.WORKED:
        return _FILL.get((r.outcome, r.link or Link.LONG), "#2e9d4f")
    return _FILL[r.outcome]


def _text(x: float, y: float, s: str, size: int = 11, weight: str = "normal",
          fill: str = "#111", anchor: str = "middle") -> str:  # fmt: skip
    return (
        f'<text x="{x:.0f}" y="{y:.0f}" font-size="{size}" font-weight="{weight}" '
        f'fill="{fill}" text-anchor="{anchor}">{escape(s)}</text>'
    )


def _cell(x: float, y: float, r: CaseResult | None, report: Report, label: str = "") -> str:
    if r is None:
        return (
            f'<rect x="{x}" y="{y}" width="{_CELL_W - 4}" height="{_CELL_H - 4}" rx="6" '
            'fill="#f3f3f3" stroke="#ddd"/>'
            + _text(x + _CELL_W / 2 - 2, y + 34, "not run", fill="#999")
        )
    failed = [c.claim for c in report.checks_for(r.case) if not c.passed]
    cx = x + _CELL_W / 2 - 2
    parts = [
        f"<g><title>{escape(r.case)}: {escape(str(r.outcome))} {escape(r.path)}"
        f"{escape(' ' + r.detail) if r.detail else ''}</title>",
        f'<rect x="{x}" y="{y}" width="{_CELL_W - 4}" height="{_CELL_H - 4}" rx="6" '
        f'fill="{_fill(r)}" stroke="{"#000" if failed else "none"}" '
        f'stroke-width="{3 if failed else 0}"/>',
    ]
    if label:
        parts.append(_text(cx, y + 14, label, 10, fill="#fff"))
    parts.append(_text(cx, y + 29, str(r.outcome), 12, "bold", "#fff"))
    sub = r.path if r.link else ("network poor" if r.network_poor else "-")
    parts.append(_text(cx, y + 43, sub, 10, fill="#fff"))
    mark = ("✘ " + ",".join(failed)) if failed else "✔"
    if r.first_delivery_s is not None:
        mark += f"  first msg {r.first_delivery_s:.2f}s"
    parts.append(_text(cx, y + 56, mark, 10, "bold", "#fff"))
    parts.append("</g>")
    return "".join(parts)


def render_svg(report: Report) -> str:
    """The matrix picture (see the module docstring) as a standalone SVG document."""
    axis = ["none", *FAULTS]
    by_key: dict[frozenset[str], CaseResult] = {}
    extra: list[CaseResult] = []
    for r in report.results:
        names = parse_case(r.case).names
        if len(names) <= 2:
            by_key[names] = r
        else:
            extra.append(r)
    n = len(axis)
    extra_rows = (len(extra) + n - 1) // n
    width = _PAD * 2 + _HEAD_W + n * _CELL_W
    grid_h = _HEAD_H + n * _CELL_H
    legend_y = _PAD + 30 + grid_h + (extra_rows * _CELL_H + 30 if extra else 0) + 10
    height = legend_y + 20 * ((len(_LEGEND) + 3) // 4) + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, sans-serif">',
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
        _text(_PAD, _PAD + 12, "wxnet lab: fault matrix (S7)", 16, "bold", anchor="start"),
    ]
    failed = len(report.failed_checks)
    summary = f"{len(report.checks) - failed}/{len(report.checks)} expectations hold"
    out.append(_text(width - _PAD, _PAD + 12, summary, 12, "bold",
                     "#b00" if failed else "#176b2c", "end"))  # fmt: skip
    top = _PAD + 30
    left = _PAD + _HEAD_W
    for i, name in enumerate(axis):
        out.append(_text(left + i * _CELL_W + _CELL_W / 2, top + 26, name, 12, "bold"))
        out.append(_text(_PAD + _HEAD_W - 10, top + _HEAD_H + i * _CELL_H + 34, name, 12,
                         "bold", anchor="end"))  # fmt: skip
    for i, row in enumerate(axis):
        for j, col in enumerate(axis):
            if j < i or (i == 0 and j > 0):
                continue  # each pair once; the "none" row would repeat the diagonal
            key = frozenset({row, col} - {"none"})
            x, y = left + j * _CELL_W, top + _HEAD_H + i * _CELL_H
            out.append(_cell(x, y, by_key.get(key), report))
    if extra:
        y0 = top + grid_h + 20
        out.append(_text(_PAD, y0, "other cases", 12, "bold", anchor="start"))
        for k, r in enumerate(extra):
            x = left + (k % n) * _CELL_W
            y = y0 + 10 + (k // n) * _CELL_H
            out.append(_cell(x, y, r, report, label=r.case))
    for k, (color, label) in enumerate(_LEGEND):
        x = _PAD + (k % 4) * ((width - 2 * _PAD) // 4)
        y = legend_y + (k // 4) * 20
        out.append(f'<rect x="{x:.0f}" y="{y}" width="14" height="14" rx="3" fill="{color}"/>')
        out.append(_text(x + 20, y + 11, label, 11, anchor="start"))
    note = "black frame / ✘: an expectation failed (hover a cell for details)"
    out.append(_text(_PAD, height - 14, note, 11, fill="#444", anchor="start"))
    out.append("</svg>")
    return "\n".join(out) + "\n"
