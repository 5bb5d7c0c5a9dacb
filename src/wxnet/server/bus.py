"""The notify bus between server processes and nodes: Redis pub/sub, per account shard.

An account's news (``{uin: selector bits}``, after a commit) is published on the channel
of its shard, ``wxnet:n:<uin mod shards>``. A process subscribes only to the shards of
the accounts it holds (a long link, a pending poll), so no process follows every event
of the system: the work per event is bounded by the accounts involved.

The bus is a hint, never the data: messages are in the store before anything is
published. A lost bus message (Redis restarting, a reconnect) costs a delay, not a
message: the client's next heartbeat or poll syncs from the store. While Redis is away
publishes are dropped (logged, counted) and the reader reconnects with backoff,
subscribing again to every held shard.

Logouts (and sessions evicted by the per-account cap) go on one channel every process
follows, ``wxnet:end``: any process may have cached the session, not only those holding
the account's links. They are rare (one per login, not per message), so following them
all costs nothing per message. A process that hears one drops the cached session and
closes the session's long links; a lost one is caught by the store at the process's
next start (the session row is gone), and a client's next login replaces it anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from wxnet.proto.errors import MMError, MMRet

__all__ = ["ENDS", "LOGINS", "BusUnavailable", "RedisBus"]

#: The channel of ended sessions (every process follows it).
ENDS = "wxnet:end"
#: The channel of changed QR logins (every process follows it: one message per scan,
#: approval or eviction, so that a login poll held by any process wakes).
LOGINS = "wxnet:qr"

log = logging.getLogger("wxnet.bus")


class BusUnavailable(MMError):
    def __init__(self, detail: str) -> None:
        super().__init__(MMRet.ERR_SYS, f"the notify bus is unavailable ({detail})")


class RedisBus:
    """Args:
    url: ``redis://host:port/db``.
    deliver: called on the event loop with news from other processes, for held
        accounts only.
    shards: channels accounts are spread over (``[bus] shards``).
    """

    def __init__(self, url: str, deliver: Callable[[dict[int, int]], None], shards: int) -> None:
        self.url = url
        self.deliver = deliver
        #: called with (uin, session key hash) of a session another process ended
        self.ended: Callable[[int, str], None] | None = None
        #: called with the key of a QR login another process changed
        self.login_changed: Callable[[str], None] | None = None
        self.shards = shards
        self.origin = secrets.token_hex(6)  # our own publishes come back: skip them
        self._own = f"{self.origin} ".encode()
        self._held: dict[int, int] = {}  # uin -> holders here
        self._shard_uins: dict[int, int] = {}  # shard -> held accounts in it
        self._redis: aioredis.Redis | None = None
        self._pubsub: aioredis.client.PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = {"published": 0, "received": 0, "dropped": 0, "reconnects": 0}
        self._confirmed: set[str] = set()  # channels Redis confirmed
        self._changed = asyncio.Event()
        self.up = asyncio.Event()  # connected and subscribed to every held shard
        self.down = asyncio.Event()  # the connection was lost and is not back yet

    def channel(self, shard: int) -> str:
        return f"wxnet:n:{shard}"

    @property
    def subscriptions(self) -> int:
        return len(self._shard_uins)

    async def until_subscribed(self, uin: int) -> None:
        """Return once Redis confirmed the subscription to ``uin``'s shard (tests, and
        anyone who must not miss the very next notify)."""
        ch = self.channel(uin % self.shards)
        while ch not in self._confirmed:
            self._changed.clear()
            await self._changed.wait()

    async def start(self) -> None:
        """Raises:
        BusUnavailable: Redis cannot be reached.
        """
        self._redis = aioredis.Redis.from_url(self.url, socket_connect_timeout=5)
        try:
            await self._redis.ping()
            await self._subscribe_all()
        except (RedisError, OSError) as exc:
            await self._redis.aclose()
            self._redis = None
            raise BusUnavailable(f"cannot connect to Redis: {exc}") from None
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for t in list(self._tasks):
            t.cancel()
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        if self._redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.aclose()

    # -- what this process holds ---------------------------------------------------------
    def hold(self, uin: int) -> None:
        n = self._held.get(uin, 0)
        self._held[uin] = n + 1
        if n == 0:
            shard = uin % self.shards
            k = self._shard_uins.get(shard, 0)
            self._shard_uins[shard] = k + 1
            if k == 0:
                self._spawn(self._sub(shard, True))

    def release(self, uin: int) -> None:
        n = self._held.get(uin, 0)
        if n <= 1:
            self._held.pop(uin, None)
            if n == 1:
                shard = uin % self.shards
                k = self._shard_uins.get(shard, 0)
                if k <= 1:
                    self._shard_uins.pop(shard, None)
                    self._spawn(self._sub(shard, False))
                else:
                    self._shard_uins[shard] = k - 1
        else:
            self._held[uin] = n - 1

    # -- publish ------------------------------------------------------------------------
    def publish(self, news: dict[int, int]) -> None:
        """Tell the other processes (fire and forget: the data is already stored)."""
        by_shard: dict[int, list[str]] = {}
        for uin, sel in news.items():
            by_shard.setdefault(uin % self.shards, []).append(f"{uin}:{sel}")
        if by_shard:
            self._spawn(self._publish(by_shard))

    async def _publish(self, by_shard: dict[int, list[str]]) -> None:
        if self._redis is None:
            return
        for attempt in (1, 2):  # a pooled connection may be stale after a Redis restart
            try:
                async with self._redis.pipeline(transaction=False) as p:
                    for shard, parts in by_shard.items():
                        p.publish(self.channel(shard), f"{self.origin} {' '.join(parts)}")
                    await p.execute()
                self.stats["published"] += len(by_shard)
                return
            except (RedisError, OSError) as exc:
                if attempt == 2:
                    self.stats["dropped"] += len(by_shard)
                    log.warning("bus publish dropped (clients sync on their next poll): %s", exc)

    def publish_end(self, uin: int, key_hash: str) -> None:
        """Tell every process that a session ended (logout, eviction)."""
        self._spawn(self._publish_end(f"{self.origin} {uin}:{key_hash}"))

    def publish_login(self, key: str) -> None:
        """Tell every process that QR login ``key`` changed (its polls wake)."""
        self._spawn(self._publish_end(f"{self.origin} {key}", LOGINS))

    async def _publish_end(self, text: str, channel: str = ENDS) -> None:
        if self._redis is None:
            return
        for attempt in (1, 2):
            try:
                await self._redis.publish(channel, text)
                self.stats["published"] += 1
                return
            except (RedisError, OSError) as exc:
                if attempt == 2:
                    self.stats["dropped"] += 1
                    log.warning("bus: session end not published: %s", exc)

    # -- subscribe and read --------------------------------------------------------------
    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sub(self, shard: int, on: bool) -> None:
        ps = self._pubsub
        if ps is None:
            return  # the reader subscribes to every held shard when it reconnects
        try:
            if on:
                await ps.subscribe(self.channel(shard))
            elif shard not in self._shard_uins:
                await ps.unsubscribe(self.channel(shard))
        except (RedisError, OSError) as exc:
            log.warning("bus subscription change failed (retried on reconnect): %s", exc)

    async def _subscribe_all(self) -> None:
        assert self._redis is not None
        ps = self._redis.pubsub()
        try:
            await ps.subscribe(
                f"wxnet:p:{self.origin}",
                ENDS,
                LOGINS,
                *(self.channel(s) for s in self._shard_uins),
            )
        except BaseException:
            with contextlib.suppress(RedisError, OSError):
                await ps.aclose()  # type: ignore[no-untyped-call]
            raise
        self._pubsub = ps

    async def _read_loop(self) -> None:
        backoff = 0.1
        while True:
            try:
                if self._pubsub is None:
                    await self._subscribe_all()
                    self.stats["reconnects"] += 1
                    log.info("bus reconnected")
                backoff = 0.1
                assert self._pubsub is not None
                self.down.clear()
                self.up.set()
                async for msg in self._pubsub.listen():
                    kind = msg.get("type")
                    if kind == "message":
                        ch = msg["channel"]
                        if ch in (ENDS, ENDS.encode()):
                            self._on_end(msg["data"])
                        elif ch in (LOGINS, LOGINS.encode()):
                            self._on_login(msg["data"])
                        else:
                            self._on_message(msg["data"])
                    elif kind in ("subscribe", "unsubscribe"):
                        ch = msg["channel"]
                        ch = ch.decode() if isinstance(ch, bytes) else str(ch)
                        if kind == "subscribe":
                            self._confirmed.add(ch)
                        else:
                            self._confirmed.discard(ch)
                        self._changed.set()
            except (RedisError, OSError) as exc:
                log.warning("bus connection lost: %s", exc)
            ps, self._pubsub = self._pubsub, None
            self._confirmed.clear()
            self.up.clear()
            self.down.set()
            if ps is not None:
                with contextlib.suppress(RedisError, OSError):
                    await ps.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(backoff)  # reconnect backoff, not a wait for an event
            backoff = min(backoff * 2, 5.0)

    def _on_end(self, data: bytes | str) -> None:
        text = data.decode() if isinstance(data, bytes) else data
        origin, _, rest = text.partition(" ")
        u, _, key_hash = rest.partition(":")
        if origin == self.origin or not u.isdigit() or self.ended is None:
            return
        self.stats["received"] += 1
        self.ended(int(u), key_hash)

    def _on_login(self, data: bytes | str) -> None:
        text = data.decode() if isinstance(data, bytes) else data
        origin, _, key = text.partition(" ")
        if origin != self.origin and key and self.login_changed is not None:
            self.stats["received"] += 1
            self.login_changed(key)

    def _on_message(self, data: bytes | str) -> None:
        raw = data if isinstance(data, bytes) else data.encode()
        if raw.startswith(self._own):
            return  # our own publish, back from a shard we follow: nothing to decode
        text = raw.decode()
        _, _, rest = text.partition(" ")
        self.stats["received"] += 1
        news: dict[int, int] = {}
        for part in rest.split():
            u, _, s = part.partition(":")
            try:
                uin, sel = int(u), int(s)
            except ValueError:
                continue
            if uin in self._held:
                news[uin] = news.get(uin, 0) | sel
        if news:
            self.deliver(news)
