"""Failed-login throttling that slows the attacker, not the account (issue 12).

Pure policy: time is passed in. Failures are counted per (account, address) and per
address, never per account alone, so a stranger guessing passwords from one address
cannot lock the owner out from another. Past ``free`` failures inside ``window``
seconds, that pair waits before it may try again: ``base`` seconds (1 s) after the
``free``-th failure,
then twice as long after each further one, up to ``max_backoff``. An address that
fails ``per_address`` times inside the window waits ``window`` seconds, whatever
account it tries.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["LoginThrottle"]

#: Buckets kept at most; past it the oldest are dropped (an attacker cycling through
#: names must not grow memory without bound).
MAX_BUCKETS = 100_000


@dataclass(slots=True)
class _Bucket:
    failures: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0


class LoginThrottle:
    def __init__(
        self,
        free: int,
        per_address: int,
        window: float,
        max_backoff: float = 900.0,
        base: float = 1.0,
    ) -> None:
        self.free = free
        self.base = base
        self.per_address = per_address
        self.window = window
        self.max_backoff = max_backoff
        self._buckets: dict[str, _Bucket] = {}
        self.throttled = 0  # attempts refused (for /metrics)

    @staticmethod
    def keys(account: str, address: str) -> list[str]:
        """The buckets an attempt counts in: (account, address), and the address."""
        return [f"p:{account}\0{address}", f"a:{address}"] if address else [f"p:{account}\0"]

    def _expire(self, b: _Bucket, now: float) -> None:
        while b.failures and b.failures[0] <= now - self.window:
            b.failures.popleft()

    def retry_after(self, account: str, address: str, now: float) -> float:
        """Seconds until ``address`` may try ``account`` again (0: it may now)."""
        wait = 0.0
        for key in self.keys(account, address):
            b = self._buckets.get(key)
            if b is None:
                continue
            self._expire(b, now)
            if b.blocked_until > now:
                wait = max(wait, b.blocked_until - now)
        if wait > 0:
            self.throttled += 1
        return wait

    def failed(self, account: str, address: str, now: float) -> None:
        """Record a failed attempt."""
        for key in self.keys(account, address):
            b = self._buckets.pop(key, None) or _Bucket()
            self._buckets[key] = b  # re-inserted: the dict's order is least recent first
            self._expire(b, now)
            b.failures.append(now)
            n = len(b.failures)
            if key.startswith("a:"):
                if n >= self.per_address:
                    b.blocked_until = now + self.window
            elif n >= self.free:
                b.blocked_until = now + min(self.max_backoff, self.base * 2.0 ** (n - self.free))
        while len(self._buckets) > MAX_BUCKETS:
            del self._buckets[next(iter(self._buckets))]

    def succeeded(self, account: str, address: str) -> None:
        """A correct password from this address: forget its failures on this account."""
        self._buckets.pop(self.keys(account, address)[0], None)

    # The engine awaits these: a subclass may count in a store every process shares
    # (wxnet.server.ratelimit.SharedLoginThrottle); here they are the methods above.
    async def check(self, account: str, address: str, now: float) -> float:
        """:meth:`retry_after`, awaited."""
        return self.retry_after(account, address, now)

    async def record_failure(self, account: str, address: str, now: float) -> None:
        """:meth:`failed`, awaited."""
        self.failed(account, address, now)

    async def record_success(self, account: str, address: str) -> None:
        """:meth:`succeeded`, awaited."""
        self.succeeded(account, address)
