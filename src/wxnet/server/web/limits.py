"""Rate limits and fair caps for what anyone may ask of the web side without logging in
(``/jslogin``, ``/qrcode``): pure policies, time passed in, no I/O.

They are kept apart from where QR logins and sessions are stored
(:mod:`wxnet.server.web.login`): the API asks these policies *whether* and *whom to
evict*, then tells the storage.

- :class:`RateLimiter`: a token bucket per client address (IPv6 by its /64, where one
  host usually holds a whole prefix). The table of buckets is bounded; the least recently
  used address is forgotten first (a forgotten address starts again with a full bucket,
  which is no worse than a new one).
- :class:`FairPending`: who holds how many pending QR logins. An address may hold at most
  ``per_address``; when the global cap is reached the oldest login of the address holding
  the most is evicted, so a flood can only push out its own logins first and a new
  browser always gets a QR code.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["FairPending", "RateLimiter", "address_key"]


def address_key(peer: str) -> str:
    """The unit a limit applies to: an IPv4 address, or the /64 of an IPv6 address."""
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return peer[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """``burst`` requests at once, then ``rate`` per second, per address.

    Args:
        rate: tokens added per second.
        burst: bucket size (and the start value of a new address).
        max_keys: addresses remembered at once.
    """

    def __init__(self, rate: float, burst: float, max_keys: int = 65_536) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.refused = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: str, now: float) -> bool:
        """Take one token for ``key``; False (and nothing taken) if its bucket is empty."""
        b = self._buckets.get(key)
        if b is None:
            b = _Bucket(self.burst, now)
            self._buckets[key] = b
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            b.tokens = min(self.burst, b.tokens + max(0.0, now - b.stamp) * self.rate)
            b.stamp = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return True
        self.refused += 1
        return False

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` has a token again (0 if it has one)."""
        b = self._buckets.get(key)
        if b is None or b.tokens >= 1.0 or self.rate <= 0:
            return 0.0
        return (1.0 - b.tokens) / self.rate


class FairPending:
    """Which address holds which pending item (uuids of QR logins), in creation order.

    Args:
        limit: items held in total.
        per_address: items one address may hold.
    """

    def __init__(self, limit: int, per_address: int) -> None:
        self.limit = limit
        self.per_address = max(1, per_address)
        self._owner: dict[str, str] = {}
        self._by_addr: dict[str, OrderedDict[str, None]] = {}
        # _levels[n]: the addresses holding n items (n >= 1), so that the heaviest
        # holder is found in O(per_address), not by a scan of every address.
        self._levels: list[dict[str, None]] = [{} for _ in range(self.per_address + 2)]
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._owner)

    def held_by(self, addr: str) -> int:
        return len(self._by_addr.get(addr, ()))

    def make_room(self, addr: str) -> list[str]:
        """Items to evict before ``addr`` adds one: its own oldest if it is at its cap,
        else, if the total is at the cap, the oldest of the address that holds most."""
        out: list[str] = []
        while self.held_by(addr) >= self.per_address:
            out.append(self._pop_oldest(addr))
        while len(self._owner) >= self.limit and self._owner:
            level = next(n for n in range(len(self._levels) - 1, 0, -1) if self._levels[n])
            out.append(self._pop_oldest(next(iter(self._levels[level]))))
        self.evicted += len(out)
        return out

    def add(self, item: str, addr: str) -> None:
        if item in self._owner:
            return
        held = self._by_addr.setdefault(addr, OrderedDict())
        self._move(addr, len(held), len(held) + 1)
        held[item] = None
        self._owner[item] = addr

    def discard(self, item: str) -> None:
        addr = self._owner.pop(item, None)
        if addr is None:
            return
        held = self._by_addr[addr]
        self._move(addr, len(held), len(held) - 1)
        del held[item]
        if not held:
            del self._by_addr[addr]

    def _pop_oldest(self, addr: str) -> str:
        held = self._by_addr[addr]
        item = next(iter(held))
        self.discard(item)
        return item

    def _move(self, addr: str, old: int, new: int) -> None:
        top = len(self._levels) - 1
        if old:
            self._levels[min(old, top)].pop(addr, None)
        if new:
            self._levels[min(new, top)][addr] = None
