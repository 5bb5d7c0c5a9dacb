"""The fault model of the seed's experiment (S7) as data, and its nftables rules.

S7 cut traffic on the hotspot with iptables: UDP 53, TCP 80, TCP 8080, TCP 14000, all
TCP, and combinations. wxnet's lab does the same on its gateway namespace with nftables,
iptables' successor in today's kernels and distributions (``iptables`` on Debian 12 is
itself a front end to nf_tables). A :class:`Case` is a set of :class:`Fault`; its rules
live in one table of the lab's own (:func:`fault_ruleset`) that is replaced atomically
between cases.

Pure code: no I/O.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "ALL_FAULTS",
    "FAULTS",
    "BlockMode",
    "Case",
    "Fault",
    "FaultError",
    "Match",
    "default_matrix",
    "fault_ruleset",
    "parse_case",
    "parse_matrix",
    "short_matrix",
]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


class FaultError(ValueError):
    """A fault or case name, or a matrix spec, is not valid."""


class BlockMode(StrEnum):
    """How a blocked packet is treated.

    ``drop`` is what the seed's iptables ``-j DROP`` did: the phone only notices by
    timing out. ``reject`` answers at once (TCP reset, ICMP port unreachable), so a case
    fails fast; it is the default because it keeps the matrix short.
    """

    DROP = "drop"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Match:
    """What one fault rule matches: a transport protocol and a destination port
    (``None``: every port of that protocol)."""

    proto: str  # "tcp" or "udp"
    port: int | None = None

    def nft(self) -> str:
        if self.port is None:
            return f"meta l4proto {self.proto}"
        return f"{self.proto} dport {self.port}"


@dataclass(frozen=True, slots=True)
class Fault:
    """One cut the seed made on its hotspot (S7)."""

    name: str
    title: str
    matches: tuple[Match, ...]


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault("dns", "UDP 53 blocked (no DNS)", (Match("udp", 53),)),
        Fault("tcp80", "TCP 80 blocked (short link)", (Match("tcp", 80),)),
        Fault("tcp8080", "TCP 8080 blocked (long link)", (Match("tcp", 8080),)),
        Fault("tcp14000", "TCP 14000 blocked (extra port)", (Match("tcp", 14000),)),
        Fault("alltcp", "all TCP blocked", (Match("tcp"),)),
    )
}
#: The single faults of S7, in the seed's order.
ALL_FAULTS: tuple[Fault, ...] = tuple(FAULTS.values())
_ORDER = {name: i for i, name in enumerate(FAULTS)}


@dataclass(frozen=True, slots=True)
class Case:
    """One cell of the matrix: the faults applied together (none: the baseline)."""

    faults: tuple[Fault, ...] = ()

    def __post_init__(self) -> None:
        names = [f.name for f in self.faults]
        if len(set(names)) != len(names):
            raise FaultError(f"a case lists a fault twice: {'+'.join(names)}")
        ordered = tuple(sorted(self.faults, key=lambda f: (_ORDER.get(f.name, 99), f.name)))
        object.__setattr__(self, "faults", ordered)

    @property
    def name(self) -> str:
        """``none``, or the fault names joined by ``+`` in a fixed order."""
        return "+".join(f.name for f in self.faults) or "none"

    @property
    def title(self) -> str:
        return "; ".join(f.title for f in self.faults) or "no fault"

    def has(self, *names: str) -> bool:
        """True if every named fault is part of this case."""
        have = {f.name for f in self.faults}
        return all(n in have for n in names)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.faults)

    def blocks_tcp(self, port: int) -> bool:
        """True if a TCP connection to ``port`` cannot get through in this case."""
        return any(
            m.proto == "tcp" and m.port in (None, port) for f in self.faults for m in f.matches
        )

    def blocks_dns(self) -> bool:
        return any(
            m.proto == "udp" and m.port in (None, 53) for f in self.faults for m in f.matches
        )


def parse_case(text: str, faults: dict[str, Fault] | None = None) -> Case:
    """Parse ``none`` or ``NAME[+NAME...]`` (e.g. ``dns+tcp8080``).

    Raises:
        FaultError: an unknown fault name or a repeated one.
    """
    table = FAULTS if faults is None else faults
    text = text.strip().lower()
    if text in ("none", "", "baseline"):
        return Case()
    parts = [p.strip() for p in text.split("+")]
    unknown = [p for p in parts if p not in table]
    if unknown:
        known = ", ".join(table)
        raise FaultError(f"unknown fault {unknown[0]!r} in case {text!r} (known: {known})")
    return Case(tuple(table[p] for p in parts))


def default_matrix(faults: Sequence[Fault] = ALL_FAULTS, pairs: bool = True) -> list[Case]:
    """No fault, each single fault, and (``pairs``) every pair: the matrix of S7."""
    cases = [Case()] + [Case((f,)) for f in faults]
    if pairs:
        cases += [Case(pair) for pair in itertools.combinations(faults, 2)]
    return cases


def short_matrix() -> list[Case]:
    """The few cases CI runs: one per expectation (S9, S12, S13, S14)."""
    return [parse_case(t) for t in ("none", "dns", "tcp8080", "alltcp", "tcp80+tcp8080")]


def parse_matrix(specs: Iterable[str]) -> list[Case]:
    """Cases from user text: each item is a case (``dns+tcp80``) or a keyword:
    ``full`` (the default matrix), ``singles`` (none + each single fault), ``short``.
    Comma-separated items are allowed. Duplicates are dropped, order kept.

    Raises:
        FaultError: an unknown fault or keyword, or no case at all.
    """
    out: list[Case] = []
    seen: set[str] = set()
    for spec in specs:
        for item in spec.split(","):
            item = item.strip().lower()
            if not item:
                continue
            if item == "full":
                cases = default_matrix()
            elif item == "singles":
                cases = default_matrix(pairs=False)
            elif item == "short":
                cases = short_matrix()
            else:
                cases = [parse_case(item)]
            for case in cases:
                if case.name not in seen:
                    seen.add(case.name)
                    out.append(case)
    if not out:
        raise FaultError("the matrix is empty")
    return out


def fault_ruleset(
    table: str, lan_iface: str, case: Case, mode: BlockMode = BlockMode.REJECT
) -> str:
    """The ``nft -f`` script that makes ``case`` the gateway's only faults.

    The script first creates and deletes ``table`` (so it works whether or not the
    table exists), then defines it again: nft applies a script as one transaction, so
    the previous case's rules are replaced atomically. Only traffic arriving from the
    phone's side (``lan_iface``) is cut, as on the seed's hotspot. The chain hooks
    prerouting at priority -150, before any DNAT (-100): a fault cuts the traffic before
    anything else on the gateway sees it, also ``wxnet gate``'s redirects of DNS and of
    flows to its inspector (``wxnet lab --with-gate``).

    Raises:
        FaultError: a table or interface name nft would not accept.
    """
    if not _NAME.match(table):
        raise FaultError(f"bad nftables table name {table!r}")
    if not _IFNAME.match(lan_iface):
        raise FaultError(f"bad interface name {lan_iface!r}")
    lines = [
        f"add table inet {table}",
        f"delete table inet {table}",
        f"table inet {table} {{",
        "\tchain prerouting {",
        "\t\ttype filter hook prerouting priority -150; policy accept;",
    ]
    for fault in case.faults:
        for match in fault.matches:
            lines.append(
                f'\t\tiifname "{lan_iface}" {match.nft()} counter {_verdict(match, mode)}'
                f' comment "{fault.name}"'
            )
    lines += ["\t}", "}"]
    return "\n".join(lines) + "\n"


def _verdict(match: Match, mode: BlockMode) -> str:
    if mode is BlockMode.DROP:
        return "drop"
    if match.proto == "tcp":
        return "reject with tcp reset"
    return "reject with icmpx type port-unreachable"
