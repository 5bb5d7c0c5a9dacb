"""The plumbing of the embedded store (:class:`wxnet.sync.sqlite_store.SQLiteStore`): its set-up,
the writer-thread hand-over, the log append, accounts, sessions and web sessions.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from wxnet.proto.errors import MMError, MMRet
from wxnet.proto.synckey import KEY_PROFILE, SELECTOR_BITS
from wxnet.sync.cache import ActiveCache
from wxnet.sync.db import Database, check_integrity, insert_rows
from wxnet.sync.logtail import LogTail
from wxnet.sync.schema import init_schema
from wxnet.sync.store import (
    KEY_SENT,
    Account,
    Append,
    Changes,
    SessionRow,
    WebSessionRow,
    session_key_hash,
)

T = TypeVar("T")
FIRST_MSG_ID = 1_000_000_000
_MSG_COLS = "msg_id, sender, client_msg_id, to_user, msg_type, create_time, revoked, media"
_ITEM_SQL = "INSERT INTO items (body) VALUES (?)"
_LOG_HEAD = "INSERT INTO sync_log (uin, key, seq, item)"
_HEAD_SQL = "SELECT ?, ?, (SELECT MAX(seq) FROM sync_log WHERE uin=? AND key=?)"
#: The writer reads the heads it has not cached with one statement per this many logs
#: (a power of two: see _heads_sql).
_HEADS_CHUNK = 32


@functools.cache
def _heads_sql(n: int) -> str:
    """The statement that reads ``n`` log heads (``n`` a power of two up to
    :data:`_HEADS_CHUNK`): the writer pads a shorter list with its last log again, so
    its connection prepares and keeps (in its statement cache) at most six texts; one
    text per length, 1 to 50 unions, held 1.4 MB of prepared statements at 10,000
    accounts (docs/benchmarks.md, "Idle links")."""
    return " UNION ALL ".join([_HEAD_SQL] * n)


#: The event loop's cached heads: one list per account, the head of each served key
#: (those with a selector bit, at these positions; None: not cached), which newsync
#: and news read all of, in one cache lookup (a list of 4 is 88 bytes, where an entry
#: per log cost ~70 each); the sent log's head is never asked for there, nor cached.
_SERVED_SLOT: dict[int, int] = {k: i for i, k in enumerate(SELECTOR_BITS)}
#: The writer's cached heads: one list per account too, the head of each log the
#: store writes (the served keys', then the sent log's, at these positions; None: not
#: cached), so that it keeps as many accounts as the other per-account caches (with an
#: entry per log, 5 per account, it kept twice as many), and faster than an entry per
#: log keyed by (uin, key) or by ``uin << 32 | key``.
_W_SLOT: dict[int, int] = {**_SERVED_SLOT, KEY_SENT: len(_SERVED_SLOT)}


def insert_account(
    conn: sqlite3.Connection, name: str, pw_hash: str, nick: str, now: int, profile: bytes
) -> int:
    """Insert an account and its first profile item, inside the caller's transaction.

    Raises:
        MMError: ERR_ARG when the name is taken.
    """
    try:
        cur = conn.execute(
            "INSERT INTO accounts (user_name, nick_name, pw_hash, created) VALUES (?,?,?,?)",
            (name, nick, pw_hash, now),
        )
    except sqlite3.IntegrityError:
        raise MMError(MMRet.ERR_ARG, f"user {name!r} already exists") from None
    uin = int(cur.lastrowid or 0)
    item = conn.execute("INSERT INTO items (body) VALUES (?)", (profile,)).lastrowid
    conn.execute("INSERT INTO sync_log (uin, key, seq, item) VALUES (?,?,1,?)", (uin, 1, item))
    return uin


def _hash_plain_session_keys(conn: sqlite3.Connection) -> None:
    """Stores written before keys were hashed hold them in plain text: hash them in
    place (the sessions stay valid; the plain keys leave the file at the next
    checkpoint and VACUUM)."""
    rows = conn.execute("SELECT sid FROM sessions WHERE length(sid) != 64").fetchall()
    conn.executemany(
        "UPDATE sessions SET sid=? WHERE sid=?", [(session_key_hash(r[0]), r[0]) for r in rows]
    )


#: An account's devices as the writer caches them: device id -> its sessions' latest
#: expiry, as a dict, or as one (device id, expiry) pair when there is one device (56
#: bytes, where a dict of one entry is 184).
_Devices = tuple[str, int] | dict[str, int]


def _devices(devs: dict[str, int]) -> _Devices:
    """``devs`` as the writer caches it (:data:`_Devices`)."""
    return next(iter(devs.items())) if len(devs) == 1 else devs


class SQLiteBase:
    """The set-up, plumbing, accounts and sessions of :class:`SQLiteStore` (its arguments
    are documented there)."""

    def __init__(
        self,
        path: Path,
        durability: str = "FULL",
        *,
        profile_item: Callable[[int, str, str], bytes],
        integrity_check: str = "quick",
        tail_items: int = 32,
        tail_bytes: int = 16 * 1024,
        tail_total_bytes: int = 32 << 20,
        page_cache_kib: int = 2048,
        checkpoint_interval: float = 0.25,
        active_accounts: int = 1024,
    ) -> None:
        check_integrity(path, integrity_check)
        self.tail = LogTail(tail_items, tail_bytes, tail_total_bytes)
        versions: list[int] = []
        self.db = Database(
            path,
            synchronous=durability,
            init=lambda conn: versions.append(init_schema(conn)),
            cache_kib=page_cache_kib,
            checkpoint_interval=checkpoint_interval,
        )
        self._schema_version = versions[0]
        self._profile_item = profile_item
        self._loop: asyncio.AbstractEventLoop | None = None
        self._publish: Callable[[Changes], None] | None = None
        # The per-account caches keep the accounts in use (ActiveCache, [sync]
        # active_accounts): an idle account's entries go and are read again when needed.
        active = max(1, active_accounts)
        #: committed heads (loop side): uin -> its served keys' (_SERVED_SLOT)
        self._heads: ActiveCache[int, list[int | None]] = ActiveCache(active)
        self._commit_queue: dict[tuple[int, str], tuple[bytes, int]] = {}
        self._commit_lock = threading.Lock()
        # writer-thread state (dropped whenever the writer rolls something back)
        self._w_heads: ActiveCache[int, list[int | None]] = ActiveCache(active)
        self._w_next_msg_id: int | None = None
        #: uin -> its devices (:data:`_Devices`): the S17 question without a read per
        #: message; filled per sender on first use, kept by the session writes
        self._w_devices: ActiveCache[int, _Devices] = ActiveCache(active_accounts)
        self.db.on_rollback = self._w_reset

    def _w_reset(self) -> None:  # writer thread: a rollback undid what these cached
        self._w_heads.clear()
        self._w_next_msg_id = None
        self._w_devices.clear()

    async def start(self, publish: Callable[[Changes], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._publish = publish
        await self.db.write(_hash_plain_session_keys)

    def close(self) -> None:
        self.db.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.db.close)

    async def flush(self) -> None:
        await self.db.write(lambda c: None)  # the queue is FIFO

    def caches(self) -> dict[str, ActiveCache[object, object]]:
        """The store's per-account caches by name (for /metrics)."""
        return {
            "log_heads": self._heads,  # type: ignore[dict-item]
            "writer_log_heads": self._w_heads,  # type: ignore[dict-item]
            "writer_devices": self._w_devices,  # type: ignore[dict-item]
        }

    def statistics(self) -> dict[str, int]:
        return {
            "commits": self.db.groups,
            "writes": self.db.writes,
            "tail_hits": self.tail.hits,
            "tail_misses": self.tail.misses,
            "tail_bytes": self.tail.bytes,
            "tail_logs": len(self.tail),
            "tail_trimmed": self.tail.trimmed,
            "tail_releases": self.tail.releases,
        }

    def schema_version(self) -> int:
        return self._schema_version

    # ---------------------------------------------------------------- plumbing
    async def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        rows: list[Any] = self.db.read_now(lambda c: c.execute(sql, args).fetchall())
        return rows

    async def _one(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        rows = await self._read(sql, args)
        return rows[0] if rows else None

    async def _write(self, fn: Callable[[sqlite3.Connection, Changes], T]) -> T:
        """Run ``fn`` in the next group; publish its changes after the group commits."""

        def job(conn: sqlite3.Connection) -> T:
            ch = Changes()
            value = fn(conn, ch)
            if ch.heads:
                self._hand_over(ch)
            return value

        return await self.db.write(job)

    def _hand_over(self, ch: Changes) -> None:  # writer thread, in a write function
        """Apply ``ch`` on the event loop once its group committed, in the callback that
        resolves the group's futures (:meth:`Database.after_commit_on`)."""
        if self._loop is not None:
            self.db.after_commit_on(self._loop, lambda: self._apply(ch))

    def _apply(self, ch: Changes) -> None:  # event loop
        heads = self._heads
        slot = _SERVED_SLOT
        for (uin, key), seq in ch.heads.items():  # served keys' alone (_w_log_rows)
            hs = heads.get(uin)
            if hs is None:
                hs = heads[uin] = [None] * len(slot)
            i = slot[key]
            h = hs[i]
            if h is None or seq > h:
                hs[i] = seq
        if ch.entries:
            self.tail.add(ch.entries)
        if self._publish is not None:
            self._publish(ch)

    def _w_append(self, conn: sqlite3.Connection, ch: Changes, appends: Iterable[Append]) -> None:
        entries: list[tuple[int, int, int, bytes]] = []
        for ap in appends:
            item = int(conn.execute(_ITEM_SQL, (ap.body,)).lastrowid or 0)
            entries += [(uin, ap.key, item, ap.body) for uin in ap.uins]
        insert_rows(conn, _LOG_HEAD, 4, self._w_log_rows(conn, ch, entries))

    def _w_log_rows(
        self, conn: sqlite3.Connection, ch: Changes, entries: list[tuple[int, int, int, bytes]]
    ) -> list[int]:
        """The ``sync_log`` rows for (uin, key, item, body) entries, as the values of
        :func:`insert_rows` (uin, key, seq, item, one after the other): each gets the
        next seq of its log (in the order given); the served keys' new heads, news and
        entries go into ``ch``. Heads not cached yet are read with one statement per 32."""
        cache = self._w_heads
        slot = _W_SLOT
        # this group's heads in a dict of its own: the cache may drop entries while it
        # is filled (a group with more accounts than it keeps)
        heads: dict[tuple[int, int], int] = {}
        cold = []
        for u, k, _, _ in entries:
            hk = (u, k)
            if hk not in heads:
                hs = cache.get(u)
                i = slot.get(k)
                h = None if hs is None or i is None else hs[i]
                if h is None:
                    heads[hk] = 0
                    cold.append(hk)
                else:
                    heads[hk] = h
        for i in range(0, len(cold), _HEADS_CHUNK):
            part = cold[i : i + _HEADS_CHUNK]
            n = 1 << (len(part) - 1).bit_length()
            part += [part[-1]] * (n - len(part))  # (its row comes twice: the same head)
            for u, k, seq in conn.execute(_heads_sql(n), [x for hk in part for x in (*hk, *hk)]):
                heads[(u, k)] = int(seq or 0)
        rows: list[int] = []
        served = ch.entries
        new_heads = ch.heads
        news = ch.news
        bits = SELECTOR_BITS
        for uin, key, item, body in entries:
            hk = (uin, key)
            seq = heads[hk] + 1
            heads[hk] = seq
            rows += (uin, key, seq, item)
            bit = bits.get(key)
            if bit is not None:
                served.append((uin, key, seq, body))
                new_heads[hk] = seq
                news[uin] = news.get(uin, 0) | bit
        for (u, k), seq in heads.items():
            i = slot.get(k)
            if i is not None:  # (every key type the store writes has one)
                hs = cache.get(u)
                if hs is None:
                    hs = cache[u] = [None] * len(slot)
                hs[i] = seq
        return rows

    def _w_other_device(self, conn: sqlite3.Connection, uin: int, device: str, now: int) -> bool:
        devs = self._w_devices.get(uin)
        if devs is None:
            devs = self._w_devices[uin] = _devices(
                {
                    str(d): int(e)
                    for d, e in conn.execute(
                        "SELECT device_id, MAX(expires) FROM sessions WHERE uin=?"
                        " GROUP BY device_id",
                        (uin,),
                    )
                }
            )
        if isinstance(devs, tuple):  # one device, nearly every account
            return devs[1] >= now and devs[0] != device
        return any(e >= now and d != device for d, e in devs.items())

    async def has_other_device(self, uin: int, device_id: str, now: int) -> bool:
        r = await self._one(
            "SELECT 1 FROM sessions WHERE uin=? AND device_id!=? AND expires>=? LIMIT 1",
            (uin, device_id, now),
        )
        return r is not None

    # ---------------------------------------------------------------- accounts
    async def create_account(self, name: str, pw_hash: str, nick: str, now: int) -> int:
        def w(conn: sqlite3.Connection) -> int:
            uin = insert_account(conn, name, pw_hash, nick, now, b"")
            conn.execute(
                "UPDATE items SET body=? WHERE id=(SELECT item FROM sync_log"
                " WHERE uin=? AND key=1 AND seq=1)",
                (self._profile_item(uin, name, nick), uin),
            )
            hs: list[int | None] = [None] * len(_W_SLOT)
            hs[_W_SLOT[KEY_PROFILE]] = 1
            self._w_heads[uin] = hs
            return uin

        uin: int = await self.db.write(w)
        return uin

    async def account_by_name(self, name: str) -> Account | None:
        r = await self._one(
            "SELECT uin, user_name, nick_name, pw_hash FROM accounts WHERE user_name=?", (name,)
        )
        return None if r is None else Account(*r)

    async def account_by_uin(self, uin: int) -> Account | None:
        r = await self._one(
            "SELECT uin, user_name, nick_name, pw_hash FROM accounts WHERE uin=?", (uin,)
        )
        return None if r is None else Account(*r)

    async def create_session(self, row: SessionRow, now: int) -> None:
        h = session_key_hash(row.sid)

        def w(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO sessions VALUES (?,?,?,?,?,?,?)",
                (h, row.uin, row.device_id, row.device_name, row.kind, now, row.expires),
            )
            devs = self._w_devices.get(row.uin)
            if devs is not None:  # in the writer's order: sends after it see the device
                known = dict([devs]) if isinstance(devs, tuple) else devs
                known[row.device_id] = max(known.get(row.device_id, 0), row.expires)
                self._w_devices[row.uin] = _devices(known)

        await self.db.write(w)

    async def session(self, sid: str) -> SessionRow | None:
        r = await self._one(
            "SELECT s.uin, a.user_name, s.device_id, s.device_name, s.kind, s.expires"
            " FROM sessions s JOIN accounts a ON a.uin=s.uin WHERE s.sid=?",
            (session_key_hash(sid),),
        )
        if r is None:
            return None
        uin, name, device_id, device_name, kind, expires = r
        # the device name's and kind's strings are shared (few values; an account's
        # name is not interned: see ContactNames)
        return SessionRow(
            sid,
            uin,
            name,
            device_id,
            sys.intern(device_name),
            sys.intern(kind),
            expires,
        )

    async def delete_session(self, sid: str) -> None:
        h = session_key_hash(sid)

        def w(conn: sqlite3.Connection) -> None:
            for (uin,) in conn.execute("DELETE FROM sessions WHERE sid=? RETURNING uin", (h,)):
                self._w_devices.pop(int(uin), None)  # read again by the next send

        await self.db.write(w)

    async def evict_sessions(self, uin: int, keep: int) -> list[str]:
        def w(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT sid FROM sessions WHERE uin=? ORDER BY created, rowid",
                (uin,),
            ).fetchall()
            gone = [str(r[0]) for r in rows[: max(0, len(rows) - keep)]]
            conn.executemany("DELETE FROM sessions WHERE sid=?", [(h,) for h in gone])
            if gone:
                self._w_devices.pop(uin, None)
            return gone

        return await self.db.write(w)

    # ---------------------------------------------------------------- web sessions
    async def save_web_session(self, row: WebSessionRow) -> None:
        await self.db.write(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO web_sessions VALUES (?,?,?,?,?,?,?,?,?,?)", row.values()
            )
        )

    async def web_session(self, key: str) -> WebSessionRow | None:
        r = await self._one("SELECT * FROM web_sessions WHERE key=?", (key,))
        return None if r is None else WebSessionRow.from_row(r)

    async def drop_web_sessions(self, before: float) -> int:
        n: int = await self.db.write(
            lambda c: c.execute("DELETE FROM web_sessions WHERE expires<?", (before,)).rowcount
        )
        return n
