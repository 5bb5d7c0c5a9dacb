from __future__ import annotations

import pytest

from wxnet.gate.dashboard import render_dashboard, summary
from wxnet.gate.metrics import Metrics
from wxnet.gate.records import FlowRecord


def rec(
    t: float, device: str, label: str, verdict: str, n: int, name: str | None = None
) -> FlowRecord:
    return FlowRecord(
        time=t, device=device, group="g", transport="tcp", client="10.0.0.2", client_port=1,
        server="203.0.113.1", server_port=80, app=label.lower(), label=label, evidence=(),
        verdict=verdict, path="dns" if name else "inspector", bytes_up=n, bytes_down=0, name=name,
    )  # fmt: skip


RECS = [
    rec(0, "alice", "WeChat", "allow", 100),
    rec(1800, "alice", "WeChat", "allow", 300),
    rec(1800, "bob", "QQ", "allow", 50),
    rec(3500, "bob", "unknown", "block", 0, name="video.example"),
    rec(3550, "bob", "unknown", "block", 0, name="video.example"),
]


def test_summary_buckets_traffic_and_blocks() -> None:
    s = summary(RECS, now=3600, buckets=4)
    assert s["traffic_per_app"] == {"WeChat": [100, 0, 300, 0], "QQ": [0, 0, 50, 0]}
    assert s["traffic_per_device"] == {"alice": 400, "bob": 50}
    assert s["traffic_per_device_over_time"] == {"alice": [100, 0, 300, 0], "bob": [0, 0, 50, 0]}
    assert s["blocks"] == [0, 0, 0, 2]
    assert s["blocked"] == [("bob", "unknown", "video.example", 2)]


def test_page_has_charts_and_escapes_labels() -> None:
    evil = rec(10, "<script>x</script>", 'Evil"app', "allow", 5)
    page = render_dashboard([*RECS, evil], now=3600, table="wxnet")
    assert page.count("<svg") == 4
    assert 'data-label="WeChat"' in page and 'data-label="alice" data-value="400"' in page
    assert "<script>x</script>" not in page and "&lt;script&gt;" in page
    assert "cdn" not in page.lower() and "http://" not in page and "https://" not in page


def test_metrics_exposition() -> None:
    m = Metrics()
    for r in RECS:
        m.flow(r)
    m.inc("wxnet_gate_dns_queries_total", labels={"verdict": "block"})
    text = m.render()
    assert "# TYPE wxnet_gate_flows_total counter" in text
    assert (
        'wxnet_gate_flows_total{app="wechat",device="alice",path="inspector",verdict="allow"} 2'
        in text
    )
    assert 'wxnet_gate_bytes_total{app="wechat",device="alice"} 400' in text
    assert 'wxnet_gate_dns_queries_total{verdict="block"} 1' in text
    assert "wxnet_gate_active_groups 0" in text


def test_metrics_are_the_librarys_exposition_with_escaped_labels() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    m = Metrics()
    m.inc("wxnet_gate_bytes_total", 5, labels={"app": 'we"chat\\', "device": "a\nb"})
    m.set("wxnet_gate_active_groups", 2)
    m.counter_fn("wxnet_gate_newgetdns_addresses_total", lambda: 7)
    families = {f.name: f for f in text_string_to_metric_families(m.render())}
    (sample,) = families["wxnet_gate_bytes"].samples
    assert sample.labels == {"app": 'we"chat\\', "device": "a\nb"} and sample.value == 5
    assert families["wxnet_gate_active_groups"].samples[0].value == 2
    assert families["wxnet_gate_newgetdns_addresses"].samples[0].value == 7
    assert m.counts(gauges=False) == {
        ("wxnet_gate_bytes_total", (("app", 'we"chat\\'), ("device", "a\nb"))): 5
    }
    with pytest.raises(KeyError):
        m.inc("wxnet_gate_bytes_total", labels={"app": "x"})  # a label missing
