"""The nftables ruleset for a policy, as text (pure; golden-tested).

One table of wxnet's own, ``inet <table>``. A destination is admitted for an allow-only
group only on evidence no device can forge (docs/gateway.md, "Threat model"):

- ``d_<group>_<app>_4/_6``: addresses in the answer chain of the gateway's own DNS
  filter for an allowed name asked by a device of that group;
- ``n_<group>_<app>_4/_6``: addresses in a newgetdns answer the inspector saw come back
  from an address already admitted for that group;
- ``o_<app>_4/_6``: the app's operator-owned ranges (signatures, ``[apps.NAME]``).

Block groups have ``x_<group>_4/_6`` (device . destination: a blocked app seen in that
device's payload) and ``c_<group>_4/_6`` (device . destination . port found clean, for
``pass-timeout``). Nothing one group (or device) does touches another's sets.

Chains: ``dstnat`` sends DNS of policed devices to the filter and flows that need the
inspector to it (``redirect``; ``SO_ORIGINAL_DST`` gives the destination back);
``forward`` passes flows whose conntrack mark carries *this run's* verdict and sends the
rest of the policed devices to their group's chain; ``input`` keeps policed devices off
the admin port. Marks: ``0x5758`` in the high 16 bits, this run's epoch in bits 8-15,
the attestation kind in bits 6-7 and the app in bits 0-5; marks of earlier runs are
not honoured (and their conntrack entries are flushed at start).

If the gateway process dies the table stays (fail closed). ``wxnet gate stop`` (or a
clean exit) deletes the table.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

from wxnet.gate.policy import ALLOW_ONLY, Device, Group, Policy

__all__ = [
    "KINDS",
    "MARK_BASE",
    "MARK_MASK",
    "RUN_MASK",
    "add_elements",
    "app_mark",
    "app_of_mark",
    "chain_names",
    "clean_set",
    "delete_table",
    "deny_set",
    "dns_set",
    "mark_epoch",
    "newgetdns_set",
    "pass_mark",
    "range_set",
    "render",
    "set_name",
]

#: Conntrack marks: the high 16 bits say "wxnet decided"; see the module docstring.
MARK_BASE = 0x57580000  # "WX"
MARK_MASK = 0xFFFF0000
RUN_MASK = 0xFFFFFF00
KINDS = ("dns", "newgetdns", "range", "pass")
MAX_APPS = 63


def _ident(app: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", app)


def set_name(base: str, family: int) -> str:
    """Name of a set ``base`` (for example ``d_staff_wechat``) for IP version ``family``."""
    return f"{base}_{family}"


def dns_set(group: str, app: str) -> str:
    return f"d_{_ident(group)}_{_ident(app)}"


def newgetdns_set(group: str, app: str) -> str:
    return f"n_{_ident(group)}_{_ident(app)}"


def range_set(app: str) -> str:
    return f"o_{_ident(app)}"


def deny_set(group: str) -> str:
    return f"x_{_ident(group)}"


def clean_set(group: str) -> str:
    return f"c_{_ident(group)}"


def policy_apps(policy: Policy) -> list[str]:
    """Every app any group refers to, in a stable order (their mark indexes)."""
    apps = sorted({a for g in policy.groups.values() for a in g.effective_apps})
    if len(apps) > MAX_APPS:
        raise ValueError(f"at most {MAX_APPS} apps in one policy")
    return apps


def app_mark(policy: Policy, app: str, kind: str = "dns", epoch: int = 1) -> int:
    return (
        MARK_BASE
        | (epoch & 0xFF) << 8
        | KINDS.index(kind) << 6
        | (policy_apps(policy).index(app) + 1)
    )


def pass_mark(epoch: int = 1) -> int:
    return MARK_BASE | (epoch & 0xFF) << 8 | 3 << 6


def mark_epoch(mark: int) -> int | None:
    """The run epoch of a wxnet mark (None: not ours)."""
    return (mark >> 8) & 0xFF if mark & MARK_MASK == MARK_BASE else None


def app_of_mark(policy: Policy, mark: int, epoch: int | None = None) -> tuple[str, str] | None:
    """Inverse of :func:`app_mark`: (app or "pass", attestation kind); None when the mark
    is not ours (or, with ``epoch``, from another run)."""
    if mark & MARK_MASK != MARK_BASE:
        return None
    if epoch is not None and (mark >> 8) & 0xFF != epoch & 0xFF:
        return None
    kind = KINDS[(mark >> 6) & 3]
    if kind == "pass":
        return ("pass", "pass")
    apps = policy_apps(policy)
    i = (mark & 0x3F) - 1
    return (apps[i], kind) if 0 <= i < len(apps) else None


def _set_list(items: Iterable[int | str]) -> str:
    values = [str(i) for i in items]
    return values[0] if len(values) == 1 else "{ " + ", ".join(values) + " }"


def _quoted(names: Sequence[str]) -> str:
    return _set_list(f'"{n}"' for n in names)


def chain_names(policy: Policy) -> list[str]:
    names = ["dstnat", "forward", "input"]
    for g in policy.groups:
        names += [f"nat_{_ident(g)}", f"fwd_{_ident(g)}"]
    return names


def _match(dev: Device) -> str:
    if dev.mac is not None:
        return f"ether saddr {dev.mac}"
    assert dev.network is not None
    fam = "ip" if dev.network.version == 4 else "ip6"
    net = dev.network
    addr = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
    return f"{fam} saddr {addr}"


def _dispatch(policy: Policy, active: frozenset[str], prefix: str) -> list[str]:
    """Rules that send each policed device to its group's chain (most specific first)."""
    out: list[str] = []
    devices = sorted(policy.devices, key=lambda d: -d.specificity)
    for dev in devices:
        if dev.group in active:
            out.append(f"{_match(dev)} goto {prefix}_{_ident(dev.group)}")
        else:
            out.append(f"{_match(dev)} return")
    dg = policy.settings.default_group
    if dg is not None and dg in active:
        out.append(f"goto {prefix}_{_ident(dg)}")
    return out


