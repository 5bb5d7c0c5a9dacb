from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from tests.lab.synthetic import dead, ok, seed_like
from wxnet.lab.expectations import evaluate
from wxnet.lab.report import Report, render_json, render_markdown, render_svg, render_table
from wxnet.lab.results import CaseResult, Link, Outcome, ResultError, Source

SVG = "{http://www.w3.org/2000/svg}"


def make(results: list[CaseResult]) -> Report:
    return Report(tuple(results), tuple(evaluate(results)), (("run", "test"),))


def test_table_lists_cases_and_failed_checks() -> None:
    results = [*seed_like(), ok("tcp80", Source.DNS, Link.SHORT, 80)]
    text = render_table(make(results))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["case", "outcome", "path"]
    assert any(line.startswith("tcp80+tcp8080") and "dns -> extra:14000" in line for line in lines)
    assert "FAIL S12" in text
    assert "S12 tcp80: took dns -> short:80, expected long:8080" in text


def test_markdown_has_one_row_per_case_and_check() -> None:
    report = make(seed_like())
    md = render_markdown(report)
    assert md.count("\n| none |") == 1
    assert md.count("| pass |") == len(report.checks)
    assert "- run: test" in md


def test_json_round_trips_results() -> None:
    report = make([*seed_like(), CaseResult("dns+tcp80+alltcp", (), Outcome.TIMEOUT)])
    doc = json.loads(render_json(report))
    assert doc["passed"] is False  # the timeout case fails S13 (no poor-network report)
    back = tuple(CaseResult.from_json(r) for r in doc["results"])
    assert back == report.results


@pytest.mark.parametrize(
    "bad",
    [[], {"case": "none"}, {"case": "none", "faults": [], "outcome": "great"},
     {"case": "none", "faults": [], "outcome": "worked", "colour": 1},
     {"case": "none", "faults": [], "outcome": "worked", "link": "pigeon"}],
)  # fmt: skip
def test_bad_json_results_raise(bad: object) -> None:
    with pytest.raises(ResultError):
        CaseResult.from_json(bad)


def test_svg_is_well_formed_and_draws_every_case() -> None:
    results = [*seed_like(), dead("dns+tcp80+tcp8080+alltcp"), dead("tcp14000", poor=False)]
    svg = render_svg(make(results))
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    titles = [t.text or "" for t in root.iter(f"{SVG}title")]
    assert sorted(t.split(":")[0] for t in titles) == sorted(r.case for r in results)
    # a failed expectation is framed in black and marked
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert any(t.startswith("✘") for t in texts)
    assert "other cases" in texts  # the four-fault case is below the grid
    # 16 cells (none, 5 singles, 10 pairs), 6 of them run
    assert texts.count("not run") == 16 - 6


def test_markdown_shows_the_log_of_failing_cases() -> None:
    from dataclasses import replace

    good = replace(ok("none", Source.DNS, Link.LONG, 8080), events=("0.1s all fine",))
    bad = replace(ok("tcp80", Source.DNS, Link.SHORT, 80), events=("0.2s took the short link",))
    md = render_markdown(make([good, bad]))
    assert "### tcp80" in md and "0.2s took the short link" in md
    assert "all fine" not in md
