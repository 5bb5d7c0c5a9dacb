"""``wxnet analyze`` output for analysts: --csv (the --json fields), per-flow duration and
each direction's packets and bytes, --top N, and --report FILE.html in headless Chromium."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from playwright.async_api import Browser

from wxnet.analyze.output import CSV_FIELDS
from wxnet.cli.common import IO
from wxnet.cli.main import run

CAPTURES = Path(__file__).parent.parent / "data" / "captures"
QUICKPLAY = str(CAPTURES / "quickplay.pcap")


def call(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), IO(out, err))
    return code, out.getvalue(), err.getvalue()


def _json_flows(*extra: str) -> list[dict[str, object]]:
    code, out, _ = call("analyze", "--json", *extra, QUICKPLAY)
    assert code == 0
    return [json.loads(line) for line in out.splitlines()]


def test_csv_has_the_json_fields_and_values() -> None:
    flows = _json_flows()
    code, out, _ = call("analyze", "--csv", QUICKPLAY)
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == list(CSV_FIELDS)
    assert set(CSV_FIELDS) == set(flows[0]) | {"longlink"}
    assert len(rows) == len(flows) == 21
    for row, flow in zip(rows, flows, strict=True):
        assert json.loads(row["evidence"]) == flow["evidence"]
        for key in ("client", "server", "transport", "label"):
            assert row[key] == flow[key]
        for key in ("client_port", "packets", "bytes", "client_bytes", "server_packets"):
            assert int(row[key]) == flow[key]
        assert float(row["duration"]) == flow["duration"]
        assert row["app"] == (flow["app"] or "")
        assert row["confirmed"] == ("true" if flow["confirmed"] else "false")


def test_duration_and_both_directions() -> None:
    for f in _json_flows():
        assert f["duration"] == round(float(f["end"]) - float(f["start"]), 6)  # type: ignore[arg-type]
        assert f["packets"] == f["client_packets"] + f["server_packets"]  # type: ignore[operator]
        assert f["bytes"] == f["client_bytes"] + f["server_bytes"]  # type: ignore[operator]
    code, out, _ = call("analyze", QUICKPLAY)
    assert code == 0 and "duration s" in out and "packets c>s/s>c" in out
    assert "65 (35/30)" in out and "45902 (17902/28000)" in out  # nDPI: 35/30 packets too


def test_top_n_by_bytes() -> None:
    flows = _json_flows()
    top = _json_flows("--top", "3")
    want = sorted(flows, key=lambda f: -int(f["bytes"]))[:3]  # type: ignore[call-overload]
    assert top == want
    code, out, _ = call("analyze", "--top", "2", QUICKPLAY)
    assert code == 0
    table = out[: out.index("Summary by application")]
    assert table.count("10.54.169.250:") == 2 and table.index("45902") < table.index("19606")
    code, _, _ = call("analyze", "--top", "0", QUICKPLAY)
    assert code == 2


async def test_html_report_in_chromium(browser: Browser, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    code, out, _ = call("analyze", "--summary", "--report", str(report), QUICKPLAY)
    assert code == 0 and report.exists() and "Summary by application" in out
    page = await browser.new_page(viewport={"width": 1100, "height": 900})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    await page.goto(report.as_uri())
    assert requests == [report.as_uri()]  # self-contained: nothing else is fetched
    assert await page.title() == "wxnet analyze: quickplay.pcap"
    chart = page.locator("svg#chart")
    assert await chart.is_visible()
    box = await chart.bounding_box()
    assert box is not None and box["width"] > 600 and box["height"] > 200
    apps = set(
        await page.eval_on_selector_all(
            "svg#chart rect[data-app]", "e => e.map(x => x.dataset.app)"
        )
    )
    assert {"WeChat", "unknown", "Android connectivity check"} <= apps
    legend = await page.eval_on_selector_all(
        "svg#chart text.legend", "e => e.map(x => x.textContent)"
    )
    assert legend[:2] == ["unknown", "WeChat"]  # by bytes
    rows = page.locator("table#flows tr.flow")
    assert await rows.count() == 21
    first = await rows.nth(0).inner_text()
    assert "120.28.35.40:80" in first and "45902" not in first and "17902/28000" in first
    wechat = page.locator("table#flows tr.flow", has_text="WeChat")
    assert await wechat.count() == 5
    assert "micromsg-bin" in await wechat.nth(0).inner_text()
    summary = await page.locator("table#summary").inner_text()
    assert "WeChat\t5\t12\t4781" in summary
    await page.screenshot(path=str(tmp_path / "report.png"), full_page=False)
    assert (tmp_path / "report.png").stat().st_size > 10_000
    await page.close()


def test_report_table_cap_and_unwritable_path(tmp_path: Path) -> None:
    report = tmp_path / "r.html"
    code, _, _ = call(
        "analyze", "--summary", "--report", str(report), "--report-rows", "4", QUICKPLAY
    )
    text = report.read_text()
    assert (
        code == 0 and text.count('<tr class="flow">') == 4 and "17 smaller flows not listed" in text
    )
    code, _, err = call(
        "analyze", "--summary", "--report", str(tmp_path / "no" / "r.html"), QUICKPLAY
    )
    assert "cannot write" in err
