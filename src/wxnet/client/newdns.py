"""The choice of addresses (S9, S12, S14): DNS answers, the cached newgetdns list and
built-in addresses, best first.

Sans-IO: :func:`long_candidates` and :func:`short_candidates` take DNS answers, the
cached list and ``now``. The newgetdns document itself (its model and its one codec) is
:mod:`wxnet.proto.newgetdns`; its names are re-exported here for the SDK.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from wxnet.client.addresses import Address, AddressSource, distinct
from wxnet.proto.newgetdns import (
    MAX_DOCUMENT,
    BuiltinIP,
    DnsDomain,
    NewDns,
    NewDnsError,
    parse_newgetdns,
)

__all__ = [
    "MAX_DOCUMENT",
    "BuiltinIP",
    "CachedDns",
    "DnsDomain",
    "NewDns",
    "NewDnsError",
    "long_candidates",
    "parse_newdns",
    "short_candidates",
]

#: The client parses with the shared codec.
parse_newdns = parse_newgetdns


@dataclass(frozen=True, slots=True)
class CachedDns:
    """A newgetdns list and when it was fetched (``now`` units)."""

    dns: NewDns
    fetched_at: float

    def fresh(self, now: float) -> bool:
        return now < self.fetched_at + self.dns.ttl


def long_candidates(
    name: str,
    ports: Sequence[int],
    dns_answers: Mapping[str, Sequence[str]],
    cached: CachedDns | None,
    now: float,
    builtin: Iterable[tuple[str, int]] = (),
    extra_port: int | None = None,
) -> list[Address]:
    """Candidates for ``name``, best first: DNS answers for ``name`` on ``ports``, then
    the fresh cached newgetdns entries, then built-in addresses; the extra port (S14) on
    every host found is appended last. Long-link and short-link (HTTP) candidates are
    chosen alike (the short link has no extra port): :func:`short_candidates` is this."""
    out: list[Address] = []
    for ip in dns_answers.get(name, ()):
        out.extend(Address(ip, p, AddressSource.DNS) for p in ports)
    if cached is not None and cached.fresh(now):
        dom = cached.dns.domain(name)
        if dom is not None:
            for ip in dom.ips:
                out.extend(Address(ip, p, AddressSource.NEWDNS) for p in dom.ports or ports)
        for b in cached.dns.builtin:
            if b.name.lower() == name.lower():
                out.extend(Address(b.ip, p, AddressSource.BUILTIN) for p in b.ports or ports)
    out.extend(Address(h, p, AddressSource.BUILTIN) for h, p in builtin)
    if extra_port is not None:
        hosts = list(dict.fromkeys(a.host for a in out))
        out.extend(Address(h, extra_port, AddressSource.BUILTIN, extra=True) for h in hosts)
    return distinct(out)


#: Short-link (HTTP) candidates, in the same order as :func:`long_candidates`.
short_candidates = long_candidates
