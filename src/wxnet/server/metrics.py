"""A few Prometheus metrics, rendered in the text exposition format (no dependency)."""

from __future__ import annotations

import bisect
from collections.abc import Callable

__all__ = ["Counter", "Histogram", "Metrics"]


class Counter:
    def __init__(self, name: str, help_: str, label: str = "") -> None:
        self.name, self.help, self.label = name, help_, label
        self.values: dict[str, float] = {}

    def inc(self, label: str = "", n: float = 1) -> None:
        self.values[label] = self.values.get(label, 0) + n

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        if not self.values:
            out.append(f"{self.name} 0" if not self.label else "")
        for lab, v in sorted(self.values.items()):
            sel = f'{{{self.label}="{lab}"}}' if self.label else ""
            out.append(f"{self.name}{sel} {v:g}")
        return [line for line in out if line]


class Histogram:
    BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

    def __init__(self, name: str, help_: str) -> None:
        self.name, self.help = name, help_
        self.counts = [0] * (len(self.BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, v: float) -> None:
        self.counts[bisect.bisect_left(self.BUCKETS, v)] += 1
        self.sum += v

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        acc = 0
        for b, c in zip(self.BUCKETS, self.counts, strict=False):
            acc += c
            out.append(f'{self.name}_bucket{{le="{b}"}} {acc}')
        acc += self.counts[-1]
        out.append(f'{self.name}_bucket{{le="+Inf"}} {acc}')
        out.append(f"{self.name}_sum {self.sum:.6f}")
        out.append(f"{self.name}_count {acc}")
        return out


class Metrics:
    def __init__(self) -> None:
        self.requests = Counter("wxnet_requests_total", "Requests by CGI and link.", "cgi")
        self.errors = Counter(
            "wxnet_request_errors_total", "Requests that failed, by MM code.", "ret"
        )
        self.messages = Counter(
            "wxnet_messages_total", "Messages stored (not counting duplicates)."
        )
        self.duplicates = Counter("wxnet_duplicate_sends_total", "Sends answered from dedup.")
        self.sync_latency = Histogram("wxnet_sync_seconds", "newsync handling time.")
        self.protocol_errors = Counter("wxnet_protocol_errors_total", "Links closed for bad bytes.")
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.counter_fns: dict[str, tuple[str, str, Callable[[], dict[str, float]]]] = {}

    def gauge(self, name: str, help_: str, fn: Callable[[], float]) -> None:
        self.gauges[name] = (help_, fn)

    def counter_fn(
        self, name: str, help_: str, label: str, fn: Callable[[], dict[str, float]]
    ) -> None:
        """A counter kept elsewhere (``{label value: count}``), read at each scrape."""
        self.counter_fns[name] = (help_, label, fn)

    def render(self) -> str:
        lines: list[str] = []
        for m in (self.requests, self.errors, self.messages, self.duplicates, self.protocol_errors):
            lines += m.render()
        for name, (help_, label, read) in sorted(self.counter_fns.items()):
            c = Counter(name, help_, label)
            c.values = dict(read())
            lines += c.render()
        lines += self.sync_latency.render()
        for name, (help_, fn) in sorted(self.gauges.items()):
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} gauge", f"{name} {float(fn())!r}"]
        return "\n".join(lines) + "\n"
