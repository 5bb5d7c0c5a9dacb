"""Rate limits that every worker and node counts together: token buckets in Redis.

With ``[bus] kind = "redis"`` the per-address and per-account limits of the server
(``/jslogin``, ``/qrcode``, push logins, failed password logins) keep their counters in
Redis, so N processes allow what one would, not N times as much. Each check is one
``EVALSHA`` of a small script that refills and takes from the bucket atomically; a
bucket's key expires once it would be full again (a forgotten bucket starts full, as a
new one does), so Redis holds only the addresses and accounts that asked recently.

Without a bus there is one process and the buckets are in memory
(:class:`wxnet.server.web.limits.RateLimiter`, :class:`wxnet.sync.throttle.LoginThrottle`).

If Redis cannot be reached (or answers in more than ``TIMEOUT``), a check **fails open to
the per-process counters**: the process's own in-memory bucket decides, so limits hold
per process (N times looser with N processes, never unlimited), and the fallback is
counted in ``wxnet_shared_limits_fallback_total{limit}``. Refusing every login while
Redis restarts would turn a Redis outage into a login outage; the store and the messages
do not depend on Redis either (docs/scaling.md, "Failure behaviour").
"""

from __future__ import annotations

import logging
import math
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from wxnet.server.web.limits import RateLimiter
from wxnet.sync.throttle import LoginThrottle

__all__ = ["TIMEOUT", "SharedCounters", "SharedLoginThrottle", "SharedRateLimiter"]

log = logging.getLogger("wxnet.ratelimit")

#: Seconds a check waits for Redis before the process's own counter decides.
TIMEOUT = 0.5

# KEYS[1]: the bucket; ARGV: rate, burst, now, ttl. Returns {allowed, wait seconds}.
_BUCKET = """
local b = redis.call('HMGET', KEYS[1], 't', 's')
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens, stamp = tonumber(b[1]), tonumber(b[2])
if tokens == nil then tokens = burst; stamp = now end
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local ok = 0
if tokens >= 1 then tokens = tokens - 1; ok = 1 end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 's', tostring(now))
redis.call('EXPIRE', KEYS[1], ARGV[4])
local wait = 0
if ok == 0 and rate > 0 then wait = (1 - tokens) / rate end
return {ok, tostring(wait)}
"""

# Failed logins. KEYS: the failure set and block key of each throttle key; ARGV: now,
# window, then per key: its kind (a: per address, p: per account and address), the
# limit (per_address or free), base, max_backoff. Returns nothing.
_FAILED = """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 1, #KEYS, 2 do
  local j = 3 + (i - 1) / 2 * 4
  local kind, limit = ARGV[j], tonumber(ARGV[j + 1])
  local base, cap = tonumber(ARGV[j + 2]), tonumber(ARGV[j + 3])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  redis.call('ZADD', KEYS[i], now, tostring(now) .. ':' .. tostring(redis.call('ZCARD', KEYS[i])))
  redis.call('EXPIRE', KEYS[i], math.ceil(window) + 1)
  local n = redis.call('ZCARD', KEYS[i])
  local wait = 0
  if kind == 'a' then
    if n >= limit then wait = window end
  elseif n >= limit then
    wait = math.min(cap, base * 2 ^ (n - limit))
  end
  if wait > 0 then
    redis.call('SET', KEYS[i + 1], tostring(now + wait), 'PX', math.ceil(wait * 1000) + 1000)
  end
end
"""


