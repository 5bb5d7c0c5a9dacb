"""Connection admission and client addresses: pure policy, no I/O.

The listeners (long link and HTTP) ask :class:`ConnectionLimiter` before they keep an
accepted socket, so one address cannot take every descriptor of the process (issue 12:
5,000 idle links, 900 slowloris sockets), and :func:`client_address` picks the address
that login throttling keys on when the server sits behind a reverse proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

__all__ = ["ConnectionLimiter", "TrustedProxies", "client_address"]


class ConnectionLimiter:
    """Counts open connections in total and per peer address.

    Args:
        total: most connections open at once (every listener together).
        per_address: most connections open at once from one address.

    Call :meth:`admit` when a connection arrives and, when it returns None,
    :meth:`release` when it goes.
    """

    __slots__ = ("_by_addr", "open", "per_address", "refused", "total")

    def __init__(self, total: int, per_address: int) -> None:
        self.total = total
        self.per_address = per_address
        self.open = 0
        self._by_addr: dict[str, int] = {}
        self.refused = {"total": 0, "address": 0}

    def admit(self, addr: str) -> str | None:
        """Count a new connection from ``addr``. Returns None when it is admitted,
        else the cap that refused it (``"total"`` or ``"address"``); a refused
        connection is not counted and must not be released."""
        if self.open >= self.total:
            self.refused["total"] += 1
            return "total"
        n = self._by_addr.get(addr, 0)
        if n >= self.per_address:
            self.refused["address"] += 1
            return "address"
        self._by_addr[addr] = n + 1
        self.open += 1
        return None

    def release(self, addr: str) -> None:
        n = self._by_addr.get(addr, 0)
        if n <= 0:
            return
        self.open -= 1
        if n == 1:
            del self._by_addr[addr]
        else:
            self._by_addr[addr] = n - 1

    def from_address(self, addr: str) -> int:
        return self._by_addr.get(addr, 0)


class TrustedProxies:
    """The reverse proxies whose ``X-Forwarded-For`` is believed (addresses or CIDR
    networks, e.g. ``["127.0.0.1", "10.0.0.0/8"]``).

    Raises:
        ValueError: an entry that is not an address or a network.
    """

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(e, strict=False) for e in entries]

    def __contains__(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def __bool__(self) -> bool:
        return bool(self.networks)


def client_address(peer: str, forwarded_for: Sequence[str], trusted: TrustedProxies) -> str:
    """The address of the client a request is from.

    ``peer`` is the TCP peer; ``forwarded_for`` the values of every ``X-Forwarded-For``
    header in order. The header is only believed when the peer is a trusted proxy, and
    then only as far as the chain goes through trusted proxies: the answer is the
    right-most address that is not one (a client can put anything on the left of what
    its own proxy appends, so the left-most entry proves nothing).
    """
    if not trusted or peer not in trusted:
        return peer
    hops = [h.strip() for value in forwarded_for for h in value.split(",")]
    hops = [h for h in hops if h]
    addr = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return addr  # garbage in the chain: stop at the last hop we can vouch for
        addr = hop
        if hop not in trusted:
            return hop
    return addr
