"""The gateway's Prometheus metrics, on ``prometheus_client`` (as the server's,
:mod:`wxnet.server.metrics`): one registry per gateway, the metric families, label
escaping and the text exposition format are the library's (``generate_latest``).

The values live in a dict keyed by (name, sorted labels) and reach the library through
a custom collector at each scrape, the library's documented way for values kept
elsewhere. Not the library's ``Counter`` objects: the gateway bumps two counters and
counts one flow per DNS query, and a labelled child's ``inc()`` (a lock per call) made
that 2.7 x dearer, +3.5 us on a path of about 45 us per forwarded query
(``docs/benchmarks.md``, "Gate metrics"). The service code's interface:
``inc(name, by, labels)``, ``set(name, value)`` for gauges, and for the per-query path
``key(name, labels)`` once plus ``add(key)`` per query. Values kept elsewhere (the
inspector's) are read at each scrape (:meth:`Metrics.counter_fn`,
:meth:`Metrics.gauge_fn`). The names are those of ``docs/gateway.md`` ("Metrics").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from wxnet.gate.records import FlowRecord

__all__ = ["MetricKey", "Metrics"]

# No ``*_created`` series: the names and samples stay what the docs list.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

# name -> (kind, help, label names); label names sorted, so series read in that order.
_METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "wxnet_gate_flows_total": (
        "counter",
        "Flows decided (DNS queries, inspected TCP).",
        ("app", "device", "path", "verdict"),
    ),
    "wxnet_gate_bytes_total": (
        "counter",
        "Bytes of inspected flows, both directions.",
        ("app", "device"),
    ),
    "wxnet_gate_dns_queries_total": ("counter", "DNS queries by verdict.", ("verdict",)),
    "wxnet_gate_dns_malformed_total": ("counter", "Undecodable DNS queries dropped.", ()),
    "wxnet_gate_dns_upstream_failures_total": (
        "counter",
        "Queries no upstream answered.",
        (),
    ),
    "wxnet_gate_set_additions_total": ("counter", "Addresses added to the nftables sets.", ()),
    "wxnet_gate_dns_process_answers_total": (
        "counter",
        "DNS answers per process when dns-workers > 1 (0: the gateway process).",
        ("process",),
    ),
    "wxnet_gate_dns_worker_restarts_total": ("counter", "DNS worker processes restarted.", ()),
    "wxnet_gate_active_groups": ("gauge", "Policy groups enforced now (schedules).", ()),
    "wxnet_gate_conntrack_flushes_total": (
        "counter",
        "Conntrack marks of earlier runs whose entries were flushed at start.",
        (),
    ),
    "wxnet_gate_http_unauthorized_total": ("counter", "Web requests refused for no token.", ()),
    "wxnet_gate_newgetdns_addresses_total": (
        "counter",
        "Addresses admitted from newgetdns answers read by the inspector.",
        (),
    ),
    "wxnet_gate_inspector_active": ("gauge", "Connections held by the inspector now.", ()),
}

MetricKey = tuple[str, tuple[tuple[str, str], ...]]
_MAX_FLOW_KEYS = 100_000  # cached flow keys (the values stay)


class _Collector(Collector):
    """The gateway's values as the library's metric families, at each scrape."""

    def __init__(self, values: dict[MetricKey, float]) -> None:
        self.values = values
        self.fns: dict[str, Callable[[], float]] = {}

    def collect(self) -> Iterator[Metric]:
        rows: dict[str, list[tuple[tuple[tuple[str, str], ...], float]]] = {}
        for (name, labels), value in sorted(self.values.items()):
            rows.setdefault(name, []).append((labels, value))
        for name, (kind, help_, label_names) in _METRICS.items():
            fam: CounterMetricFamily | GaugeMetricFamily
            if kind == "gauge":
                fam = GaugeMetricFamily(name, help_, labels=label_names)
            else:
                fam = CounterMetricFamily(name.removesuffix("_total"), help_, labels=label_names)
            fn = self.fns.get(name)
            if fn is not None:
                fam.add_metric([], fn())
            for labels, value in rows.get(name, ()):
                fam.add_metric([v for _k, v in labels], value)
            if not fam.samples and kind == "gauge" and not label_names:
                fam.add_metric([], 0)
            yield fam


class Metrics:
    """The gateway's metrics (one registry per instance: gateways in one process, as in
    the tests, do not share counts)."""

    def __init__(self) -> None:
        self._values: dict[MetricKey, float] = {}
        self._flow_keys: dict[tuple[str, str, str, str], MetricKey] = {}
        self._collector = _Collector(self._values)
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self._collector)

    @staticmethod
    def key(name: str, labels: dict[str, str] | None = None) -> MetricKey:
        """The key :meth:`add` takes: build it once for a counter bumped per query.

        Raises:
            KeyError: ``name`` is not a gateway metric, or ``labels`` are not its labels.
        """
        key = (name, tuple(sorted((labels or {}).items())))
        if tuple(k for k, _v in key[1]) != _METRICS[name][2]:
            raise KeyError(f"{name} has labels {_METRICS[name][2]}, not {key[1]}")
        return key

    def add(self, key: MetricKey, by: float = 1) -> None:
        """Add ``by`` to the series ``key`` (from :meth:`key`)."""
        self._values[key] = self._values.get(key, 0) + by

    def inc(self, name: str, by: float = 1, labels: dict[str, str] | None = None) -> None:
        """Add ``by`` to counter ``name`` with ``labels``.

        Raises:
            KeyError: ``name`` is not a gateway metric, or ``labels`` are not its labels.
        """
        key = self.key(name, labels)
        self._values[key] = self._values.get(key, 0) + by

    def set(self, name: str, value: float) -> None:
        """Set the gauge ``name`` (one without labels)."""
        self._values[self.key(name)] = value

    def gauge_fn(self, name: str, fn: Callable[[], float]) -> None:
        """The gauge ``name`` reads ``fn()`` at each scrape (instead of :meth:`set`)."""
        self._collector.fns[name] = fn

    def counter_fn(self, name: str, fn: Callable[[], float]) -> None:
        """The counter ``name`` is kept elsewhere: ``fn()`` is read at each scrape."""
        self._collector.fns[name] = fn

    def get(self, name: str, labels: dict[str, str] | None = None) -> float:
        """The value of one series (0 when it has none yet)."""
        return self._values.get((name, tuple(sorted((labels or {}).items()))), 0)

    def counts(self, gauges: bool = True) -> dict[MetricKey, float]:
        """Every series' value by key (the counters' are what the DNS workers send their
        gateway)."""
        if gauges:
            return dict(self._values)
        return {k: v for k, v in self._values.items() if _METRICS[k[0]][0] != "gauge"}

    def flow(self, rec: FlowRecord) -> None:
        """Count one finished flow (per DNS query and per inspected connection)."""
        app = rec.app or "unknown"
        # One key per (app, verdict, path, device), built once (this runs per DNS query).
        kind = (app, rec.verdict, rec.path, rec.device)
        key = self._flow_keys.get(kind)
        if key is None:
            labels = {"app": app, "verdict": rec.verdict, "path": rec.path, "device": rec.device}
            key = ("wxnet_gate_flows_total", tuple(sorted(labels.items())))
            if len(self._flow_keys) > _MAX_FLOW_KEYS:
                self._flow_keys.clear()
            self._flow_keys[kind] = key
        self._values[key] = self._values.get(key, 0) + 1
        if rec.bytes_up or rec.bytes_down:
            self.inc(
                "wxnet_gate_bytes_total",
                rec.bytes_up + rec.bytes_down,
                labels={"app": app, "device": rec.device},
            )

    def render(self) -> str:
        """The text exposition format (version 0.0.4)."""
        return generate_latest(self.registry).decode()
