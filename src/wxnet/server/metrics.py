"""The server's Prometheus metrics, on ``prometheus_client`` (one registry per server,
so servers in one process, as in the tests, do not share counts).

The metric names are the exposition names of ``docs/server.md``; :class:`Counter` keeps
the small ``inc(label, n)`` interface the server code uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from wxnet.sync.db import LATENCY_BUCKETS, Timings

__all__ = ["Counter", "Histogram", "Metrics"]

# No ``*_created`` series: the names and samples stay what the docs list.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


def _base(name: str) -> str:
    return name.removesuffix("_total")


class Counter(Collector):
    """A counter with at most one label; ``inc(label, n)``.

    Counts are plain floats in a dict, read at each scrape (a collector of the
    registry), not ``prometheus_client.Counter``: its ``labels()`` lookup and locked
    increment cost several times a dict update, and the request path counts every
    request and every push. Only the event loop's thread counts. The exposition is
    the same: HELP, TYPE and one ``<name>_total`` sample per label value seen (an
    unlabelled counter shows 0 from the start)."""

    def __init__(self, registry: CollectorRegistry, name: str, help_: str, label: str = "") -> None:
        self.label = label
        self.name = _base(name)
        self.help = help_
        self.values: dict[str, float] = {} if label else {"": 0.0}
        registry.register(self)

    def inc(self, label: str = "", n: float = 1) -> None:
        values = self.values
        values[label] = values.get(label, 0.0) + n

    def collect(self) -> Iterator[Metric]:
        labels = [self.label] if self.label else []
        fam = CounterMetricFamily(self.name, self.help, labels=labels)
        for value_label, v in list(self.values.items()):
            fam.add_metric([value_label] if self.label else [], v)
        yield fam


def _histogram(
    name: str, help_: str, series: dict[str, Timings], label: str = ""
) -> HistogramMetricFamily:
    fam = HistogramMetricFamily(name, help_, labels=[label] if label else [])
    for value_label, t in sorted(series.items()):
        counts, total, cum = list(t.counts), t.sum, 0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip((*t.bounds, float("inf")), counts, strict=True):
            cum += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cum))
        fam.add_metric([value_label] if label else [], buckets, total)
    return fam


class Histogram(Collector):
    """A histogram over :class:`wxnet.sync.db.Timings` (a bisect and two adds per
    sample, no lock: observed from one thread); the exposition is Prometheus's."""

    BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

    def __init__(
        self,
        registry: CollectorRegistry,
        name: str,
        help_: str,
        buckets: tuple[float, ...] = BUCKETS,
    ) -> None:
        self.name = name
        self.help = help_
        self.timings = Timings(buckets)
        self.observe = self.timings.observe
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        yield _histogram(self.name, self.help, {"": self.timings})


class _Callbacks(Collector):
    """Gauges and counters whose values live elsewhere, read at each scrape."""

    def __init__(self) -> None:
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.counters: dict[str, tuple[str, str, Callable[[], dict[str, float]]]] = {}
        self.histograms: dict[str, tuple[str, str, Callable[[], dict[str, Timings]]]] = {}

    def collect(self) -> Iterator[Metric]:
        for name, (help_, fn) in sorted(self.gauges.items()):
            yield GaugeMetricFamily(name, help_, value=fn())
        for name, (help_, label, read) in sorted(self.counters.items()):
            fam = CounterMetricFamily(_base(name), help_, labels=[label] if label else [])
            for value_label, v in sorted(read().items()):
                fam.add_metric([value_label] if label else [], v)
            yield fam
        for name, (help_, label, series) in sorted(self.histograms.items()):
            yield _histogram(name, help_, series(), label)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(r, "wxnet_requests_total", "Requests by CGI and link.", "cgi")
        self.errors = Counter(
            r, "wxnet_request_errors_total", "Requests that failed, by MM code.", "ret"
        )
        self.messages = Counter(
            r, "wxnet_messages_total", "Messages stored (not counting duplicates)."
        )
        self.duplicates = Counter(r, "wxnet_duplicate_sends_total", "Sends answered from dedup.")
        self.pushes = Counter(
            r,
            "wxnet_pushes_total",
            "Long-link pushes: data (cmd 122, the items) or notify (cmd 24, go sync).",
            "kind",
        )
        self.sync_latency = Histogram(r, "wxnet_sync_seconds", "newsync handling time.")
        self.send_latency = Histogram(
            r,
            "wxnet_send_seconds",
            "newsendmsg handling time, its group commit included.",
            LATENCY_BUCKETS,
        )
        self.protocol_errors = Counter(
            r, "wxnet_protocol_errors_total", "Links closed for bad bytes."
        )
        self.connections_refused = Counter(
            r,
            "wxnet_connections_refused_total",
            "Connections closed at accept by a cap (total or per address).",
            "reason",
        )
        self.identify_timeouts = Counter(
            r, "wxnet_identify_timeouts_total", "Long links closed for not identifying in time."
        )
        self.http_timeouts = Counter(
            r,
            "wxnet_http_timeouts_total",
            "HTTP connections closed for slow headers or body.",
            "phase",
        )
        self._callbacks = _Callbacks()
        r.register(self._callbacks)

    def gauge(self, name: str, help_: str, fn: Callable[[], float]) -> None:
        self._callbacks.gauges[name] = (help_, fn)

    def counter_fn(
        self, name: str, help_: str, label: str, fn: Callable[[], dict[str, float]]
    ) -> None:
        """A counter kept elsewhere (``{label value: count}``), read at each scrape."""
        self._callbacks.counters[name] = (help_, label, fn)

    def histogram_fn(
        self, name: str, help_: str, label: str, fn: Callable[[], dict[str, Timings]]
    ) -> None:
        """A histogram kept elsewhere (``{label value: Timings}``; label ``""``: one
        unlabelled series under key ``""``), read at each scrape."""
        self._callbacks.histograms[name] = (help_, label, fn)

    def render(self) -> str:
        """The text exposition format (version 0.0.4)."""
        return generate_latest(self.registry).decode()