def _app_ports(policy: Policy, group: Group) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    rows = []
    for app in group.effective_apps:
        info = policy.catalog.get(app)
        if info is None:
            continue
        rows.append((app, info.tcp_ports, info.udp_ports))
    return rows


def _has_ranges(policy: Policy, app: str) -> bool:
    info = policy.catalog.get(app)
    return info is not None and bool(info.operator_ranges)


def _ranges(policy: Policy, app: str, family: int) -> list[str]:
    info = policy.catalog.get(app)
    if info is None:
        return []
    return [r for r in info.operator_ranges if ipaddress.ip_network(r).version == family]


def _admitting_sets(policy: Policy, group: Group, app: str) -> list[tuple[str, str]]:
    """(set base, attestation kind) of the sets that admit ``app`` for ``group``."""
    out = [(dns_set(group.name, app), "dns"), (newgetdns_set(group.name, app), "newgetdns")]
    if _has_ranges(policy, app):
        out.append((range_set(app), "range"))
    return out


def _nat_group(policy: Policy, group: Group) -> list[str]:
    s = policy.settings
    out: list[str] = []
    if s.foreign_dns == "redirect":
        out.append(f"meta l4proto {{ tcp, udp }} th dport 53 redirect to :{s.dns_port}")
    elif s.dns_port != 53:
        to_gateway = "fib daddr type local meta l4proto { tcp, udp } th dport 53"
        out.append(f"{to_gateway} redirect to :{s.dns_port}")
    out.append("fib daddr type local return")
    insp = f"redirect to :{s.inspector_port}"
    if group.mode == ALLOW_ONLY:
        inspect_ports: set[int] = set()
        for app, tcp, _udp in _app_ports(policy, group):
            info = policy.catalog[app]
            watch = sorted(set(info.newgetdns_ports) & set(tcp))
            for base, _kind in _admitting_sets(policy, group, app):
                for fam, ipf in ((4, "ip"), (6, "ip6")):
                    name = set_name(base, fam)
                    if watch:  # the inspector reads newgetdns answers on these ports
                        out.append(f"{ipf} daddr @{name} tcp dport {_set_list(watch)} {insp}")
                    if tcp:
                        out.append(f"{ipf} daddr @{name} tcp dport {_set_list(tcp)} return")
            inspect_ports.update(tcp)
        inspect_ports.discard(53)
        if inspect_ports:  # not admitted: the inspector labels (CDN names may pass)
            out.append(f"tcp dport {_set_list(sorted(inspect_ports))} {insp}")
        return out
    for fam, ipf in ((4, "ip"), (6, "ip6")):
        out.append(
            f"{ipf} saddr . {ipf} daddr . tcp dport @{set_name(clean_set(group.name), fam)} return"
        )
    for fam, ipf in ((4, "ip"), (6, "ip6")):
        out.append(f"{ipf} saddr . {ipf} daddr @{set_name(deny_set(group.name), fam)} return")
        for app in group.effective_apps:
            if _ranges(policy, app, fam):
                out.append(f"{ipf} daddr @{set_name(range_set(app), fam)} return")
    out.append("tcp dport 853 return")
    out.append(f"meta l4proto tcp {insp}")  # every TCP port is inspected
    return out


