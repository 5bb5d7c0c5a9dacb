"""Prometheus counters for the gateway, rendered in the text exposition format."""

from __future__ import annotations

from wxnet.gate.records import FlowRecord

__all__ = ["Metrics"]

_HELP = {
    "wxnet_gate_flows_total": (
        "counter",
        "Flows decided (DNS queries, inspected TCP).",
    ),
    "wxnet_gate_bytes_total": ("counter", "Bytes of inspected flows, both directions."),
    "wxnet_gate_dns_queries_total": ("counter", "DNS queries by verdict."),
    "wxnet_gate_dns_malformed_total": ("counter", "Undecodable DNS queries dropped."),
    "wxnet_gate_dns_upstream_failures_total": ("counter", "Queries no upstream answered."),
    "wxnet_gate_set_additions_total": ("counter", "Addresses added to the nftables sets."),
    "wxnet_gate_dns_process_answers_total": (
        "counter",
        "DNS answers per process when dns-workers > 1 (0: the gateway process).",
    ),
    "wxnet_gate_dns_worker_restarts_total": ("counter", "DNS worker processes restarted."),
    "wxnet_gate_active_groups": ("gauge", "Policy groups enforced now (schedules)."),
    "wxnet_gate_conntrack_flushes_total": (
        "counter",
        "Conntrack marks of earlier runs whose entries were flushed at start.",
    ),
    "wxnet_gate_http_unauthorized_total": ("counter", "Web requests refused for no token."),
    "wxnet_gate_newgetdns_addresses_total": (
        "counter",
        "Addresses admitted from newgetdns answers read by the inspector.",
    ),
    "wxnet_gate_inspector_active": ("gauge", "Connections held by the inspector now."),
}


MetricKey = tuple[str, tuple[tuple[str, str], ...]]


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._flow_keys: dict[
            tuple[str, str, str, str], tuple[str, tuple[tuple[str, str], ...]]
        ] = {}

    def inc(self, name: str, by: float = 1, labels: dict[str, str] | None = None) -> None:
        key = (name, tuple(sorted((labels or {}).items())))
        self._values[key] = self._values.get(key, 0) + by

    @staticmethod
    def key(name: str, labels: dict[str, str] | None = None) -> MetricKey:
        """The key :meth:`add` takes: build it once for a counter bumped per query."""
        return (name, tuple(sorted((labels or {}).items())))

    def add(self, key: MetricKey, by: float = 1) -> None:
        self._values[key] = self._values.get(key, 0) + by

    def set(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        self._values[(name, tuple(sorted((labels or {}).items())))] = value

    def get(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self._values.get((name, tuple(sorted((labels or {}).items()))), 0)

    def flow(self, rec: FlowRecord) -> None:
        app = rec.app or "unknown"
        # One key per (app, verdict, path, device), built once (this runs per DNS query).
        kind = (app, rec.verdict, rec.path, rec.device)
        key = self._flow_keys.get(kind)
        if key is None:
            labels = {"app": app, "verdict": rec.verdict, "path": rec.path, "device": rec.device}
            key = ("wxnet_gate_flows_total", tuple(sorted(labels.items())))
            if len(self._flow_keys) > 100_000:
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
        out: list[str] = []
        names = sorted({n for n, _ in self._values} | set(_HELP))
        for name in names:
            kind, text = _HELP.get(name, ("untyped", name))
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} {kind}")
            rows = sorted((k, v) for k, v in self._values.items() if k[0] == name)
            if not rows and kind == "gauge":
                out.append(f"{name} 0")
            for (_, labels), value in rows:
                lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels)
                num = str(int(value)) if float(value).is_integer() else repr(value)
                out.append(f"{name}{{{lab}}} {num}" if lab else f"{name} {num}")
        return "\n".join(out) + "\n"
