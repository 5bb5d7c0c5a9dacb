"""What admits a destination for a group: the gateway's in-process view (pure).

The kernel sets (:mod:`wxnet.gate.ruleset`) are the datapath; this is the same
knowledge where the inspector can ask it, with the attestation that gave it:

- ``dns``: the DNS filter's answer chain for an allowed name, asked by a device of the
  group (``cdn`` when the chain went through a name of no allowed app: such an address
  is never admitted by itself, only flows naming an allowed app pass);
- ``newgetdns``: a newgetdns answer read by the inspector from an address already
  admitted for the group;
- ``range``: the app's operator-owned ranges (signatures and ``[apps.NAME]``), for
  every group that allows the app.

Payload evidence never enters here. Time is passed in (``now``).
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict
from collections.abc import Iterable

from wxnet.gate.policy import ALLOW_ONLY, Policy

__all__ = ["Attestations", "normalise"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=65536)
def normalise(address: str) -> str | None:
    """The canonical text of an address (IPv4-mapped IPv6 as IPv4); None if invalid."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class Attestations:
    """(group, address) -> {(app, kind): expiry}, bounded (least recently used go)."""

    def __init__(self, policy: Policy, max_entries: int = 200_000) -> None:
        self.policy = policy
        self.max_entries = max_entries
        self._map: OrderedDict[tuple[str, str], dict[tuple[str, str], float]] = OrderedDict()
        self._ranges: dict[str, list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]]]
        self._ranges = {}
        for g in policy.groups.values():
            if g.mode != ALLOW_ONLY:
                continue
            rows = []
            for app in g.effective_apps:
                info = policy.catalog.get(app)
                for r in info.operator_ranges if info is not None else ():
                    rows.append((app, ipaddress.ip_network(r)))
            self._ranges[g.name] = rows

    def __len__(self) -> int:
        return len(self._map)

    def add(self, group: str, app: str, address: str, kind: str, until: float) -> None:
        addr = normalise(address)
        if addr is None:
            return
        key = (group, addr)
        entry = self._map.get(key)
        if entry is None:
            entry = self._map[key] = {}
            if len(self._map) > self.max_entries:
                self._map.popitem(last=False)
        else:
            self._map.move_to_end(key)
        entry[(app, kind)] = max(until, entry.get((app, kind), 0.0))

    def add_many(self, rows: Iterable[tuple[str, str, str, str, float]]) -> None:
        for group, app, address, kind, until in rows:
            self.add(group, app, address, kind, until)

    def lookup(self, group: str, address: str, now: float) -> list[tuple[str, str]]:
        """Unexpired (app, kind) that admit (or, kind ``cdn``, may admit) ``address`` for
        ``group``: admitting kinds first (dns, newgetdns, range), then ``cdn``."""
        addr = normalise(address)
        if addr is None:
            return []
        out: list[tuple[str, str]] = []
        entry = self._map.get((group, addr))
        if entry:
            live = {k: t for k, t in entry.items() if t > now}
            if len(live) != len(entry):
                if live:
                    self._map[(group, addr)] = live
                else:
                    del self._map[(group, addr)]
            out += sorted(live)
        ip = ipaddress.ip_address(addr)
        for app, net in self._ranges.get(group, ()):
            if ip.version == net.version and ip in net:
                out.append((app, "range"))
        order = {"dns": 0, "newgetdns": 1, "range": 2, "cdn": 3}
        return sorted(set(out), key=lambda ak: (order.get(ak[1], 9), ak[0]))
