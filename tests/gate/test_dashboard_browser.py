"""The dashboard in headless Chromium (Debian chromium, driven by Playwright)."""

from __future__ import annotations

import os
import time

import pytest
from playwright.async_api import Browser

from tests.browser import CHROMIUM
from wxnet.classify import Classifier
from wxnet.gate.apps import app_catalog
from wxnet.gate.policy import parse_policy
from wxnet.gate.records import FlowRecord
from wxnet.gate.service import GateService
from wxnet.gate.web import start_web

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="needs Debian chromium (make sysdeps installs it)"
)

POLICY = """\
[gate]
lan = ["lan0"]
upstreams = ["192.0.2.53"]

[groups.staff]
mode = "allow-only"
apps = ["wechat"]
"""


def rec(t: float, device: str, app: str | None, label: str, verdict: str, n: int) -> FlowRecord:
    return FlowRecord(
        time=t, device=device, group="staff", transport="tcp", client="10.0.0.2",
        client_port=40000, server="203.0.113.9", server_port=8080, app=app, label=label,
        evidence=(), verdict=verdict, path="inspector", bytes_up=n, bytes_down=n,
        name="video.example" if verdict == "block" else None,
    )  # fmt: skip


async def test_dashboard_draws_charts_without_external_requests(browser: Browser) -> None:
    classifier = Classifier()
    policy = parse_policy(POLICY, app_catalog(classifier.apps()))
    now = time.time()
    service = GateService(policy, classifier, clock=lambda: now)
    for i in range(12):
        service.sink(rec(now - 3600 + i * 300, "alice", "wechat", "WeChat", "allow", 1000 + i))
        service.sink(rec(now - 3000 + i * 200, "bob", None, "unknown", "block", 0))
    service.sink(rec(now - 100, "bob", "qq", "QQ", "allow", 5000))
    runner, port = await start_web(service, "127.0.0.1:0")
    requests: list[str] = []
    errors: list[str] = []
    try:
        page = await browser.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
        assert await page.title() == "wxnet gate"
        charts = page.locator("svg.chart")
        assert await charts.count() == 4
        for i in range(4):
            box = await charts.nth(i).bounding_box()
            assert box is not None and box["width"] > 200 and box["height"] > 50
        labels = await page.locator("#chart-apps polyline").evaluate_all(
            "els => els.map(e => e.dataset.label)"
        )
        assert sorted(labels) == ["QQ", "WeChat"]
        devices = await page.locator("#chart-device-time polyline").evaluate_all(
            "els => els.map(e => e.dataset.label)"
        )
        assert sorted(devices) == ["alice", "bob"]
        heights = await page.locator("#chart-devices rect.bar").evaluate_all(
            "els => els.map(e => [e.dataset.label, e.getBBox().height])"
        )
        assert [h[0] for h in heights] == ["alice", "bob"]
        assert all(h[1] > 0 for h in heights)
        blocks = await page.locator("#chart-blocks rect.bar").evaluate_all(
            "els => els.reduce((s, e) => s + Number(e.dataset.value), 0)"
        )
        assert blocks == 12
        assert "video.example" in await page.locator("#blocked").inner_text()
        metrics = await page.request.get(f"http://127.0.0.1:{port}/metrics")
        assert 'wxnet_gate_flows_total{app="qq",device="bob"' in await metrics.text()
    finally:
        await runner.cleanup()
    assert errors == []
    assert all(u.startswith(f"http://127.0.0.1:{port}/") for u in requests), requests
