"""The shared store: PostgreSQL through a pool of asyncpg connections.

Writes that grow logs in volume (sends, read receipts) go through a group commit: every
such write queued while the previous group was in flight goes into the next group, which
is one call of ``wx_commit`` (one round trip, one transaction; see ``pg_schema``). Each
write's future resolves only after its group committed, and the group's changes are
published first. Rare writes (accounts, sessions, contacts, rooms, revokes, uploads)
run in their own transaction on a pooled connection.

Several processes and nodes may share one database: sequences come from per-account
``heads`` rows locked in order (never a global lock), message ids in blocks from a
sequence. Nothing cached here outlives one event-loop turn except what cannot change
(account names), so a write by another process is seen by the next read.

When PostgreSQL cannot be reached every method raises ``MMError(ERR_SYS, ...)`` saying
so: a send is then answered with that error, never with an ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

from wxnet.proto.errors import MMError, MMRet
from wxnet.proto.synckey import SELECTOR_BITS
from wxnet.sync.pg_schema import DDL, ID_BLOCK, SCHEMA_VERSION
from wxnet.sync.schema import StoreTooNew
from wxnet.sync.sqlite_store import FIRST_MSG_ID
from wxnet.sync.store import (
    Account,
    Append,
    Changes,
    Item,
    MessageRow,
    NewMessage,
    RoomRow,
    SessionRow,
    WebSessionRow,
    session_key_hash,
)

__all__ = ["MAX_GROUP", "PostgresStore", "StoreUnavailable", "connect_error"]

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


def _message(r: Any) -> MessageRow | None:
    if r is None:
        return None
    return MessageRow(int(r[0]), int(r[1]), r[2], r[3], int(r[4]), int(r[5]), bool(r[6]), r[7])


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


def _changes(rows: Sequence[Any]) -> Changes:
    ch = Changes()
    for r in rows:
        if r[0] == 1:
            uin, key, seq = int(r[1]), int(r[2]), int(r[3])
            ch.heads[(uin, key)] = seq
            ch.news[uin] = ch.news.get(uin, 0) | SELECTOR_BITS[key]
    return ch


def _web_row(r: Any) -> WebSessionRow:
    return WebSessionRow(
        r[0], int(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], float(r[8]), bool(r[9])
    )


class PostgresStore:
    """Args:
    dsn: a libpq connection URI (``postgresql://user@host:port/db``).
    profile_item: builds the first profile log item of a new account from
        (uin, name, nick).
    min_size, max_size: the connection pool's bounds.
    timeout: seconds for connecting and for any one statement.
    """

    def __init__(
        self,
        dsn: str,
        *,
        profile_item: Callable[[int, str, str], bytes],
        min_size: int = 2,
        max_size: int = 10,
        timeout: float = 10.0,
    ) -> None:
        self.dsn = dsn
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
        return {"commits": self.groups, "writes": self.writes}

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
        ch = _changes(rows)
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
                    arr.item(2, m.make_body(mid, job.now), m.recipients, idx)
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
        self._apply(_changes(rows))
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
            row.key, row.uin, row.user_name, row.nick_name, row.session_key, row.skey,
            row.pass_ticket, row.data_ticket, row.expires, row.alive,
        )  # fmt: skip

    async def web_session(self, key: str) -> WebSessionRow | None:
        r = await self._row("SELECT * FROM web_sessions WHERE key=$1", key)
        return None if r is None else _web_row(r)

    async def drop_web_sessions(self, before: float) -> int:
        async with self._conn() as c:
            status = await c.execute("DELETE FROM web_sessions WHERE expires<$1", before)
        return int(status.split()[-1])

    # ---------------------------------------------------------------- logs
    async def head(self, uin: int, key: int, *, fresh: bool = False) -> int:
        hs = self._heads.get(uin)
        if hs is None or fresh:
            rows = await self._fetch("SELECT key, seq FROM heads WHERE uin=$1", uin)
            hs = self._heads[uin] = {int(k): int(s) for k, s in rows}
            if not self._heads_clear:  # valid for this loop turn only
                self._heads_clear = True
                asyncio.get_running_loop().call_soon(self._clear_heads)
        return hs.get(key, 0)

    def _clear_heads(self) -> None:
        self._heads.clear()
        self._heads_clear = False

    async def read_log(
        self, uin: int, after: Sequence[tuple[int, int]], max_items: int, max_bytes: int
    ) -> tuple[list[Item], list[int]]:
        keys = [k for k, _ in after]
        rows = await self._fetch(
            "SELECT k.key, l.seq, i.body FROM unnest($2::int[], $3::bigint[])"
            " WITH ORDINALITY AS k(key, after, o) CROSS JOIN LATERAL"
            " (SELECT seq, item FROM sync_log WHERE uin=$1 AND key=k.key AND seq>k.after"
            "  ORDER BY seq LIMIT $4) l JOIN items i ON i.id=l.item ORDER BY k.o, l.seq",
            uin,
            keys,
            [s for _, s in after],
            max_items + 1,
        )
        by_key: dict[int, list[tuple[int, bytes]]] = {}
        for k, s, body in rows:
            by_key.setdefault(int(k), []).append((int(s), bytes(body)))
        items: list[Item] = []
        size = 0
        more: list[int] = []
        for key in keys:
            if len(items) >= max_items or size >= max_bytes:
                more.append(key)
                continue
            for s, body in by_key.get(key, ()):
                if len(items) >= max_items or (items and size + len(body) > max_bytes):
                    more.append(key)
                    break
                items.append((key, s, body))
                size += len(body)
        return items, more

    async def recent(self, uin: int, key: int, upto: int, limit: int) -> list[Item]:
        rows = await self._fetch(
            "SELECT l.seq, i.body FROM sync_log l JOIN items i ON i.id = l.item"
            " WHERE l.uin=$1 AND l.key=$2 AND l.seq<=$3 ORDER BY l.seq DESC LIMIT $4",
            uin,
            key,
            upto,
            limit,
        )
        return [(key, int(s), bytes(body)) for s, body in reversed(rows)]

    async def append(self, appends: Sequence[Append]) -> None:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._enqueue(_Job(fut, appends=appends))
        await fut

    def set_committed_key(self, uin: int, device_id: str, key: bytes, now: int) -> None:
        self._commit_queue[(uin, device_id)] = (key, now)
        if self._commit_task is None or self._commit_task.done():
            self._commit_task = asyncio.get_running_loop().create_task(self._flush_commits())

    async def _flush_commits(self) -> None:
        while self._commit_queue:
            queued, self._commit_queue = self._commit_queue, {}
            try:
                async with self._conn() as c:
                    await c.executemany(
                        "INSERT INTO devices VALUES ($1,$2,$3,$4) ON CONFLICT (uin, device_id)"
                        " DO UPDATE SET committed_key=excluded.committed_key,"
                        " updated=excluded.updated",
                        [(u, d, k, t) for (u, d), (k, t) in queued.items()],
                    )
            except (MMError, asyncpg.PostgresError) as exc:  # no answer depends on it
                log.warning("committed keys not saved: %s", exc)
                return

    async def committed_key(self, uin: int, device_id: str) -> bytes | None:
        r = await self._row(
            "SELECT committed_key FROM devices WHERE uin=$1 AND device_id=$2", uin, device_id
        )
        return None if r is None else bytes(r[0])

    # ---------------------------------------------------------------- contacts, rooms
    async def contacts_of(self, uin: int) -> set[str]:
        return {r[0] for r in await self._fetch("SELECT peer FROM contacts WHERE owner=$1", uin)}

    async def add_contacts(
        self, pairs: Sequence[tuple[int, str]], now: int, appends: Sequence[Append]
    ) -> None:
        async def w(c: _Conn) -> None:
            await c.executemany(
                "INSERT INTO contacts VALUES ($1,$2,$3) ON CONFLICT DO NOTHING",
                [(o, p, now) for o, p in pairs],
            )

        await self._appending_tx(w, appends)

    async def room(self, name: str) -> RoomRow | None:
        async with self._conn() as c:
            r = await c.fetchrow("SELECT topic, owner FROM chatrooms WHERE name=$1", name)
            if r is None:
                return None
            ms = await c.fetch(
                "SELECT member FROM room_members WHERE room=$1 ORDER BY member", name
            )
        return RoomRow(name, r[0], r[1], [m[0] for m in ms])

    async def rooms_of(self, user_name: str) -> list[str]:
        rows = await self._fetch(
            "SELECT room FROM room_members WHERE member=$1 ORDER BY room", user_name
        )
        return [r[0] for r in rows]

    async def save_room(
        self,
        room: RoomRow,
        added: Sequence[str],
        removed: Sequence[str],
        now: int,
        appends: Sequence[Append],
        *,
        create: bool,
    ) -> None:
        async def w(c: _Conn) -> None:
            if create:
                await c.execute(
                    "INSERT INTO chatrooms VALUES ($1,$2,$3,$4)",
                    room.name,
                    room.topic,
                    room.owner,
                    now,
                )
            else:
                await c.execute(
                    "UPDATE chatrooms SET topic=$1 WHERE name=$2", room.topic, room.name
                )
            if added:
                await c.executemany(
                    "INSERT INTO room_members VALUES ($1,$2) ON CONFLICT DO NOTHING",
                    [(room.name, n) for n in added],
                )
            if removed:
                await c.executemany(
                    "DELETE FROM room_members WHERE room=$1 AND member=$2",
                    [(room.name, n) for n in removed],
                )

        await self._appending_tx(w, appends)

    # ---------------------------------------------------------------- messages
    async def store_messages(
        self, sender: int, msgs: Sequence[NewMessage], now: int
    ) -> list[tuple[int, int, bool]]:
        if not msgs:
            return []
        fut: asyncio.Future[list[tuple[int, int, bool]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._enqueue(_Job(fut, sender=sender, msgs=msgs, now=now))
        return await fut

    async def message(self, msg_id: int) -> MessageRow | None:
        if not 0 < msg_id < 1 << 63:  # bigint is signed 64-bit: no such id
            return None
        return _message(
            await self._row(f"SELECT {_MSG_COLS} FROM messages WHERE msg_id=$1", msg_id)
        )

    async def message_by_client_id(self, sender: int, client_msg_id: str) -> MessageRow | None:
        return _message(
            await self._row(
                f"SELECT {_MSG_COLS} FROM messages WHERE sender=$1 AND client_msg_id=$2",
                sender,
                client_msg_id,
            )
        )

    async def revoke(self, msg_id: int, appends: Sequence[Append]) -> None:
        async def w(c: _Conn) -> None:
            await c.execute("UPDATE messages SET revoked=true WHERE msg_id=$1", msg_id)

        await self._appending_tx(w, appends)

    # ---------------------------------------------------------------- uploads
    async def upload_begin(
        self, owner: int, client_id: str, kind: str, to_user: str, total: int, now: int
    ) -> tuple[str, int, list[tuple[int, int]]]:
        async with self._conn() as c, c.transaction():
            await c.execute(
                "INSERT INTO uploads (owner, client_id, kind, to_user, total_len, ranges,"
                " created) VALUES ($1,$2,$3,$4,$5,'[]',$6) ON CONFLICT DO NOTHING",
                owner,
                client_id,
                kind,
                to_user,
                total,
                now,
            )
            r = await c.fetchrow(
                "SELECT to_user, total_len, ranges FROM uploads"
                " WHERE owner=$1 AND client_id=$2 AND kind=$3",
                owner,
                client_id,
                kind,
            )
        assert r is not None  # inserted above unless it existed
        return r[0], int(r[1]), [(a, b) for a, b in json.loads(r[2])]

    async def upload_save(
        self, owner: int, client_id: str, kind: str, ranges: list[tuple[int, int]]
    ) -> None:
        await self._execute(
            "UPDATE uploads SET ranges=$1 WHERE owner=$2 AND client_id=$3 AND kind=$4",
            json.dumps(ranges),
            owner,
            client_id,
            kind,
        )

    async def upload_drop(self, owner: int, client_id: str, kind: str) -> None:
        await self._execute(
            "DELETE FROM uploads WHERE owner=$1 AND client_id=$2 AND kind=$3",
            owner,
            client_id,
            kind,
        )

    async def uploads_of(self, owner: int) -> list[tuple[str, str, int]]:
        rows = await self._fetch(
            "SELECT client_id, kind, total_len FROM uploads WHERE owner=$1", owner
        )
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    async def uploads_older(self, created_before: int, limit: int) -> list[tuple[int, str, str]]:
        rows = await self._fetch(
            "SELECT owner, client_id, kind FROM uploads WHERE created < $1"
            " ORDER BY created LIMIT $2",
            created_before,
            limit,
        )
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]


_COMMIT_SQL = "SELECT * FROM wx_commit($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)"