def _fwd_group(policy: Policy, group: Group, epoch: int) -> list[str]:
    s = policy.settings
    out = [
        "tcp dport 853 reject with tcp reset",
        "meta l4proto { tcp, udp } th dport 53 reject",
    ]
    if s.block_quic:
        out.append("udp dport 443 reject")
    if group.mode == ALLOW_ONLY:
        for app, tcp, udp in _app_ports(policy, group):
            for base, kind in _admitting_sets(policy, group, app):
                mark = f"0x{app_mark(policy, app, kind, epoch):08x}"
                for fam, ipf in ((4, "ip"), (6, "ip6")):
                    name = set_name(base, fam)
                    if tcp:
                        out.append(
                            f"{ipf} daddr @{name} tcp dport {_set_list(tcp)} "
                            f"ct mark set {mark} accept"
                        )
                    if udp:
                        out.append(
                            f"{ipf} daddr @{name} udp dport {_set_list(udp)} "
                            f"ct mark set {mark} accept"
                        )
        out.append("meta l4proto tcp reject with tcp reset")
        out.append("reject with icmpx admin-prohibited")
        return out
    for fam, ipf in ((4, "ip"), (6, "ip6")):
        deny = f"{ipf} saddr . {ipf} daddr @{set_name(deny_set(group.name), fam)}"
        out.append(f"{deny} meta l4proto tcp reject with tcp reset")
        out.append(f"{deny} reject with icmpx admin-prohibited")
        for app in group.effective_apps:
            if _ranges(policy, app, fam):
                name = set_name(range_set(app), fam)
                out.append(f"{ipf} daddr @{name} meta l4proto tcp reject with tcp reset")
                out.append(f"{ipf} daddr @{name} reject with icmpx admin-prohibited")
    out.append(f"ct mark set 0x{pass_mark(epoch):08x} accept")
    return out


def _input(policy: Policy, active: frozenset[str]) -> list[str]:
    """Policed devices never reach the admin port (dashboard, /metrics)."""
    s = policy.settings
    if not s.http:
        return []
    port = int(s.http.rpartition(":")[2])
    if port == 0:
        return []
    deny = f"tcp dport {port} reject with tcp reset"
    out = [f"iifname != {_quoted(s.lan)} return"]
    for dev in sorted(policy.devices, key=lambda d: -d.specificity):
        out.append(f"{_match(dev)} {deny}" if dev.group in active else f"{_match(dev)} return")
    if s.default_group is not None and s.default_group in active:
        out.append(deny)
    return out


def _chain(name: str, rules: list[str], hook: str | None = None) -> list[str]:
    out = [f"\tchain {name} {{"]
    if hook:
        out.append(f"\t\t{hook}")
    out += [f"\t\t{r}" for r in rules]
    out.append("\t}")
    return out


