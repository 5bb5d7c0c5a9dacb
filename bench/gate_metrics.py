"""The gateway's per-query metric updates three ways, in the same run: plain dict
counters (what the gateway kept before), the library's labelled ``Counter`` children
(``prometheus_client`` on the hot path), and :mod:`wxnet.gate.metrics` as it is (dict
values exported through a ``prometheus_client`` collector at scrape time).

    .venv/bin/python -m bench.gate_metrics [--rounds 11] [--queries 100000]

Per DNS query the gateway bumps two counters by key and counts one flow record; this
times exactly that, alternating the two implementations, and prints the median
microseconds per query and the added cost.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import prometheus_client

from wxnet.gate.metrics import MetricKey, Metrics
from wxnet.gate.records import FlowRecord


class DictMetrics:
    """The baseline: counters in a dict keyed by (name, sorted labels)."""

    def __init__(self) -> None:
        self._values: dict[MetricKey, float] = {}
        self._flow: dict[tuple[str, str, str, str], MetricKey] = {}

    def add(self, key: MetricKey, by: float = 1) -> None:
        self._values[key] = self._values.get(key, 0) + by

    def flow(self, rec: FlowRecord) -> None:
        app = rec.app or "unknown"
        kind = (app, rec.verdict, rec.path, rec.device)
        key = self._flow.get(kind)
        if key is None:
            labels = {"app": app, "verdict": rec.verdict, "path": rec.path, "device": rec.device}
            key = self._flow[kind] = ("wxnet_gate_flows_total", tuple(sorted(labels.items())))
        self._values[key] = self._values.get(key, 0) + 1


class LibraryCounters:
    """``prometheus_client.Counter`` children, looked up once per key, ``inc()`` per query."""

    def __init__(self) -> None:
        reg = prometheus_client.CollectorRegistry()
        self.queries = prometheus_client.Counter("q", "q", ["verdict"], registry=reg)
        self.answers = prometheus_client.Counter("a", "a", ["process"], registry=reg)
        self.flows = prometheus_client.Counter(
            "f", "f", ["app", "device", "path", "verdict"], registry=reg
        )
        self._children: dict[object, prometheus_client.Counter] = {}

    def add(self, key: MetricKey, by: float = 1) -> None:
        child = self._children.get(key)
        if child is None:
            metric = self.queries if key[0] == "wxnet_gate_dns_queries_total" else self.answers
            child = self._children[key] = metric.labels(*(v for _k, v in key[1]))
        child.inc(by)

    def flow(self, rec: FlowRecord) -> None:
        app = rec.app or "unknown"
        kind = (app, rec.verdict, rec.path, rec.device)
        child = self._children.get(kind)
        if child is None:
            child = self._children[kind] = self.flows.labels(app, rec.device, rec.path, rec.verdict)
        child.inc()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--queries", type=int, default=100_000)
    args = ap.parse_args()
    allowed = Metrics.key("wxnet_gate_dns_queries_total", {"verdict": "allow"})
    here = Metrics.key("wxnet_gate_dns_process_answers_total", {"process": "0"})
    recs = [
        FlowRecord(
            time=0.0,
            device=f"phone{i % 8}",
            group="kids",
            transport="udp",
            client="192.168.1.10",
            client_port=5353,
            server="gateway",
            server_port=53,
            app=("wechat", "qq", None)[i % 3],
            label="x",
            evidence=(),
            verdict="allow",
            path="dns",
        )
        for i in range(64)
    ]
    impls: dict[str, Metrics | DictMetrics | LibraryCounters] = {
        "dict (before)": DictMetrics(),
        "library Counter": LibraryCounters(),
        "wxnet.gate.metrics": Metrics(),
    }
    times: dict[str, list[float]] = {k: [] for k in impls}
    n = args.queries
    for _ in range(args.rounds):
        for name, m in impls.items():
            t0 = time.perf_counter()
            for i in range(n):
                m.add(allowed)
                m.add(here)
                m.flow(recs[i & 63])
            times[name].append((time.perf_counter() - t0) / n * 1e6)
    base = statistics.median(times["dict (before)"])
    print(f"load average {os.getloadavg()[0]:.1f}; {args.rounds} rounds of {n} queries")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:18s} {med:6.2f} us per query  (+{med - base:.2f} us, {med / base:.1f} x)")


if __name__ == "__main__":
    main()
