"""The nftables ruleset for a policy, as text (pure; golden-tested).

One table of wxnet's own, ``inet <table>``, with:

- per app, address sets ``app_<id>_4`` / ``app_<id>_6`` with timeouts: the DNS filter
  and the inspector fill them (an address enters only after its app is known);
- ``pass_4`` / ``pass_6``: destinations the inspector found clean (block mode);
- chain ``dstnat`` (nat prerouting): sends DNS from policed devices to the gateway's
  filter, and TCP flows to an app port whose destination is in no set to the local
  inspector (``redirect``; the inspector reads the original destination with
  ``SO_ORIGINAL_DST``);
- chain ``forward`` (filter forward): flows whose conntrack mark carries a verdict
  pass at once; otherwise policed devices go to their group's chain, which accepts
  (and marks) allowed flows and rejects the rest. QUIC (UDP 443), DNS-over-TLS (853)
  and DNS to anyone but the gateway never pass.

If the gateway process dies the table stays: allow-only devices keep reaching only
addresses already in the sets, and DNS and unknown flows hit a closed local port
(fail closed). ``wxnet gate stop`` (or a clean exit) deletes the table.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

from wxnet.gate.policy import ALLOW_ONLY, Device, Group, Policy

__all__ = [
    "MARK_BASE",
    "MARK_MASK",
    "MARK_PASS",
    "add_elements",
    "app_mark",
    "app_of_mark",
    "chain_names",
    "delete_table",
    "render",
    "set_name",
]

#: Conntrack marks: the high 16 bits say "wxnet decided", the low 16 bits which way.
MARK_BASE = 0x57580000  # "WX"
MARK_MASK = 0xFFFF0000
MARK_PASS = MARK_BASE | 0xFFFE


def _ident(app: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", app)


def set_name(app: str, family: int) -> str:
    """Name of the address set of ``app`` for IP version ``family`` (4 or 6)."""
    return f"app_{_ident(app)}_{family}"


def policy_apps(policy: Policy) -> list[str]:
    """Every app any group refers to, in a stable order (their mark indexes)."""
    return sorted({a for g in policy.groups.values() for a in g.effective_apps})


def app_mark(policy: Policy, app: str) -> int:
    return MARK_BASE | (policy_apps(policy).index(app) + 1)


def app_of_mark(policy: Policy, mark: int) -> str | None:
    """Inverse of :func:`app_mark` ("pass" for :data:`MARK_PASS`, None: not ours)."""
    if mark & MARK_MASK != MARK_BASE:
        return None
    if mark == MARK_PASS:
        return "pass"
    apps = policy_apps(policy)
    i = (mark & 0xFFFF) - 1
    return apps[i] if 0 <= i < len(apps) else None


def _set_list(items: Iterable[int | str]) -> str:
    values = [str(i) for i in items]
    return values[0] if len(values) == 1 else "{ " + ", ".join(values) + " }"


def _quoted(names: Sequence[str]) -> str:
    return _set_list(f'"{n}"' for n in names)


def chain_names(policy: Policy) -> list[str]:
    names = ["dstnat", "forward"]
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


def _nat_group(policy: Policy, group: Group) -> list[str]:
    s = policy.settings
    out: list[str] = []
    if s.foreign_dns == "redirect":
        out.append(f"meta l4proto {{ tcp, udp }} th dport 53 redirect to :{s.dns_port}")
    elif s.dns_port != 53:
        to_gateway = "fib daddr type local meta l4proto { tcp, udp } th dport 53"
        out.append(f"{to_gateway} redirect to :{s.dns_port}")
    out.append("fib daddr type local return")
    inspect_ports: set[int] = set()
    for app, tcp, _udp in _app_ports(policy, group):
        for fam, ipf in ((4, "ip"), (6, "ip6")):
            if group.mode == ALLOW_ONLY:
                if tcp:
                    out.append(
                        f"{ipf} daddr @{set_name(app, fam)} tcp dport {_set_list(tcp)} return"
                    )
            else:
                out.append(f"{ipf} daddr @{set_name(app, fam)} return")
        inspect_ports.update(tcp)
    if group.mode != ALLOW_ONLY:
        out.append("ip daddr @pass_4 return")
        out.append("ip6 daddr @pass_6 return")
    inspect_ports.discard(53)
    if inspect_ports:
        out.append(f"tcp dport {_set_list(sorted(inspect_ports))} redirect to :{s.inspector_port}")
    return out


def _fwd_group(policy: Policy, group: Group) -> list[str]:
    s = policy.settings
    out = [
        "tcp dport 853 reject with tcp reset",
        "meta l4proto { tcp, udp } th dport 53 reject",
    ]
    if s.block_quic:
        out.append("udp dport 443 reject")
    if group.mode == ALLOW_ONLY:
        for app, tcp, udp in _app_ports(policy, group):
            mark = f"0x{app_mark(policy, app):08x}"
            for fam, ipf in ((4, "ip"), (6, "ip6")):
                name = set_name(app, fam)
                if tcp:
                    out.append(
                        f"{ipf} daddr @{name} tcp dport {_set_list(tcp)} ct mark set {mark} accept"
                    )
                if udp:
                    out.append(
                        f"{ipf} daddr @{name} udp dport {_set_list(udp)} ct mark set {mark} accept"
                    )
        out.append("meta l4proto tcp reject with tcp reset")
        out.append("reject with icmpx admin-prohibited")
    else:
        for app, _tcp, _udp in _app_ports(policy, group):
            for fam, ipf in ((4, "ip"), (6, "ip6")):
                name = set_name(app, fam)
                out.append(f"{ipf} daddr @{name} meta l4proto tcp reject with tcp reset")
                out.append(f"{ipf} daddr @{name} reject with icmpx admin-prohibited")
        out.append(f"ct mark set 0x{MARK_PASS:08x} accept")
    return out


def _chain(name: str, rules: list[str], hook: str | None = None) -> list[str]:
    out = [f"\tchain {name} {{"]
    if hook:
        out.append(f"\t\t{hook}")
    out += [f"\t\t{r}" for r in rules]
    out.append("\t}")
    return out


def render(policy: Policy, active: frozenset[str], fresh: bool = True) -> str:
    """The ``nft -f`` script that installs the policy with ``active`` groups enforced.

    ``fresh``: replace any table of that name (sets start empty). Otherwise the table
    must already hold this policy's chains: they are flushed and refilled in the same
    transaction, and the address sets keep their elements (schedule changes).
    """
    s = policy.settings
    t = s.table
    head = [f"table inet {t}"]
    if fresh:
        head.append(f"delete table inet {t}")
    else:
        head += [f"flush chain inet {t} {c}" for c in chain_names(policy)]
    body = [f"table inet {t} {{"]
    for app in policy_apps(policy):
        for fam in (4, 6):
            body.append(
                f"\tset {set_name(app, fam)} {{ type ipv{fam}_addr; flags timeout; "
                f"timeout {s.min_set_timeout}s; }}"
            )
    for fam in (4, 6):
        body.append(
            f"\tset pass_{fam} {{ type ipv{fam}_addr; flags timeout; timeout {s.pass_timeout}s; }}"
        )
    lan = f"iifname != {_quoted(s.lan)} return"
    body += _chain(
        "dstnat",
        [lan, *_dispatch(policy, active, "nat")],
        "type nat hook prerouting priority dstnat; policy accept;",
    )
    cached = f"ct mark & 0x{MARK_MASK:08x} == 0x{MARK_BASE:08x} accept"
    body += _chain(
        "forward",
        [cached, lan, *_dispatch(policy, active, "fwd")],
        "type filter hook forward priority filter; policy accept;",
    )
    for name, group in policy.groups.items():
        body += _chain(f"nat_{_ident(name)}", _nat_group(policy, group))
        body += _chain(f"fwd_{_ident(name)}", _fwd_group(policy, group))
    body.append("}")
    return "\n".join(head + body) + "\n"


def delete_table(table: str) -> str:
    """Script that removes the table if present (no error when it is not)."""
    return f"table inet {table}\ndelete table inet {table}\n"


def add_elements(table: str, elements: Iterable[tuple[str, str, int]], verb: str = "add") -> str:
    """Script adding (``verb="add"``) or deleting (``"delete"``) ``(app or "pass", address,
    timeout seconds)`` elements in the sets."""
    by_set: dict[str, list[str]] = {}
    for app, address, timeout in elements:
        ip = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        name = f"pass_{ip.version}" if app == "pass" else set_name(app, ip.version)
        item = f"{ip} timeout {max(1, int(timeout))}s" if verb == "add" else str(ip)
        by_set.setdefault(name, []).append(item)
    return "".join(
        f"{verb} element inet {table} {name} {{ {', '.join(items)} }}\n"
        for name, items in sorted(by_set.items())
    )
