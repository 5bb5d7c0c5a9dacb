"""Gateway policy: which devices may use which apps, and when (TOML, pure).

A policy file has one ``[gate]`` table (where and how the gateway runs), a
``[groups.NAME]`` table per group (``mode = "allow-only"`` or ``"block"``, ``apps``,
optional ``also`` and ``schedule``) and ``[[devices]]`` entries that put devices, by
``mac``, ``ip`` or ``subnet``, into groups. See docs/gateway.md for the reference.

Everything here is pure: parsing takes text, time questions take ``now`` (a Unix
timestamp). Errors are :class:`PolicyError` with the line they refer to.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from wxnet.gate.apps import AppInfo, expand_dependencies

__all__ = [
    "Device",
    "GateSettings",
    "Group",
    "Policy",
    "PolicyError",
    "Window",
    "load_policy",
    "parse_policy",
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


class _Lines:
    """Finds the line of a table header or a key, for error messages."""

    def __init__(self, text: str) -> None:
        self.headers: dict[tuple[str, int], int] = {}
        self.keys: dict[tuple[str, int, str], int] = {}
        counts: dict[str, int] = {}
        table, index = "", 0
        for no, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            m = re.match(r"^\[\[\s*([^\]]+?)\s*\]\]", line)
            if m:
                table = m.group(1).replace('"', "")
                index = counts.get(table, 0)
                counts[table] = index + 1
                self.headers[(table, index)] = no
                continue
            m = re.match(r"^\[\s*([^\]]+?)\s*\]", line)
            if m:
                table, index = m.group(1).replace('"', ""), 0
                self.headers[(table, 0)] = no
                continue
            m = re.match(r'^"?([A-Za-z0-9_\-]+)"?\s*=', line)
            if m:
                self.keys.setdefault((table, index, m.group(1)), no)

    def of(self, table: str, key: str | None = None, index: int = 0) -> int:
        if key is not None and (table, index, key) in self.keys:
            return self.keys[(table, index, key)]
        return self.headers.get((table, index), 0)


def _toml_line(exc: tomllib.TOMLDecodeError) -> int:
    m = re.search(r"line (\d+)", str(exc))
    return int(m.group(1)) if m else 0


def parse_window(text: str) -> Window:
    """Parse ``"mon-fri 08:00-18:00"``, ``"sat,sun 10:00-12:00"`` or ``"daily 22:00-06:00"``.

    Raises:
        ValueError: not in that form.
    """
    m = _WINDOW.match(text.lower())
    if not m:
        raise ValueError(f"schedule {text!r} is not like 'mon-fri 08:00-18:00'")
    days: set[int] = set()
    for part in m.group("days").split(","):
        if part in ("daily", "all", "every"):
            days.update(range(7))
        elif part == "weekdays":
            days.update(range(5))
        elif part == "weekend":
            days.update((5, 6))
        elif "-" in part:
            a, _, b = part.partition("-")
            if a not in _DAYS or b not in _DAYS:
                raise ValueError(f"unknown day range {part!r} in {text!r}")
            i, j = _DAYS.index(a), _DAYS.index(b)
            k = i
            while True:
                days.add(k)
                if k == j:
                    break
                k = (k + 1) % 7
        elif part in _DAYS:
            days.add(_DAYS.index(part))
        else:
            raise ValueError(f"unknown day {part!r} in {text!r} (use mon..sun, daily)")
    h1, m1, h2, m2 = (int(m.group(k)) for k in ("h1", "m1", "h2", "m2"))
    for h, mi in ((h1, m1), (h2, m2)):
        if not (0 <= h <= 24 and 0 <= mi < 60) or (h == 24 and mi):
            raise ValueError(f"bad time {h:02d}:{mi:02d} in {text!r}")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise ValueError(f"empty window in {text!r}")
    return Window(days=frozenset(days), start=start, end=end, text=text.strip())


def _parse_endpoint(text: str, default_port: int = 53, allow_zero: bool = False) -> tuple[str, int]:
    text = text.strip()
    host, port = text, default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = int(p)
    ipaddress.ip_address(host)
    if not (0 if allow_zero else 1) <= port < 65536:
        raise ValueError(f"port {port} out of range")
    return host, port


def load_policy(path: str, catalog: Mapping[str, AppInfo]) -> Policy:
    """Read and parse a policy file.

    Raises:
        PolicyError: unreadable or invalid.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read {path}: {exc}") from None
    return parse_policy(text, catalog)


