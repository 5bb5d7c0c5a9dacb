"""The plumbing of the shared store (:class:`wxnet.sync.pg_store.PostgresStore`): the pool, its
start (the schema, ``sync/pg_schema.py``) and close, and the group commit's writer (the
arguments and answer of its one ``wx_commit`` call are ``sync/pg_commit.py``). Accounts,
sessions and web sessions are ``sync/pg_accounts.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

from wxnet.proto.errors import MMError, MMRet
from wxnet.proto.synckey import KEY_MSG
from wxnet.sync.logtail import LogTail
from wxnet.sync.pg_commit import COMMIT_SQL, CommitArgs, Job, changes
from wxnet.sync.pg_schema import DDL, ID_BLOCK, SCHEMA_VERSION
from wxnet.sync.schema import StoreTooNew
from wxnet.sync.sqlite_store import FIRST_MSG_ID
from wxnet.sync.store import Append, Changes

log = logging.getLogger("wxnet.pg")

#: A group never holds more than this many write jobs.
MAX_GROUP = 512
_SCHEMA_LOCK = 0x77786E6574  # advisory lock id while creating the schema
_MSG_COLS = "msg_id, sender, client_msg_id, to_user, msg_type, create_time, revoked, media"
_RETRY = ("40P01", "40001")  # deadlock detected, serialization failure: run again

#: What "the engine is not there" looks like from asyncpg.
_DOWN: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.OperatorInterventionError,
)


_START_ERRORS: tuple[type[BaseException], ...] = (*_DOWN, asyncpg.PostgresError)
if TYPE_CHECKING:
    _Conn = PoolConnectionProxy[asyncpg.Record]


class StoreUnavailable(MMError):
    """PostgreSQL cannot be reached; nothing of the request was acknowledged."""

    def __init__(self, detail: str) -> None:
        super().__init__(MMRet.ERR_SYS, f"the store is unavailable ({detail}); retry later")


def connect_error(exc: BaseException) -> str:
    """A one-line description of why a connection failed."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


async def _keep_session(_conn: asyncpg.Connection[Any]) -> None:
    """The pool's reset of a released connection, which by default is one more round
    trip per use (``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``,
    11 % of a loaded server's samples): this store never changes a session's state (no
    SET, LISTEN, cursor or session-level advisory lock; its advisory locks are all
    transaction-scoped), so there is nothing to reset. An open transaction is still rolled
    back by asyncpg before this is called."""