def render(policy: Policy, active: frozenset[str], fresh: bool = True, epoch: int = 1) -> str:
    """The ``nft -f`` script that installs the policy with ``active`` groups enforced.

    ``fresh``: replace any table of that name (sets start empty). Otherwise the table
    must already hold this policy's chains: they are flushed and refilled in the same
    transaction, and the address sets keep their elements (schedule changes).
    ``epoch``: this run's mark epoch (1..255).
    """
    s = policy.settings
    t = s.table
    head = [f"table inet {t}"]
    if fresh:
        head.append(f"delete table inet {t}")
    else:
        head += [f"flush chain inet {t} {c}" for c in chain_names(policy)]
    body = [f"table inet {t} {{", *_sets(policy)]
    lan = f"iifname != {_quoted(s.lan)} return"
    body += _chain(
        "dstnat",
        [lan, *_dispatch(policy, active, "nat")],
        "type nat hook prerouting priority dstnat; policy accept;",
    )
    cached = f"ct mark & 0x{RUN_MASK:08x} == 0x{MARK_BASE | (epoch & 0xFF) << 8:08x} accept"
    body += _chain(
        "forward",
        [cached, lan, *_dispatch(policy, active, "fwd")],
        "type filter hook forward priority filter; policy accept;",
    )
    body += _chain(
        "input", _input(policy, active), "type filter hook input priority filter; policy accept;"
    )
    for name, group in policy.groups.items():
        body += _chain(f"nat_{_ident(name)}", _nat_group(policy, group))
        body += _chain(f"fwd_{_ident(name)}", _fwd_group(policy, group, epoch))
    body.append("}")
    return "\n".join(head + body) + "\n"


def _sets(policy: Policy) -> list[str]:
    """The table's address sets: operator ranges per app, then each group's sets."""
    s = policy.settings
    body: list[str] = []
    timeout = f"flags timeout; timeout {s.min_set_timeout}s;"
    for app in policy_apps(policy):
        for fam in (4, 6):
            ranges = _ranges(policy, app, fam)
            if _has_ranges(policy, app):
                elements = f" elements = {{ {', '.join(ranges)} }};" if ranges else ""
                body.append(
                    f"\tset {set_name(range_set(app), fam)} {{ type ipv{fam}_addr; "
                    f"flags interval; auto-merge;{elements} }}"
                )
    for g in policy.groups.values():
        for fam in (4, 6):
            addr = f"ipv{fam}_addr"
            if g.mode == ALLOW_ONLY:
                for app in g.effective_apps:
                    for base in (dns_set(g.name, app), newgetdns_set(g.name, app)):
                        body.append(f"\tset {set_name(base, fam)} {{ type {addr}; {timeout} }}")
            else:
                body.append(
                    f"\tset {set_name(deny_set(g.name), fam)} {{ type {addr} . {addr}; {timeout} }}"
                )
                body.append(
                    f"\tset {set_name(clean_set(g.name), fam)} {{ type {addr} . {addr} . "
                    f"inet_service; flags timeout; timeout {s.pass_timeout}s; }}"
                )
    return body


def delete_table(table: str) -> str:
    """Script that removes the table if present (no error when it is not)."""
    return f"table inet {table}\ndelete table inet {table}\n"


def _element_key(key: str) -> tuple[int, str]:
    """(IP version, normalised key) of ``address`` or ``address . address[ . port]``."""
    parts = [p.strip() for p in key.split(" . ")]
    out: list[str] = []
    version = 0
    for part in parts:
        if part.isdigit():
            out.append(part)
            continue
        ip = ipaddress.ip_address(part.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        version = version or ip.version
        out.append(str(ip))
    return version, " . ".join(out)


def add_elements(table: str, elements: Iterable[tuple[str, str, int]], verb: str = "add") -> str:
    """Script adding (``verb="add"``) or deleting (``"delete"``) ``(set base, key,
    timeout seconds)`` elements; the key is an address or a concatenation such as
    ``"10.0.0.2 . 192.0.2.1 . 443"``, and its first address picks the ``_4``/``_6`` set."""
    by_set: dict[str, list[str]] = {}
    for base, key, timeout in elements:
        version, norm = _element_key(key)
        name = set_name(base, version)
        item = f"{norm} timeout {max(1, int(timeout))}s" if verb == "add" else norm
        by_set.setdefault(name, []).append(item)
    return "".join(
        f"{verb} element inet {table} {name} {{ {', '.join(items)} }}\n"
        for name, items in sorted(by_set.items())
    )