_GATE_KEYS = {
    "lan",
    "upstreams",
    "table",
    "timezone",
    "spoof",
    "foreign-dns",
    "block-quic",
    "blocked-answer",
    "dns-port",
    "dns-listen",
    "inspector-port",
    "peek-bytes",
    "peek-timeout",
    "min-set-timeout",
    "pass-timeout",
    "max-set-timeout",
    "record-every",
    "strict",
    "http-token",
    "log",
    "db",
    "http",
    "default-group",
    "dns-workers",
}
_GROUP_KEYS = {"mode", "apps", "also", "dependencies", "schedule"}
_DEVICE_KEYS = {"name", "group", "mac", "ip", "subnet"}


def parse_policy(text: str, catalog: Mapping[str, AppInfo]) -> Policy:
    """Parse and validate a policy against the known apps.

    Raises:
        PolicyError: with the offending line.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"TOML syntax: {exc}", _toml_line(exc)) from None
    lines = _Lines(text)
    for key in data:
        if key not in ("gate", "groups", "devices", "apps"):
            raise PolicyError(
                f"unknown table {key!r} (expected [gate], [groups.NAME], [[devices]], [apps.NAME])",
                lines.of(key),
            )
    settings = _parse_gate(data.get("gate", {}), lines)
    catalog = _parse_apps(data.get("apps", {}), lines, catalog)
    groups = _parse_groups(data.get("groups", {}), lines, catalog)
    devices = _parse_devices(data.get("devices", []), lines, groups)
    if settings.default_group is not None and settings.default_group not in groups:
        raise PolicyError(
            f"default-group {settings.default_group!r} is not a defined group",
            lines.of("gate", "default-group"),
        )
    gate_lines = {k: lines.of("gate", k) for k in _GATE_KEYS}
    gate_lines["gate"] = lines.of("gate")
    return Policy(
        settings=settings,
        groups=groups,
        devices=devices,
        catalog=dict(catalog),
        lines={k: v for k, v in gate_lines.items() if v},
    )


def _expect(cond: bool, message: str, line: int) -> None:
    if not cond:
        raise PolicyError(message, line)


def _str_list(value: Any, what: str, line: int) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    _expect(
        isinstance(value, list) and all(isinstance(v, str) for v in value),
        f"{what} must be a list of strings",
        line,
    )
    return tuple(value)


def _int_in(value: Any, what: str, lo: int, hi: int, line: int) -> int:
    _expect(
        isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi,
        f"{what} must be an integer in {lo}..{hi}",
        line,
    )
    return int(value)


def _parse_gate(raw: Any, lines: _Lines) -> GateSettings:
    _expect(isinstance(raw, dict), "[gate] must be a table", lines.of("gate"))
    for key in raw:
        _expect(key in _GATE_KEYS, f"unknown key {key!r} in [gate]", lines.of("gate", key))

    def ln(key: str) -> int:
        return lines.of("gate", key)

    kw: dict[str, Any] = {}
    if "lan" in raw:
        lan = _str_list(raw["lan"], "lan", ln("lan"))
        for name in lan:
            _expect(
                0 < len(name) < 16 and re.match(r"^[A-Za-z0-9_.\-]+$", name) is not None,
                f"bad interface name {name!r}",
                ln("lan"),
            )
        kw["lan"] = lan
    _expect(
        "upstreams" in raw, "[gate] needs upstreams (DNS servers to forward to)", ln("upstreams")
    )
    ups = []
    for u in _str_list(raw["upstreams"], "upstreams", ln("upstreams")):
        try:
            ups.append(_parse_endpoint(u))
        except ValueError as exc:
            raise PolicyError(f"bad upstream {u!r}: {exc}", ln("upstreams")) from None
    _expect(bool(ups), "upstreams must not be empty", ln("upstreams"))
    kw["upstreams"] = tuple(ups)
    if "table" in raw:
        t = raw["table"]
        _expect(
            isinstance(t, str) and _TABLE.match(t) is not None,
            "table must be a name of letters, digits and _ (at most 32)",
            ln("table"),
        )
        kw["table"] = t
    if "timezone" in raw:
        tz = raw["timezone"]
        try:
            ZoneInfo(str(tz))
        except (ZoneInfoNotFoundError, ValueError):
            raise PolicyError(f"unknown timezone {tz!r}", ln("timezone")) from None
        kw["timezone"] = str(tz)
    for key, attr, choices in (
        ("spoof", "spoof", ("strict", "lenient")),
        ("foreign-dns", "foreign_dns", ("redirect", "drop")),
    ):
        if key in raw:
            _expect(
                raw[key] in choices,
                f"{key} must be one of {', '.join(choices)}",
                ln(key),
            )
            kw[attr] = raw[key]
    if "block-quic" in raw:
        _expect(
            isinstance(raw["block-quic"], bool),
            "block-quic must be true or false",
            ln("block-quic"),
        )
        kw["block_quic"] = raw["block-quic"]
    if "blocked-answer" in raw:
        ans = raw["blocked-answer"]
        ok = ans in ("nxdomain", "refused")
        if not ok and isinstance(ans, str):
            try:
                ipaddress.ip_address(ans)
                ok = True
            except ValueError:
                ok = False
        _expect(
            ok, "blocked-answer must be nxdomain, refused or an IP address", ln("blocked-answer")
        )
        kw["blocked_answer"] = ans
    if "dns-workers" in raw:
        kw["dns_workers"] = _int_in(raw["dns-workers"], "dns-workers", 1, 64, ln("dns-workers"))
    for key, attr in (("dns-port", "dns_port"), ("inspector-port", "inspector_port")):
        if key in raw:
            kw[attr] = _int_in(raw[key], key, 1, 65535, ln(key))
    if "dns-listen" in raw:
        listen = _str_list(raw["dns-listen"], "dns-listen", ln("dns-listen"))
        for a in listen:
            try:
                ipaddress.ip_address(a)
            except ValueError:
                raise PolicyError(
                    f"dns-listen: {a!r} is not an IP address", ln("dns-listen")
                ) from None
        kw["dns_listen"] = listen
    if "peek-bytes" in raw:
        kw["peek_bytes"] = _int_in(raw["peek-bytes"], "peek-bytes", 16, 65536, ln("peek-bytes"))
    if "peek-timeout" in raw:
        v = raw["peek-timeout"]
        _expect(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 60,
            "peek-timeout must be seconds in (0, 60]",
            ln("peek-timeout"),
        )
        kw["peek_timeout"] = float(v)
    for key, attr in (
        ("min-set-timeout", "min_set_timeout"),
        ("max-set-timeout", "max_set_timeout"),
        ("pass-timeout", "pass_timeout"),
        ("record-every", "record_every"),
    ):
        if key in raw:
            kw[attr] = _int_in(raw[key], key, 1, 7 * 86400, ln(key))
    if kw.get("max_set_timeout", 86400) < kw.get("min_set_timeout", 300):
        raise PolicyError("max-set-timeout is below min-set-timeout", ln("max-set-timeout"))
    if "strict" in raw:
        _expect(isinstance(raw["strict"], bool), "strict must be true or false", ln("strict"))
        kw["strict"] = raw["strict"]
    for key in ("log", "db", "default-group", "http-token"):
        if key in raw:
            _expect(
                isinstance(raw[key], str) and raw[key] != "", f"{key} must be a string", ln(key)
            )
            kw[key.replace("-", "_")] = raw[key]
    if "http" in raw:
        text = str(raw["http"]).strip()
        if text.isdigit() or text.startswith(":"):  # a port alone: the admin address
            text = "127.0.0.1:" + text.lstrip(":")
        try:
            _parse_endpoint(text, -1, allow_zero=True)
        except ValueError as exc:
            raise PolicyError(f"http must be [ADDRESS:]PORT ({exc})", ln("http")) from None
        kw["http"] = text
    if kw.get("dns_port", 53) == kw.get("inspector_port", 15001):
        raise PolicyError(
            "inspector-port must differ from dns-port", ln("inspector-port") or ln("dns-port")
        )
    return GateSettings(**kw)


def _parse_apps(raw: Any, lines: _Lines, catalog: Mapping[str, AppInfo]) -> Mapping[str, AppInfo]:
    """``[apps.NAME] operator-ranges = [...]``: more operator-owned ranges of an app
    (your own deployment of its servers), admitted like the signature's own."""
    _expect(isinstance(raw, dict), "apps must be tables [apps.NAME]", lines.of("apps"))
    if not raw:
        return catalog
    out = dict(catalog)
    for name, body in raw.items():
        table = f"apps.{name}"
        _expect(name in catalog, f"unknown app {name!r} in [{table}]", lines.of(table))
        _expect(isinstance(body, dict), f"[{table}] must be a table", lines.of(table))
        for key in body:
            _expect(key == "operator-ranges", f"unknown key {key!r} in [{table}]",
                    lines.of(table, key))  # fmt: skip
        ln = lines.of(table, "operator-ranges")
        ranges = []
        for r in _str_list(body.get("operator-ranges", []), "operator-ranges", ln):
            try:
                ranges.append(str(ipaddress.ip_network(r, strict=True)))
            except ValueError as exc:
                raise PolicyError(f"operator-ranges: {exc}", ln) from None
        info = out[name]
        out[name] = replace(info, operator_ranges=(*info.operator_ranges, *ranges))
    return out


