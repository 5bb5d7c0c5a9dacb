"""Gateway policy, the model: groups, devices, schedules and the ``[gate]`` settings,
and the time questions asked of them (which group a device is in now, when that
changes). Pure: time questions take ``now`` (a Unix timestamp). The policy file is read
by :mod:`wxnet.gate.policyfile`; :mod:`wxnet.gate.policy` re-exports both.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from wxnet.gate.apps import AppInfo

__all__ = [
    "ALLOW_ONLY",
    "BLOCK",
    "MODES",
    "Device",
    "GateSettings",
    "Group",
    "Policy",
    "PolicyError",
    "Window",
]

ALLOW_ONLY = "allow-only"
BLOCK = "block"
MODES = (ALLOW_ONLY, BLOCK)
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,23}$")
_TABLE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
_WINDOW = re.compile(
    r"^\s*(?P<days>[a-z,\-]+)\s+(?P<h1>\d{1,2}):(?P<m1>\d{2})\s*-\s*(?P<h2>\d{1,2}):(?P<m2>\d{2})\s*$"
)


class PolicyError(ValueError):
    """The policy is invalid; ``line`` is the 1-based line it refers to (0: unknown)."""

    def __init__(self, message: str, line: int = 0) -> None:
        self.message = message
        self.line = line
        super().__init__(f"line {line}: {message}" if line else message)


@dataclass(frozen=True, slots=True)
class Window:
    """A weekly time window: on ``days`` (0 = Monday) from ``start`` to ``end`` minutes
    after midnight. ``end <= start`` means the window runs past midnight into the next day
    (it belongs to the day it starts on)."""

    days: frozenset[int]
    start: int
    end: int
    text: str

    def contains(self, when: datetime) -> bool:
        minute = when.hour * 60 + when.minute
        today, yesterday = when.weekday(), (when.weekday() - 1) % 7
        if self.end > self.start:
            return today in self.days and self.start <= minute < self.end
        return (today in self.days and minute >= self.start) or (
            yesterday in self.days and minute < self.end
        )


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    mode: str  # "allow-only" | "block"
    apps: tuple[str, ...]  # as listed
    effective_apps: tuple[str, ...]  # allow-only: apps + dependencies + also; block: apps
    schedule: tuple[Window, ...] = ()  # empty: always active
    line: int = 0

    def active(self, when: datetime) -> bool:
        return not self.schedule or any(w.contains(when) for w in self.schedule)


@dataclass(frozen=True, slots=True)
class Device:
    name: str
    group: str
    mac: str | None = None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    line: int = 0

    @property
    def specificity(self) -> int:
        """MAC beats any address; a longer prefix beats a shorter one."""
        if self.mac is not None:
            return 1000
        assert self.network is not None
        return self.network.prefixlen


@dataclass(frozen=True, slots=True)
class GateSettings:
    lan: tuple[str, ...] = ()
    upstreams: tuple[tuple[str, int], ...] = ()
    table: str = "wxnet"
    timezone: str = "UTC"
    spoof: str = "strict"  # strict | lenient
    foreign_dns: str = "redirect"  # redirect | drop
    block_quic: bool = True
    blocked_answer: str = "nxdomain"  # nxdomain | refused | an address
    dns_port: int = 53
    dns_listen: tuple[str, ...] = ("0.0.0.0", "::")
    inspector_port: int = 15001
    peek_bytes: int = 16384
    peek_timeout: float = 3.0
    min_set_timeout: int = 300
    max_set_timeout: int = 86400  # TTLs are clamped to this (nftables refuses huge ones)
    pass_timeout: int = 60
    record_every: int = 60  # long inspected flows get a record this often (s)
    strict: bool = False  # `gate check` warnings refuse the policy
    log: str | None = None
    db: str | None = None
    http: str | None = None  # host:port of /metrics and the dashboard (admin address)
    http_token: str | None = None  # if set, the web pages need it (Bearer or ?token=)
    default_group: str | None = None
    dns_workers: int = 1  # processes answering DNS (the gateway process is one of them)


@dataclass(frozen=True, slots=True)
class Policy:
    settings: GateSettings
    groups: Mapping[str, Group]
    devices: tuple[Device, ...]
    catalog: Mapping[str, AppInfo] = field(default_factory=dict)
    lines: Mapping[str, int] = field(default_factory=dict)  # [gate] key -> its line

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.settings.timezone)

    def local(self, now: float) -> datetime:
        return datetime.fromtimestamp(now, self.tz)

    def active_groups(self, now: float) -> frozenset[str]:
        when = self.local(now)
        return frozenset(name for name, g in self.groups.items() if g.active(when))

    def next_change(self, now: float, horizon_days: int = 8) -> float | None:
        """The first instant after ``now`` when the set of active groups changes,
        or None when no group has a schedule (or nothing changes within the horizon)."""
        if not any(g.schedule for g in self.groups.values()):
            return None
        current = self.active_groups(now)
        base = self.local(now).replace(hour=0, minute=0, second=0, microsecond=0)
        candidates: set[float] = set()
        for g in self.groups.values():
            for w in g.schedule:
                for d in range(-1, horizon_days):
                    day = base + timedelta(days=d)
                    for minute in (w.start, w.end if w.end > w.start else w.end + 1440):
                        t = (day + timedelta(minutes=minute)).timestamp()
                        if t > now:
                            candidates.add(t)
        for t in sorted(candidates):
            if self.active_groups(t) != current:
                return t
        return None

    def device_for(self, ip: str | None, mac: str | None = None) -> Device | None:
        """The most specific device entry that matches (MAC first, then longest prefix)."""
        best: Device | None = None
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
        if ip:
            try:
                addr = ipaddress.ip_address(ip.split("%", 1)[0])
            except ValueError:
                addr = None
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
        mac = mac.lower() if mac else None
        for dev in self.devices:
            if dev.mac is not None:
                hit = mac is not None and dev.mac == mac
            else:
                hit = (
                    addr is not None
                    and dev.network is not None
                    and addr.version == dev.network.version
                    and addr in dev.network
                )
            if hit and (best is None or dev.specificity > best.specificity):
                best = dev
        return best

    def restrictiveness(self, group: Group) -> tuple[int, int, str]:
        """Sort key: the most restrictive group first (allow-only with the fewest apps,
        then block groups with the most apps)."""
        if group.mode == ALLOW_ONLY:
            return (0, len(group.effective_apps), group.name)
        return (1, -len(group.effective_apps), group.name)

    def group_for(
        self, ip: str | None, mac: str | None, now: float, mac_known: bool = True
    ) -> tuple[str, Group | None]:
        """(device name, the group that applies now or None when unrestricted).

        ``mac_known=False``: the source's MAC could not be looked up (no neighbour entry
        yet). The kernel matches MAC entries itself, so the device may be one of them:
        it gets the most restrictive group among those it could be in, never "free".
        """
        if not mac_known and mac is None and any(d.mac is not None for d in self.devices):
            when = self.local(now)
            dev = self.device_for(ip, None)
            cands = [self.groups[d.group] for d in self.devices if d.mac is not None]
            if dev is not None:
                cands.append(self.groups[dev.group])
            elif self.settings.default_group:
                cands.append(self.groups[self.settings.default_group])
            live = [g for g in cands if g.active(when)]
            name = dev.name if dev is not None else (ip or "?")
            if not live:
                return name, None
            return name, min(live, key=self.restrictiveness)
        dev = self.device_for(ip, mac)
        if dev is not None:
            name, group = dev.name, self.groups.get(dev.group)
        else:
            name = ip or mac or "?"
            dg = self.settings.default_group
            group = self.groups.get(dg) if dg else None
        if group is None or not group.active(self.local(now)):
            return name, None
        return name, group

    def explain(self, now: float | None = None) -> list[str]:
        """Human-readable account of what this policy does."""
        s = self.settings
        lines = [
            f"nftables table inet {s.table}; LAN interfaces: {', '.join(s.lan) or '(none)'}",
            f"DNS filter on port {s.dns_port}"
            + (f" ({s.dns_workers} processes)" if s.dns_workers > 1 else "")
            + ", upstreams: "
            + ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in s.upstreams),
            f"foreign DNS: {s.foreign_dns}; DNS-over-TLS (853) blocked; QUIC (UDP 443) "
            + ("blocked" if s.block_quic else "allowed"),
            f"spoof handling: {s.spoof}; names outside the policy get {s.blocked_answer}",
        ]
        for g in self.groups.values():
            sched = ", ".join(w.text for w in g.schedule) or "always"
            if g.mode == ALLOW_ONLY:
                extra = sorted(set(g.effective_apps) - set(g.apps))
                ports = sorted(
                    {p for a in g.effective_apps for p in self.catalog.get(a, _NOAPP).tcp_ports}
                )
                lines.append(
                    f"group {g.name}: allow only {', '.join(g.apps)}"
                    + (f" (+ dependencies {', '.join(extra)})" if extra else "")
                    + f"; TCP ports open: {', '.join(map(str, ports)) or 'none'}; active {sched}"
                )
            else:
                lines.append(f"group {g.name}: block {', '.join(g.apps)}; active {sched}")
            if now is not None:
                state = "active" if g.active(self.local(now)) else "inactive (unrestricted)"
                lines.append(f"  now: {state}")
        for app in sorted({a for g in self.groups.values() for a in g.effective_apps}):
            info = self.catalog.get(app)
            if info is not None and info.operator_ranges:
                lines.append(
                    f"{app}: {len(info.operator_ranges)} operator-owned ranges admitted "
                    f"({', '.join(info.operator_ranges[:3])}"
                    + (", ..." if len(info.operator_ranges) > 3 else "")
                    + ")"
                )
        if s.http:
            token = "token required" if s.http_token else "no token"
            lines.append(f"admin web (dashboard, /metrics) on {s.http}, {token}")
        for d in self.devices:
            what = d.mac or str(d.network)
            lines.append(f"device {d.name} ({what}) -> group {d.group}")
        if s.default_group:
            lines.append(f"other devices -> group {s.default_group}")
        else:
            lines.append("other devices: unrestricted")
        return lines


_NOAPP = AppInfo(id="", label="")
