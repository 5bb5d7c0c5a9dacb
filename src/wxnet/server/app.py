"""``wxnet serve``: the long-link listeners, the HTTP application and the engine in one
process. Tests start it in-process with :func:`start_server`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from wxnet.server.config import ServerConfig, store_description
from wxnet.server.dispatch import Dispatcher
from wxnet.server.http import make_app
from wxnet.server.httpguard import GuardedSite, HttpGuards
from wxnet.server.limits import ConnectionLimiter, TrustedProxies
from wxnet.server.longlink import Flusher, LongLink, session_tag
from wxnet.server.metrics import Metrics
from wxnet.server.notify import Notifier
from wxnet.server.probes import CpuWaits, GcPauses, LoopLag
from wxnet.sync.db import Database
from wxnet.sync.engine import Engine, profile_item
from wxnet.sync.sqlitemem import sqlite_memory_used
from wxnet.sync.store import Store

if TYPE_CHECKING:
    from wxnet.server.bus import RedisBus
    from wxnet.server.ratelimit import SharedCounters

__all__ = ["Server", "make_store", "start_server", "store_description"]

log = logging.getLogger("wxnet.server")


def make_store(config: ServerConfig) -> Store | None:
    """The configured store (None: the engine's embedded SQLite in ``data``)."""
    sc = config.store
    if sc.kind == "postgres":
        from wxnet.sync.pg_store import PostgresStore

        sync = config.sync
        return PostgresStore(
            sc.dsn,
            profile_item=profile_item,
            max_size=sc.pool_size,
            timeout=sc.timeout,
            tail_items=sync.tail_items,
            tail_bytes=sync.tail_bytes,
            tail_total_bytes=sync.tail_total_bytes,
        )
    return None


class Server:
    def __init__(self, config: ServerConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.notifier = Notifier(config.max_polls_per_session, config.max_polls_per_account)
        self.metrics = Metrics()
        self.engine = Engine(
            Path(config.data),
            config.sync,
            on_news=self.notifier.publish,
            clock=clock,
            store=make_store(config),
        )
        self.engine.on_entries = self.notifier.stage
        self.bus: RedisBus | None = None
        #: the rate limits every process counts together (Redis), with a bus
        self.shared_counters: SharedCounters | None = None
        if config.bus.kind == "redis":
            from wxnet.server.bus import RedisBus
            from wxnet.server.ratelimit import SharedCounters, SharedLoginThrottle

            self.shared_counters = SharedCounters(config.bus.url)
            self.engine.throttle = SharedLoginThrottle(self.engine.throttle, self.shared_counters)
            self.bus = RedisBus(config.bus.url, self.notifier.deliver, config.bus.shards)
            self.notifier.bus = self.bus
            self.notifier.remote_listeners.append(self.engine.forget)
            self.bus.ended = self._remote_session_ended
        self.engine.on_session_end.append(self._session_ended)
        if self.bus is not None:
            self.engine.on_session_end.append(self.bus.publish_end)
        #: one count of open sockets for every listener, so one address cannot take
        #: every descriptor (long links and HTTP alike)
        self.limiter = ConnectionLimiter(config.max_connections, config.max_connections_per_address)
        self.trusted_proxies = TrustedProxies(config.trusted_proxies)
        self.http_guards = HttpGuards(
            self.limiter,
            config.http_header_timeout,
            config.http_body_timeout,
            on_timeout=self.metrics.http_timeouts.inc,
            on_refused=self.metrics.connections_refused.inc,
        )
        self.dispatcher = Dispatcher(
            self.engine,
            self.notifier,
            self.metrics,
            config.synccheck_max_wait,
            config.max_field_chars,
            config.max_list_items,
        )
        #: admitted long links not bound to an account (not identified yet, or logged
        #: out), each with its identify deadline (None while not armed); a bound one is
        #: the notifier's instead (one container per idle link)
        self.unbound: dict[LongLink, asyncio.TimerHandle | None] = {}
        #: the time of the last idle sweep (start-up before the first): what a long link
        #: records as the time of its last read, one float shared by every link
        #: instead of one per link (``_sweep`` allows for the granularity)
        self.rx_stamp = self.loop.time()
        self.loop_lag = LoopLag(self.loop, config.loop_lag_interval)
        self.gc_pauses = GcPauses()
        self.cpu_waits = CpuWaits()
        self.flusher = Flusher(self.loop)
        self.tasks: set[asyncio.Task[None]] = set()
        self.app = make_app(self)
        self._long_servers: list[asyncio.Server] = []
        self._runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._upload_sweeper: asyncio.Task[None] | None = None
        self.long_port = 0
        self.extra_long_ports: tuple[int, ...] = ()
        self.http_port = 0
        self._register_gauges()
        self._register_counters()
        self._register_latency()

    def _register_gauges(self) -> None:
        """The gauges of /metrics: what is open, pending and committed now."""
        self.metrics.gauge(
            "wxnet_long_links",
            "Open long links.",
            lambda: len(self.unbound) + self.notifier.total_links,
        )
        self.metrics.gauge(
            "wxnet_identified_links",
            "Long links bound to a session.",
            lambda: self.notifier.total_links,
        )
        self.metrics.gauge(
            "wxnet_db_commits",
            "Group commits so far.",
            lambda: self.engine.store.statistics()["commits"],
        )
        self.metrics.gauge(
            "wxnet_db_writes",
            "Write jobs committed so far.",
            lambda: self.engine.store.statistics()["writes"],
        )
        for stat, what in (
            ("tail_hits", "Log reads answered from the in-memory log tail."),
            ("tail_misses", "Log reads that went to the database (older than the tail)."),
            (
                "tail_bytes",
                "Memory held by the in-memory log tail: item bodies and their overhead.",
            ),
            ("tail_logs", "Logs with entries in the in-memory log tail."),
            ("tail_trimmed", "Log-tail entries dropped because a device committed them."),
            ("tail_releases", "Times the log tail shrank and gave free memory back."),
        ):
            self.metrics.gauge(f"wxnet_sync_{stat}", what, self._store_stat(stat))
        self.metrics.gauge(
            "wxnet_engine_cache_entries",
            "Entries in the engine's and the store's in-memory caches, all together.",
            lambda: float(sum(len(c) for c in self.engine.caches().values())),
        )
        self.metrics.gauge(
            "wxnet_sqlite_memory_bytes",
            "Memory SQLite holds in this process (page caches, statements; NaN: unknown).",
            lambda: float("nan") if (m := sqlite_memory_used()) is None else float(m),
        )
        self.metrics.gauge(
            "wxnet_long_polls", "Pending long polls.", lambda: self.notifier.total_waiters
        )
        if self.bus is not None:
            bus = self.bus
            self.metrics.gauge(
                "wxnet_bus_subscriptions",
                "Account shards this process follows on the bus.",
                lambda: bus.subscriptions,
            )
            for key in ("published", "received", "dropped", "reconnects"):
                self.metrics.gauge(
                    f"wxnet_bus_{key}",
                    f"Bus messages {key} (reconnects: times the bus came back).",
                    lambda key=key: bus.stats[key],  # type: ignore[misc]
                )
        self.metrics.gauge(
            "wxnet_connections", "Open connections, every listener.", lambda: self.limiter.open
        )

    def _register_counters(self) -> None:
        """The counters of /metrics: the caps that refused something, by reason."""
        self.metrics.counter_fn(
            "wxnet_long_polls_limited_total",
            "Long polls cut short (per-session cap) or refused (per-account cap).",
            "scope",
            lambda: dict(self.notifier.polls_limited),
        )
        for name, help_, label, fn in self.engine.limit_counters():
            self.metrics.counter_fn(name, help_, label, fn)
        counters = self.shared_counters
        if counters is not None:
            self.metrics.counter_fn(
                "wxnet_shared_limits_fallback_total",
                "Rate-limit checks counted per process because Redis did not answer, by limit.",
                "limit",
                lambda: counters.fallbacks,
            )

        uploads = self.dispatcher.uploads
        self.metrics.counter_fn(
            "wxnet_upload_refused_total",
            "Mobile uploads refused by a quota (count, bytes) or the disk floor (disk).",
            "reason",
            lambda: uploads.refused,
        )
        self.metrics.gauge(
            "wxnet_uploads_expired",
            "Unfinished uploads deleted by expiry so far.",
            lambda: uploads.expired,
        )

    def _register_latency(self) -> None:
        """The histograms that say where a request waits inside the process."""
        m = self.metrics
        lag, pauses = self.loop_lag.timings, self.gc_pauses.timings
        m.histogram_fn(
            "wxnet_loop_lag_seconds",
            "How late the event loop ran a timer that was due (sampled every loop_lag_interval).",
            "",
            lambda: {"": lag},
        )
        m.histogram_fn(
            "wxnet_gc_pause_seconds",
            "Garbage-collector pauses, by generation.",
            "generation",
            lambda: pauses,
        )
        cpu = self.gc_pauses.cpu
        m.counter_fn(
            "wxnet_gc_cpu_seconds_total",
            "CPU time of the garbage collector's pauses, by generation.",
            "generation",
            lambda: {g: t.sum for g, t in cpu.items()},
        )
        m.counter_fn(
            "wxnet_cpu_wait_seconds_total",
            "Time this process's threads were ready to run but waited for a CPU (Linux),"
            " the event loop's thread apart from the others.",
            "thread",
            self.cpu_waits.seconds,
        )
        db = getattr(self.engine.store, "db", None)
        if not isinstance(db, Database):
            return  # PostgreSQL: no writer thread here
        for name, help_, series in (
            (
                "wxnet_db_commit_seconds",
                "The writer's group transactions, BEGIN to COMMIT (the fsync included).",
                lambda: {"": db.commit_times},
            ),
            (
                "wxnet_db_write_wait_seconds",
                "Write jobs (a send's among them), queued to resolved on the event loop.",
                lambda: {"": db.wait_times},
            ),
            (
                "wxnet_db_wake_seconds",
                "A group committed on the writer thread to its callback on the event loop.",
                lambda: {"": db.wake_times},
            ),
            (
                "wxnet_db_checkpoint_seconds",
                "WAL checkpoints on the reader thread ([sync] checkpoint_interval).",
                lambda: {"": db.checkpoint_times},
            ),
        ):
            m.histogram_fn(name, help_, "", series)
        m.gauge(
            "wxnet_db_checkpoints", "Background WAL checkpoints so far.", lambda: db.checkpoints
        )
        m.gauge(
            "wxnet_db_wal_pages",
            "Pages in the WAL at the last background checkpoint.",
            lambda: db.wal_pages,
        )

    def _session_ended(self, uin: int, key_hash: str) -> None:
        """A session was logged out (over any link) or evicted: its long links stop
        getting notifies and are closed."""
        tag = session_tag(key_hash)
        for sub in self.notifier.subscribers(uin):
            if isinstance(sub, LongLink) and sub.uin and sub.session_tag == tag:
                log.info("closing long link from %s: its session ended", sub.peer)
                sub.unbind()
                sub.close()

    def _remote_session_ended(self, uin: int, key_hash: str) -> None:
        """Another process logged a session out: it ends here too."""
        self.engine.drop_session(key_hash)
        self._session_ended(uin, key_hash)

    def _store_stat(self, name: str) -> Callable[[], float]:
        return lambda: float(self.engine.store.statistics().get(name, 0))

    async def start(self) -> None:
        cfg = self.config
        _raise_fd_limit(cfg.max_connections)
        await self.engine.start()
        if self.bus is not None:
            await self.bus.start()
        ctx = None
        if cfg.tls_cert:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        ports = []
        shared = cfg.workers > 1 or None  # SO_REUSEPORT: the other workers bind them too
        for port in (cfg.long_port, *cfg.extra_long_ports):
            srv = await self.loop.create_server(
                lambda: LongLink(self),
                cfg.host,
                port,
                ssl=ctx,
                reuse_address=True,
                reuse_port=shared,
                backlog=4096,
            )
            self._long_servers.append(srv)
            ports.append(srv.sockets[0].getsockname()[1])
        self.long_port, self.extra_long_ports = ports[0], tuple(ports[1:])
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=cfg.http_keepalive_timeout,
        )
        await self._runner.setup()
        site = GuardedSite(
            self._runner,
            cfg.host,
            cfg.http_port,
            self.http_guards,
            backlog=4096,
            reuse_port=cfg.workers > 1,
        )
        await site.start()
        self.http_port = site.port
        self.loop_lag.start()
        self.gc_pauses.start()
        self._sweeper = self.loop.create_task(self._sweep())
        self._upload_sweeper = self.loop.create_task(
            self.dispatcher.uploads.run_sweeper(min(60.0, cfg.sync.upload_ttl / 4))
        )
        log.info(
            "listening",
            extra={
                "data": {
                    "host": cfg.host,
                    "long_port": self.long_port,
                    "extra_long_ports": list(self.extra_long_ports),
                    "http_port": self.http_port,
                    "tls": bool(ctx),
                    "store": store_description(cfg),
                }
            },
        )

    def long_links(self) -> list[LongLink]:
        """Every admitted long link: the unbound ones and the notifier's."""
        bound = [lk for lk in self.notifier.every_link() if isinstance(lk, LongLink)]
        return [*self.unbound, *bound]

    async def _sweep(self) -> None:
        """Close long links silent for longer than idle_timeout (longer than the longest
        heartbeat, 580 s, plus the 8 s noop timeout and slack: docs/server.md, "Limits")."""
        timeout = self.config.idle_timeout
        interval = min(timeout / 4, 30.0)
        while True:
            await asyncio.sleep(interval)
            now = self.loop.time()
            # a link's last_rx is the stamp of the sweep before its last read (or of
            # start-up): it has been silent for longer than timeout only if it was
            # before now - timeout - interval (so never early; late by one interval)
            cutoff = now - timeout - interval
            self.rx_stamp = now
            for link in [lk for lk in self.long_links() if lk.last_rx < cutoff]:
                log.info("closing idle long link from %s", link.peer)
                link.close()

    async def close(self) -> None:
        """Stop accepting, close every link, let running requests finish, close the store."""
        for srv in self._long_servers:
            srv.close()
        self.loop_lag.stop()
        self.gc_pauses.stop()
        if self._upload_sweeper is not None:
            self._upload_sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._upload_sweeper
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for link in self.long_links():
            link.close()
        self.notifier.close()  # pending long polls answer now instead of at their timeout
        if self._runner is not None:
            await self._runner.cleanup()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=10)
        for srv in self._long_servers:
            await srv.wait_closed()
        if self.bus is not None:
            await self.bus.close()
        if self.shared_counters is not None:
            await self.shared_counters.close()
        await self.engine.aclose()


def _raise_fd_limit(max_connections: int) -> None:
    """Lift the soft descriptor limit to the hard one, and say so when the connection
    cap could still run the process out of descriptors (then /healthz and logins would
    fail before the cap bites)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and max_connections + 256 > soft:
        log.warning(
            "max_connections %d is close to the descriptor limit %d: lower it or raise"
            " the limit (ulimit -n, LimitNOFILE=)",
            max_connections,
            soft,
        )


async def start_server(config: ServerConfig, clock: Callable[[], float] = time.time) -> Server:
    server = Server(config, clock)
    try:
        await server.start()
    except BaseException:
        await server.close()
        raise
    return server