def _parse_groups(raw: Any, lines: _Lines, catalog: Mapping[str, AppInfo]) -> dict[str, Group]:
    _expect(isinstance(raw, dict), "groups must be tables [groups.NAME]", lines.of("groups"))
    groups: dict[str, Group] = {}
    for name, body in raw.items():
        table = f"groups.{name}"

        def ln(key: str | None = None, _t: str = table) -> int:
            return lines.of(_t, key)

        _expect(
            _NAME.match(name) is not None,
            f"group name {name!r}: lowercase letters, digits, - and _ (at most 24)",
            ln(),
        )
        _expect(isinstance(body, dict), f"[{table}] must be a table", ln())
        for key in body:
            _expect(key in _GROUP_KEYS, f"unknown key {key!r} in [{table}]", ln(key))
        mode = body.get("mode")
        _expect(mode in MODES, f"[{table}] mode must be 'allow-only' or 'block'", ln("mode"))
        _expect("apps" in body, f"[{table}] needs apps", ln())
        apps = _str_list(body["apps"], "apps", ln("apps"))
        _expect(bool(apps), f"[{table}] apps must not be empty", ln("apps"))
        also = _str_list(body.get("also", []), "also", ln("also"))
        for app in (*apps, *also):
            _expect(
                app in catalog,
                f"unknown app {app!r} (known: {', '.join(sorted(catalog)) or 'none'})",
                ln("apps" if app in apps else "also"),
            )
        deps = body.get("dependencies", True)
        _expect(isinstance(deps, bool), "dependencies must be true or false", ln("dependencies"))
        if mode == ALLOW_ONLY:
            base = expand_dependencies(apps, catalog) if deps else tuple(apps)
            effective = tuple(sorted(set(base) | set(expand_dependencies(also, catalog))))
        else:
            _expect(not also, "also is only meaningful in allow-only mode", ln("also"))
            effective = tuple(sorted(set(apps)))
        windows = []
        for w in _str_list(body.get("schedule", []), "schedule", ln("schedule")):
            try:
                windows.append(parse_window(w))
            except ValueError as exc:
                raise PolicyError(str(exc), ln("schedule")) from None
        groups[name] = Group(
            name=name,
            mode=str(mode),
            apps=apps,
            effective_apps=effective,
            schedule=tuple(windows),
            line=ln(),
        )
    return groups