class PostgresBase:
    """The set-up, plumbing and group commit of :class:`PostgresStore` (its arguments
    are documented there)."""

    def __init__(
        self,
        dsn: str,
        *,
        profile_item: Callable[[int, str, str], bytes],
        min_size: int = 2,
        max_size: int = 10,
        timeout: float = 10.0,
        tail_items: int = 32,
        tail_bytes: int = 16 * 1024,
        tail_total_bytes: int = 32 << 20,
    ) -> None:
        self.dsn = dsn
        self.tail = LogTail(tail_items, tail_bytes, tail_total_bytes)
        self._profile_item = profile_item
        self._min, self._max, self._timeout = min_size, max_size, timeout
        self._pool: asyncpg.Pool | None = None
        self._publish: Callable[[Changes], None] | None = None
        self._queue: list[Job] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._ids: list[int] = []  # the unused rest of this process's message-id block
        self._heads: dict[int, dict[int, int]] = {}  # this loop turn's head reads
        self._heads_clear = False
        self._commit_queue: dict[tuple[int, str], tuple[bytes, int]] = {}
        self._commit_task: asyncio.Task[None] | None = None
        self._closing = False
        self._schema_version = 0
        self.groups = 0
        self.writes = 0

    # ---------------------------------------------------------------- lifecycle
    async def start(self, publish: Callable[[Changes], None]) -> None:
        """Connect; create the schema if missing, or bring an older one to the current
        version (``pg_schema.DDL``, one transaction).

        Raises:
            StoreUnavailable: PostgreSQL cannot be reached or refuses us.
        """
        self._publish = publish
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self._min,
                max_size=self._max,
                timeout=self._timeout,
                command_timeout=self._timeout * 3,
                reset=_keep_session,
            )
        except _START_ERRORS as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {connect_error(exc)}") from None
        async with self._pool.acquire() as c, c.transaction():
            await c.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
            await c.execute(DDL)
            v = await c.fetchval("SELECT v FROM meta WHERE k='schema_version'")
            if v is None:
                await c.execute(
                    "INSERT INTO meta VALUES ('schema_version', $1)", str(SCHEMA_VERSION)
                )
                v = SCHEMA_VERSION
            elif int(v) > SCHEMA_VERSION:
                from wxnet import __version__

                raise StoreTooNew(
                    f"the store has schema version {v}, written by a newer wxnet; this "
                    f"wxnet {__version__} knows schema {SCHEMA_VERSION}: upgrade wxnet (the "
                    "store is left as it is)"
                )
            self._schema_version = int(v)
            # Stores written before keys were hashed hold them in plain text (a hash is
            # 64 hex digits, a key is not): hash them in place, the sessions stay valid.
            await c.execute(
                "UPDATE sessions SET sid=encode(sha256(convert_to(sid, 'UTF8')), 'hex')"
                " WHERE length(sid) <> 64"
            )
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    def close(self) -> None:
        """Stop the writer (queued jobs fail), close the pool. Synchronous for the
        engine's interface: the pool is closed from its own loop when one runs."""
        self._closing = True
        if self._writer is not None:
            self._writer.cancel()
        for job in self._queue:
            if not job.future.done():
                job.future.set_exception(StoreUnavailable("the store is closing"))
        self._queue.clear()
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

    async def aclose(self) -> None:
        """Finish queued writes, then close the pool gracefully."""
        if self._closing:
            return
        await self.flush()
        self._closing = True
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def flush(self) -> None:
        if self._writer is None or self._writer.done():
            return  # never started (or stopped): nothing is queued
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._enqueue(Job(fut))  # groups commit in queue order
        await fut
        task = self._commit_task
        if task is not None and not task.done():
            await asyncio.shield(task)

    def schema_version(self) -> int:
        return self._schema_version

    def statistics(self) -> dict[str, int]:
        return {
            "commits": self.groups,
            "writes": self.writes,
            "tail_hits": self.tail.hits,
            "tail_misses": self.tail.misses,
            "tail_bytes": self.tail.bytes,
            "tail_logs": len(self.tail),
            "tail_trimmed": self.tail.trimmed,
            "tail_releases": self.tail.releases,
        }

    # ---------------------------------------------------------------- plumbing
    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[_Conn]:
        if self._pool is None:
            raise StoreUnavailable("the store is closed")
        try:
            async with self._pool.acquire() as c:
                yield c
        except _DOWN as exc:
            raise StoreUnavailable(connect_error(exc)) from None

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self._conn() as c:
            return list(await c.fetch(sql, *args))

    async def _row(self, sql: str, *args: Any) -> Any:
        async with self._conn() as c:
            return await c.fetchrow(sql, *args)

    async def _execute(self, sql: str, *args: Any) -> None:
        async with self._conn() as c:
            await c.execute(sql, *args)

    def _apply(self, ch: Changes) -> None:
        if ch.entries:
            self.tail.add(ch.entries)
        for (uin, key), seq in ch.heads.items():
            hs = self._heads.get(uin)
            if hs is not None and seq > hs.get(key, 0):
                hs[key] = seq
        if ch.heads and self._publish is not None:
            self._publish(ch)

    async def _appending_tx(self, fn: Callable[[_Conn], Any], appends: Sequence[Append]) -> Changes:
        """Run ``fn`` and the appends in one transaction; publish after it commits."""
        arr = CommitArgs()
        for ap in appends:
            arr.item(ap.key, ap.body, ap.uins)
        async with self._conn() as c, c.transaction():
            await fn(c)
            rows = await c.fetch(COMMIT_SQL, *arr.args()) if appends else []
        ch = changes(rows, arr)
        self._apply(ch)
        return ch

    # ---------------------------------------------------------------- group commit
    def _enqueue(self, job: Job) -> None:
        if self._closing:
            raise StoreUnavailable("the store is closing")
        self._queue.append(job)
        self._wake.set()

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
                await self._commit_group(group)

    async def _take_ids(self, n: int) -> list[int]:
        while len(self._ids) < n:
            async with self._conn() as c:
                block = int(await c.fetchval("SELECT nextval('msg_id_blocks')"))
            start = FIRST_MSG_ID + block * ID_BLOCK
            self._ids.extend(range(start, start + ID_BLOCK))
        out, self._ids = self._ids[:n], self._ids[n:]
        return out

    async def _commit_group(self, group: list[Job]) -> None:
        try:
            need = sum(len(j.msgs) for j in group if not j.ids)
            ids = await self._take_ids(need) if need else []
            arr = CommitArgs()
            slots: list[tuple[Job, int, int]] = []  # job, first message index, count
            for job in group:
                if job.msgs and not job.ids:
                    job.ids, ids = ids[: len(job.msgs)], ids[len(job.msgs) :]
                first = len(arr.m[0]) + 1
                q = 0  # S17: asked by wx_commit when the sender is among the recipients
                for mid, m in zip(job.ids, job.msgs, strict=True):
                    idx = arr.message(mid, job.sender, m, job.now)
                    body = m.make_body(mid, job.now)
                    if job.device and not q and job.sender in m.recipients:
                        q = arr.question(job.sender, job.device, job.now)
                    arr.item(KEY_MSG, body, m.recipients, idx, job.sender, q)
                for ap in job.appends:
                    arr.item(ap.key, ap.body, ap.uins)
                slots.append((job, first, len(job.msgs)))
            rows = await self._run_commit(arr)
        except Exception as exc:
            err = exc if isinstance(exc, MMError) else StoreUnavailable(connect_error(exc))
            if not isinstance(exc, MMError):
                log.error("group commit failed: %s", connect_error(exc))
            for job in group:
                if not job.future.done():
                    job.future.set_exception(err)
            return
        self.groups += 1
        self.writes += len(group)
        outcome = {int(r[1]): (int(r[2]), int(r[3]), bool(r[4])) for r in rows if r[0] == 0}
        self._apply(changes(rows, arr, [outcome[i + 1][2] for i in range(len(outcome))]))
        for job, first, count in slots:
            if not job.future.done():
                job.future.set_result([outcome[first + k] for k in range(count)])

    async def _run_commit(self, arr: CommitArgs) -> list[Any]:
        for attempt in range(5):
            try:
                async with self._conn() as c:
                    return list(await c.fetch(COMMIT_SQL, *arr.args()))
            except asyncpg.PostgresError as exc:
                if getattr(exc, "sqlstate", None) not in _RETRY or attempt == 4:
                    raise
                log.info("group commit retried: %s", exc)
        raise AssertionError("unreachable")
