"""The plumbing of the shared store (:class:`wxnet.sync.pg_store.PostgresStore`): the pool, its
start and close, the group commit, accounts, sessions and web sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

from wxnet.proto.errors import MMError, MMRet
from wxnet.proto.synckey import KEY_MSG, SELECTOR_BITS
from wxnet.sync.logtail import LogTail
from wxnet.sync.pg_schema import DDL, ID_BLOCK, SCHEMA_VERSION
from wxnet.sync.schema import StoreTooNew
from wxnet.sync.sqlite_store import FIRST_MSG_ID
from wxnet.sync.store import (
    Account,
    Append,
    Changes,
    NewMessage,
    SessionRow,
    WebSessionRow,
    session_key_hash,
)

log = logging.getLogger("wxnet.pg")

#: A group never holds more than this many write jobs.
MAX_GROUP = 512
_SCHEMA_LOCK = 0x77786E6574  # advisory lock id while creating the schema
_KEYS = (1, 2, 3, 11)
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


@dataclass(slots=True)
class _Job:
    """One queued log write: messages of one sender, or plain appends."""

    future: asyncio.Future[Any]
    sender: int = 0
    msgs: Sequence[NewMessage] = ()
    now: int = 0
    appends: Sequence[Append] = ()
    ids: list[int] = field(default_factory=list)


class _Arrays:
    """The arguments of one ``wx_commit`` call, built job by job."""

    def __init__(self) -> None:
        self.m: list[list[Any]] = [[] for _ in range(7)]
        self.i_key: list[int] = []
        self.i_body: list[bytes] = []
        self.i_msg: list[int] = []
        self.f_item: list[int] = []
        self.f_uin: list[int] = []

    def message(self, mid: int, sender: int, m: NewMessage, now: int) -> int:
        for col, v in zip(
            self.m,
            (mid, sender, m.client_msg_id, m.to_user, m.msg_type, now, m.media),
            strict=True,
        ):
            col.append(v)
        return len(self.m[0])

    def item(self, key: int, body: bytes, uins: Sequence[int], msg: int = 0) -> None:
        self.i_key.append(key)
        self.i_body.append(body)
        self.i_msg.append(msg)
        idx = len(self.i_key)
        for u in uins:
            self.f_item.append(idx)
            self.f_uin.append(u)

    def args(self) -> tuple[Any, ...]:
        return (*self.m, self.i_key, self.i_body, self.i_msg, self.f_item, self.f_uin)


async def _keep_session(_conn: asyncpg.Connection[Any]) -> None:
    """The pool's reset of a released connection, which by default is one more round
    trip per use (``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``,
    11 % of a loaded server's samples): this store never changes a session's state (no
    SET, LISTEN, cursor or session-level advisory lock; its one advisory lock is
    transaction-scoped), so there is nothing to reset. An open transaction is still rolled
    back by asyncpg before this is called."""


def _changes(rows: Sequence[Any], arr: _Arrays, dup: Sequence[bool] = ()) -> Changes:
    """The heads and news ``wx_commit`` returned, and the entries it appended: their seqs
    are not sent back (that would be one more row per entry to send and decode) but follow
    from the heads, since ``wx_commit`` numbers a log's new entries old head + 1, + 2, ...
    in fan-out order. ``dup[i]``: message ``i + 1`` of the call was a duplicate (its item
    was not stored)."""
    ch = Changes()
    heads = ch.heads
    for r in rows:
        if r[0] == 1 and int(r[2]) in SELECTOR_BITS:  # not the sent log: no SyncKey key
            uin, key, seq = int(r[1]), int(r[2]), int(r[3])
            heads[(uin, key)] = seq
            ch.news[uin] = ch.news.get(uin, 0) | SELECTOR_BITS[key]
    if not heads:
        return ch
    i_key, i_body, i_msg = arr.i_key, arr.i_body, arr.i_msg
    fan: list[tuple[int, int, bytes]] = []
    count: dict[tuple[int, int], int] = {}
    for item, uin in zip(arr.f_item, arr.f_uin, strict=True):
        m = i_msg[item - 1]
        if (m and dup[m - 1]) or i_key[item - 1] not in SELECTOR_BITS:
            continue  # a duplicate's, or the sent log's (no SyncKey key: not published)
        hk = (uin, i_key[item - 1])
        count[hk] = count.get(hk, 0) + 1
        fan.append((uin, hk[1], i_body[item - 1]))
    nxt = {hk: heads[hk] - n for hk, n in count.items()}  # the heads before this call
    entries = ch.entries
    for uin, key, body in fan:
        seq = nxt[(uin, key)] + 1
        nxt[(uin, key)] = seq
        entries.append((uin, key, seq, body))
    return ch


class PostgresBase:
    """The set-up, plumbing, group commit, accounts and sessions of :class:`PostgresStore`
    (its arguments are documented there)."""

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
        self._queue: list[_Job] = []
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
        """Connect, create the schema if missing.

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
        self._enqueue(_Job(fut))  # groups commit in queue order
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
        arr = _Arrays()
        for ap in appends:
            arr.item(ap.key, ap.body, ap.uins)
        async with self._conn() as c, c.transaction():
            await fn(c)
            rows = await c.fetch(_COMMIT_SQL, *arr.args()) if appends else []
        ch = _changes(rows, arr)
        self._apply(ch)
        return ch

    # ---------------------------------------------------------------- group commit
    def _enqueue(self, job: _Job) -> None:
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

    async def _commit_group(self, group: list[_Job]) -> None:
        try:
            need = sum(len(j.msgs) for j in group if not j.ids)
            ids = await self._take_ids(need) if need else []
            arr = _Arrays()
            slots: list[tuple[_Job, int, int]] = []  # job, first message index, count
            for job in group:
                if job.msgs and not job.ids:
                    job.ids, ids = ids[: len(job.msgs)], ids[len(job.msgs) :]
                first = len(arr.m[0]) + 1
                for mid, m in zip(job.ids, job.msgs, strict=True):
                    idx = arr.message(mid, job.sender, m, job.now)
                    body = m.make_body(mid, job.now)
                    arr.item(KEY_MSG, body, m.recipients, idx)
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
        self._apply(_changes(rows, arr, [outcome[i + 1][2] for i in range(len(outcome))]))
        for job, first, count in slots:
            if not job.future.done():
                job.future.set_result([outcome[first + k] for k in range(count)])

    async def _run_commit(self, arr: _Arrays) -> list[Any]:
        for attempt in range(5):
            try:
                async with self._conn() as c:
                    return list(await c.fetch(_COMMIT_SQL, *arr.args()))
            except asyncpg.PostgresError as exc:
                if getattr(exc, "sqlstate", None) not in _RETRY or attempt == 4:
                    raise
                log.info("group commit retried: %s", exc)
        raise AssertionError("unreachable")

    # ---------------------------------------------------------------- accounts
    async def create_account(self, name: str, pw_hash: str, nick: str, now: int) -> int:
        async with self._conn() as c, c.transaction():
            try:
                uin = int(
                    await c.fetchval(
                        "INSERT INTO accounts (user_name, nick_name, pw_hash, created)"
                        " VALUES ($1,$2,$3,$4) RETURNING uin",
                        name,
                        nick,
                        pw_hash,
                        now,
                    )
                )
            except asyncpg.UniqueViolationError:
                raise MMError(MMRet.ERR_ARG, f"user {name!r} already exists") from None
            item = await c.fetchval(
                "INSERT INTO items (body) VALUES ($1) RETURNING id",
                self._profile_item(uin, name, nick),
            )
            await c.execute("INSERT INTO sync_log VALUES ($1, 1, 1, $2)", uin, item)
            await c.executemany(
                "INSERT INTO heads VALUES ($1,$2,$3)",
                [(uin, k, 1 if k == 1 else 0) for k in _KEYS],
            )
        return uin

    async def account_by_name(self, name: str) -> Account | None:
        r = await self._row(
            "SELECT uin, user_name, nick_name, pw_hash FROM accounts WHERE user_name=$1", name
        )
        return None if r is None else Account(int(r[0]), r[1], r[2], r[3])

    async def account_by_uin(self, uin: int) -> Account | None:
        r = await self._row(
            "SELECT uin, user_name, nick_name, pw_hash FROM accounts WHERE uin=$1", uin
        )
        return None if r is None else Account(int(r[0]), r[1], r[2], r[3])

    async def create_session(self, row: SessionRow, now: int) -> None:
        await self._execute(
            "INSERT INTO sessions VALUES ($1,$2,$3,$4,$5,$6,$7)",
            session_key_hash(row.sid),
            row.uin,
            row.device_id,
            row.device_name,
            row.kind,
            now,
            row.expires,
        )

    async def has_other_device(self, uin: int, device_id: str, now: int) -> bool:
        r = await self._row(
            "SELECT 1 FROM sessions WHERE uin=$1 AND device_id<>$2 AND expires>=$3 LIMIT 1",
            uin,
            device_id,
            now,
        )
        return r is not None

    async def session(self, sid: str) -> SessionRow | None:
        r = await self._row(
            "SELECT s.uin, a.user_name, s.device_id, s.device_name, s.kind, s.expires"
            " FROM sessions s JOIN accounts a ON a.uin=s.uin WHERE s.sid=$1",
            session_key_hash(sid),
        )
        return None if r is None else SessionRow(sid, int(r[0]), r[1], r[2], r[3], r[4], r[5])

    async def delete_session(self, sid: str) -> None:
        await self._execute("DELETE FROM sessions WHERE sid=$1", session_key_hash(sid))

    async def evict_sessions(self, uin: int, keep: int) -> list[str]:
        # ctid breaks ties of one second, as rowid does in SQLite; FOR UPDATE keeps two
        # processes evicting for one account from both counting the same rows.
        async with self._conn() as c, c.transaction():
            rows = await c.fetch(
                "SELECT sid FROM sessions WHERE uin=$1 ORDER BY created, ctid FOR UPDATE", uin
            )
            gone = [str(r[0]) for r in rows[: max(0, len(rows) - keep)]]
            if gone:
                await c.execute("DELETE FROM sessions WHERE sid = ANY($1::text[])", gone)
        return gone

    # ---------------------------------------------------------------- web sessions
    async def save_web_session(self, row: WebSessionRow) -> None:
        await self._execute(
            "INSERT INTO web_sessions VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)"
            " ON CONFLICT (key) DO UPDATE SET expires=excluded.expires, alive=excluded.alive,"
            " nick_name=excluded.nick_name",
            *row.values(),
        )

    async def web_session(self, key: str) -> WebSessionRow | None:
        r = await self._row("SELECT * FROM web_sessions WHERE key=$1", key)
        return None if r is None else WebSessionRow.from_row(r)

    async def drop_web_sessions(self, before: float) -> int:
        async with self._conn() as c:
            status = await c.execute("DELETE FROM web_sessions WHERE expires<$1", before)
        return int(status.split()[-1])


_COMMIT_SQL = "SELECT * FROM wx_commit($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)"
