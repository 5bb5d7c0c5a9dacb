"""Gateway policy, the file: parse and validate the TOML policy (``[gate]``,
``[groups.NAME]``, ``[[devices]]``, ``[apps.NAME]``) into :mod:`wxnet.gate.policymodel`'s
objects. Pure (text in); errors are :class:`PolicyError` with the line they refer to.
See docs/gateway.md for the reference.

About 500 lines on purpose: it is the whole file format in one place (every key's check
beside the key table and the line finder its messages use), as short functions.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from wxnet.gate.apps import AppInfo, expand_dependencies
from wxnet.gate.policymodel import (
    _DAYS,
    _MAC,
    _NAME,
    _TABLE,
    _WINDOW,
    ALLOW_ONLY,
    MODES,
    Device,
    GateSettings,
    Group,
    Policy,
    PolicyError,
    Window,
)

__all__ = ["load_policy", "parse_policy", "parse_window"]


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
    for part in (_gate_network, _gate_choices, _gate_listeners, _gate_timing, _gate_outputs):
        part(raw, ln, kw)
    if kw.get("dns_port", 53) == kw.get("inspector_port", 15001):
        raise PolicyError(
            "inspector-port must differ from dns-port", ln("inspector-port") or ln("dns-port")
        )
    return GateSettings(**kw)


def _gate_network(raw: dict[str, Any], ln: Callable[[str], int], kw: dict[str, Any]) -> None:
    """lan, upstreams, table, timezone."""
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


def _gate_choices(raw: dict[str, Any], ln: Callable[[str], int], kw: dict[str, Any]) -> None:
    """spoof, foreign-dns, block-quic, blocked-answer."""
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


def _gate_listeners(raw: dict[str, Any], ln: Callable[[str], int], kw: dict[str, Any]) -> None:
    """dns-workers, dns-port, inspector-port, dns-listen."""
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


def _gate_timing(raw: dict[str, Any], ln: Callable[[str], int], kw: dict[str, Any]) -> None:
    """peek-bytes, peek-timeout and the set, pass and record timeouts."""
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


def _gate_outputs(raw: dict[str, Any], ln: Callable[[str], int], kw: dict[str, Any]) -> None:
    """strict, log, db, default-group, http-token, http."""
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