def _parse_devices(raw: Any, lines: _Lines, groups: Mapping[str, Group]) -> tuple[Device, ...]:
    _expect(isinstance(raw, list), "devices must be [[devices]] entries", lines.of("devices"))
    devices: list[Device] = []
    names: set[str] = set()
    seen: dict[str, int] = {}
    for i, body in enumerate(raw):

        def ln(key: str | None = None, _i: int = i) -> int:
            return lines.of("devices", key, _i)

        _expect(isinstance(body, dict), "each [[devices]] entry must be a table", ln())
        for key in body:
            _expect(key in _DEVICE_KEYS, f"unknown key {key!r} in [[devices]]", ln(key))
        group = body.get("group")
        _expect(isinstance(group, str), "device needs group = NAME", ln("group") or ln())
        _expect(group in groups, f"group {group!r} is not defined under [groups]", ln("group"))
        which = [k for k in ("mac", "ip", "subnet") if k in body]
        _expect(len(which) == 1, "device needs exactly one of mac, ip, subnet", ln())
        key = which[0]
        value = body[key]
        _expect(isinstance(value, str), f"{key} must be a string", ln(key))
        mac = None
        net: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
        if key == "mac":
            mac = value.lower().replace("-", ":")
            _expect(_MAC.match(mac) is not None, f"bad MAC address {value!r}", ln(key))
            ident = mac
        else:
            try:
                if key == "ip":
                    net = ipaddress.ip_network(ipaddress.ip_address(value))
                else:
                    net = ipaddress.ip_network(value, strict=True)
            except ValueError as exc:
                raise PolicyError(f"bad {key} {value!r}: {exc}", ln(key)) from None
            ident = str(net)
        _expect(
            ident not in seen,
            f"{ident} is already listed (line {seen.get(ident)})",
            ln(key),
        )
        seen[ident] = ln(key)
        name = body.get("name", ident)
        _expect(isinstance(name, str) and name != "", "name must be a string", ln("name"))
        _expect(name not in names, f"device name {name!r} is used twice", ln("name"))
        names.add(name)
        devices.append(Device(name=name, group=str(group), mac=mac, network=net, line=ln()))
    return tuple(devices)
