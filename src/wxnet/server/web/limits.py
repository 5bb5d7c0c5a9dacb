"""Rate limits for what anyone may ask of the web side without logging in
(``/jslogin``, ``/qrcode``): pure policies, time passed in, no I/O. With several
processes the same rule is counted in Redis (:mod:`wxnet.server.ratelimit`); the fair
caps on pending QR logins are counted by the store (:mod:`wxnet.sync.shared`).

- :class:`RateLimiter`: a token bucket per client address (IPv6 by its /64, where one
  host usually holds a whole prefix). The table of buckets is bounded; the least recently
  used address is forgotten first (a forgotten address starts again with a full bucket,
  which is no worse than a new one).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["RateLimiter", "address_key"]


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

    def take(self, key: str, now: float) -> float:
        """:meth:`allow` as a wait: 0.0 if a token was taken, else :meth:`retry_after`
        (at least a millisecond: a refusal is never 0)."""
        return 0.0 if self.allow(key, now) else max(self.retry_after(key), 1e-3)

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` has a token again (0 if it has one)."""
        b = self._buckets.get(key)
        if b is None or b.tokens >= 1.0 or self.rate <= 0:
            return 0.0
        return (1.0 - b.tokens) / self.rate