class SharedCounters:
    """The Redis connection the shared limits use (``[bus] url``), and their fallback
    count by limit. Connects lazily; :meth:`close` on shutdown."""

    def __init__(self, url: str) -> None:
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT
        )
        self._bucket = self.client.register_script(_BUCKET)
        self._failed = self.client.register_script(_FAILED)
        #: checks decided by the per-process counter because Redis did not answer
        self.fallbacks: dict[str, float] = {}

    def fell_back(self, limit: str, exc: BaseException) -> None:
        n = self.fallbacks.get(limit, 0)
        self.fallbacks[limit] = n + 1
        if n == 0 or math.log2(n + 1).is_integer():  # 1st, 2nd, 4th, ...: not every time
            log.warning("shared limit %s counted per process (Redis: %s)", limit, exc)

    async def bucket(self, key: str, rate: float, burst: float, now: float) -> float:
        """Take a token from bucket ``key``: 0.0, or the seconds until one is there."""
        ttl = max(1, math.ceil(burst / rate) + 1) if rate > 0 else 86_400
        got: Any = await self._bucket(keys=[key], args=[rate, burst, now, ttl])
        return 0.0 if int(got[0]) else max(float(got[1]), 1e-3)

    async def failed(self, keys: list[str], args: list[Any]) -> None:
        """Record failed logins (the keys and arguments of the ``_FAILED`` script)."""
        await self._failed(keys=keys, args=args)

    async def close(self) -> None:
        try:
            await self.client.aclose()
        except (RedisError, OSError):
            pass


class SharedRateLimiter:
    """A token bucket per key (:class:`RateLimiter`'s rule) that every process shares
    when ``counters`` is set, else the process's own.

    Args:
        local: the in-memory bucket (alone without Redis; the fallback with it).
        name: the limit's name (Redis key prefix, metric label).
    """

    def __init__(self, local: RateLimiter, name: str) -> None:
        self.local = local
        self.name = name
        self.counters: SharedCounters | None = None

    async def take(self, key: str, now: float) -> float:
        """One request of ``key``: 0.0 if allowed, else the seconds to wait (nothing
        taken)."""
        c = self.counters
        if c is not None:
            try:
                return await c.bucket(
                    f"wxnet:rl:{self.name}:{key}", self.local.rate, self.local.burst, now
                )
            except (RedisError, OSError) as exc:
                c.fell_back(self.name, exc)
        return self.local.take(key, now)


class SharedLoginThrottle(LoginThrottle):
    """:class:`LoginThrottle`'s rule for failed password logins, counted in Redis when
    ``counters`` is set (else, and when Redis does not answer, in this process)."""

    def __init__(self, like: LoginThrottle, counters: SharedCounters | None = None) -> None:
        super().__init__(like.free, like.per_address, like.window, like.max_backoff, like.base)
        self.counters = counters

    def _shared(self, account: str, address: str) -> list[str]:
        return [f"wxnet:lt:{k}" for k in self.keys(account, address)]

    async def check(self, account: str, address: str, now: float) -> float:
        c = self.counters
        if c is None:
            return self.retry_after(account, address, now)
        try:
            blocks = await c.client.mget([k + ":b" for k in self._shared(account, address)])
        except (RedisError, OSError) as exc:
            c.fell_back("login", exc)
            return self.retry_after(account, address, now)
        wait = max((float(b) - now for b in blocks if b is not None), default=0.0)
        if wait > 0:
            self.throttled += 1
            return wait
        return 0.0

    async def record_failure(self, account: str, address: str, now: float) -> None:
        """Counted here too: this process's count is the fallback while Redis is away."""
        self.failed(account, address, now)
        c = self.counters
        if c is None:
            return
        keys: list[str] = []
        args: list[Any] = [now, self.window]
        for raw, k in zip(self.keys(account, address), self._shared(account, address),
                          strict=True):  # fmt: skip
            keys += [k, k + ":b"]
            per_address = raw.startswith("a:")
            args += ["a" if per_address else "p", self.per_address if per_address else self.free,
                     self.base, self.max_backoff]  # fmt: skip
        try:
            await c.failed(keys, args)
        except (RedisError, OSError) as exc:
            c.fell_back("login", exc)

    async def record_success(self, account: str, address: str) -> None:
        self.succeeded(account, address)
        c = self.counters
        if c is not None:
            k = self._shared(account, address)[0]
            try:
                await c.client.delete(k, k + ":b")
            except (RedisError, OSError) as exc:
                c.fell_back("login", exc)
