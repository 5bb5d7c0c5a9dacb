"""The embedded store: one SQLite file in WAL mode, written in group commits.

All writes run on the :class:`Database` writer thread. Sequence numbers and message ids
are assigned there, inside the transaction, so they become visible in order. After a
group commits, the heads and news of its successful jobs are handed to the event loop
(``publish``) before the jobs' futures resolve.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from wxnet.proto.errors import MMError, MMRet
from wxnet.proto.synckey import SELECTOR_BITS
from wxnet.sync.db import Database, check_integrity
from wxnet.sync.schema import init_schema
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

__all__ = ["FIRST_MSG_ID", "LogTail", "SQLiteStore", "insert_account"]

T = TypeVar("T")
FIRST_MSG_ID = 1_000_000_000
_MSG_COLS = "msg_id, sender, client_msg_id, to_user, msg_type, create_time, revoked, media"


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


def _message(row: Sequence[Any] | None) -> MessageRow | None:
    if row is None:
        return None
    return MessageRow(
        int(row[0]), int(row[1]), row[2], row[3], int(row[4]), int(row[5]), bool(row[6]), row[7]
    )


class LogTail:
    """The recent end of every account's logs, in memory (event-loop side).

    One ring per (uin, key): the last entries appended since the server started,
    contiguous up to the log's committed head, at most ``max_items`` entries and
    ``max_bytes`` of bodies per ring; all rings together hold at most ``total_bytes``
    (the least recently written rings are dropped first). A newsync whose key is at or
    near the head is answered from here without reading SQLite; older keys fall back to
    SQLite. ``max_items = 0`` turns it off.
    """

    __slots__ = ("_rings", "bytes", "hits", "max_bytes", "max_items", "misses", "total_bytes")

    def __init__(self, max_items: int, max_bytes: int, total_bytes: int) -> None:
        self.max_items, self.max_bytes, self.total_bytes = max_items, max_bytes, total_bytes
        # (uin, key) -> [entries (seq, body), bytes of the bodies]
        self._rings: OrderedDict[tuple[int, int], list[Any]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def add(self, entries: Iterable[tuple[int, int, int, bytes]]) -> None:
        if self.max_items <= 0:
            return
        rings = self._rings
        for uin, key, seq, body in entries:
            hk = (uin, key)
            ring = rings.get(hk)
            if ring is None:
                ring = rings[hk] = [deque(), 0]
            else:
                rings.move_to_end(hk)
                q = ring[0]
                if q and q[-1][0] != seq - 1:  # not contiguous (cannot happen): restart
                    self.bytes -= ring[1]
                    q.clear()
                    ring[1] = 0
            q = ring[0]
            q.append((seq, body))
            ring[1] += len(body)
            self.bytes += len(body)
            while len(q) > self.max_items or (len(q) > 1 and ring[1] > self.max_bytes):
                _, old = q.popleft()
                ring[1] -= len(old)
                self.bytes -= len(old)
        while self.bytes > self.total_bytes and rings:
            _, (_, size) = rings.popitem(last=False)
            self.bytes -= size

    def read(self, uin: int, key: int, after: int, head: int) -> deque[tuple[int, bytes]] | None:
        """Every entry after ``after`` up to ``head`` (the whole ring; the caller skips
        the ones at or before ``after``), or None when the ring does not reach back that
        far or does not reach ``head``."""
        ring = self._rings.get((uin, key))
        if ring is None:
            return None
        q: deque[tuple[int, bytes]] = ring[0]
        if not q or q[0][0] > after + 1 or q[-1][0] < head:
            return None
        return q

    def __len__(self) -> int:
        return len(self._rings)


def _web_row(r: Sequence[Any]) -> WebSessionRow:
    return WebSessionRow(
        r[0], int(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], float(r[8]), bool(r[9])
    )


class SQLiteStore:
    """Args:
        path: the database file (created, with its schema, if missing; an older store is
            migrated, a newer one refused: :func:`wxnet.sync.schema.init_schema`).
        durability: ``FULL`` (fsync every group commit) or ``NORMAL``.
        profile_item: builds the first profile log item of a new account from
            (uin, name, nick); the store itself does not know the item format.
        integrity_check: ``quick`` (``PRAGMA quick_check`` before opening), ``full``
            (``integrity_check``) or ``off``.
        tail_items, tail_bytes, tail_total_bytes: bounds of the in-memory log tail
            (:class:`LogTail`; per log, per log, and in all).

    Raises:
        StoreDamaged: the file failed the check (the message says how to recover).
    """

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
    ) -> None:
        check_integrity(path, integrity_check)
        self.tail = LogTail(tail_items, tail_bytes, tail_total_bytes)
        versions: list[int] = []
        self.db = Database(
            path, synchronous=durability, init=lambda conn: versions.append(init_schema(conn))
        )
        self._schema_version = versions[0]
        self._profile_item = profile_item
        self._loop: asyncio.AbstractEventLoop | None = None
        self._publish: Callable[[Changes], None] | None = None
        self._heads: dict[tuple[int, int], int] = {}  # committed heads (loop side)
        self._commit_queue: dict[tuple[int, str], tuple[bytes, int]] = {}
        self._commit_lock = threading.Lock()
        # writer-thread state
        self._w_heads: dict[tuple[int, int], int] = {}
        self._w_next_msg_id: int | None = None

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

    def statistics(self) -> dict[str, int]:
        return {
            "commits": self.db.groups,
            "writes": self.db.writes,
            "tail_hits": self.tail.hits,
            "tail_misses": self.tail.misses,
            "tail_bytes": self.tail.bytes,
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
                self.db.after_commit(lambda: self._hand_over(ch))
            return value

        return await self.db.write(job)

    def _hand_over(self, ch: Changes) -> None:  # writer thread, after commit
        if self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._apply, ch)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                pass

    def _apply(self, ch: Changes) -> None:  # event loop
        for hk, seq in ch.heads.items():
            if seq > self._heads.get(hk, 0):
                self._heads[hk] = seq
        if ch.entries:
            self.tail.add(ch.entries)
        if self._publish is not None:
            self._publish(ch)

    def _w_append(self, conn: sqlite3.Connection, ch: Changes, appends: Iterable[Append]) -> None:
        rows = []
        for ap in appends:
            item = conn.execute("INSERT INTO items (body) VALUES (?)", (ap.body,)).lastrowid
            bit = SELECTOR_BITS[ap.key]
            for uin in ap.uins:
                hk = (uin, ap.key)
                seq = self._w_heads.get(hk)
                if seq is None:
                    row = conn.execute(
                        "SELECT MAX(seq) FROM sync_log WHERE uin=? AND key=?", hk
                    ).fetchone()
                    seq = int(row[0] or 0)
                seq += 1
                self._w_heads[hk] = seq
                rows.append((uin, ap.key, seq, item))
                ch.entries.append((uin, ap.key, seq, ap.body))
                ch.heads[hk] = seq
                ch.news[uin] = ch.news.get(uin, 0) | bit
        conn.executemany("INSERT INTO sync_log (uin, key, seq, item) VALUES (?,?,?,?)", rows)

    # ---------------------------------------------------------------- accounts
    async def create_account(self, name: str, pw_hash: str, nick: str, now: int) -> int:
        def w(conn: sqlite3.Connection) -> int:
            uin = insert_account(conn, name, pw_hash, nick, now, b"")
            conn.execute(
                "UPDATE items SET body=? WHERE id=(SELECT item FROM sync_log"
                " WHERE uin=? AND key=1 AND seq=1)",
                (self._profile_item(uin, name, nick), uin),
            )
            self._w_heads[(uin, 1)] = 1
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
        await self.db.write(
            lambda c: c.execute(
                "INSERT INTO sessions VALUES (?,?,?,?,?,?,?)",
                (h, row.uin, row.device_id, row.device_name, row.kind, now, row.expires),
            )
        )

    async def session(self, sid: str) -> SessionRow | None:
        r = await self._one(
            "SELECT s.uin, a.user_name, s.device_id, s.device_name, s.kind, s.expires"
            " FROM sessions s JOIN accounts a ON a.uin=s.uin WHERE s.sid=?",
            (session_key_hash(sid),),
        )
        return None if r is None else SessionRow(sid, *r)

    async def delete_session(self, sid: str) -> None:
        h = session_key_hash(sid)
        await self.db.write(lambda c: c.execute("DELETE FROM sessions WHERE sid=?", (h,)))

    async def evict_sessions(self, uin: int, keep: int) -> list[str]:
        def w(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT sid FROM sessions WHERE uin=? ORDER BY created, rowid",
                (uin,),
            ).fetchall()
            gone = [str(r[0]) for r in rows[: max(0, len(rows) - keep)]]
            conn.executemany("DELETE FROM sessions WHERE sid=?", [(h,) for h in gone])
            return gone

        return await self.db.write(w)

    # ---------------------------------------------------------------- web sessions
    async def save_web_session(self, row: WebSessionRow) -> None:
        await self.db.write(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO web_sessions VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    row.key,
                    row.uin,
                    row.user_name,
                    row.nick_name,
                    row.session_key,
                    row.skey,
                    row.pass_ticket,
                    row.data_ticket,
                    row.expires,
                    int(row.alive),
                ),
            )
        )

    async def web_session(self, key: str) -> WebSessionRow | None:
        r = await self._one("SELECT * FROM web_sessions WHERE key=?", (key,))
        return None if r is None else _web_row(r)

    async def drop_web_sessions(self, before: float) -> int:
        n: int = await self.db.write(
            lambda c: c.execute("DELETE FROM web_sessions WHERE expires<?", (before,)).rowcount
        )
        return n

    # ---------------------------------------------------------------- logs
    async def head(self, uin: int, key: int, *, fresh: bool = False) -> int:
        h = self._heads.get((uin, key))
        if h is None or fresh:
            r = await self._one("SELECT MAX(seq) FROM sync_log WHERE uin=? AND key=?", (uin, key))
            h = max(int(r[0] or 0), self._heads.get((uin, key), 0))
            self._heads[(uin, key)] = h
        return h

    async def read_log(
        self, uin: int, after: Sequence[tuple[int, int]], max_items: int, max_bytes: int
    ) -> tuple[list[Item], list[int]]:
        items: list[Item] = []
        size = 0
        more: list[int] = []
        todo: list[tuple[int, int]] = []  # keys the tail cannot serve, in order
        tail = self.tail
        for key, seq in after:
            ring = tail.read(uin, key, seq, self._heads.get((uin, key), 0))
            if ring is None:
                todo.append((key, seq))
                continue
            if todo:  # keep the keys in order: the rest goes to SQLite too
                todo.append((key, seq))
                continue
            tail.hits += 1
            if len(items) >= max_items or size >= max_bytes:
                more.append(key)
                continue
            for s, body in ring:
                if s <= seq:
                    continue
                if len(items) >= max_items or (items and size + len(body) > max_bytes):
                    more.append(key)
                    break
                items.append((key, s, body))
                size += len(body)
        if not todo:
            return items, more
        tail.misses += len(todo)

        def read(conn: sqlite3.Connection) -> tuple[list[Item], list[int]]:
            nonlocal size
            for key, seq in todo:
                if len(items) >= max_items or size >= max_bytes:
                    more.append(key)
                    continue
                rows = conn.execute(
                    "SELECT l.seq, i.body FROM sync_log l JOIN items i ON i.id = l.item"
                    " WHERE l.uin=? AND l.key=? AND l.seq>? ORDER BY l.seq LIMIT ?",
                    (uin, key, seq, max_items - len(items) + 1),
                ).fetchall()
                for s, body in rows:
                    if len(items) >= max_items or (items and size + len(body) > max_bytes):
                        more.append(key)
                        break
                    items.append((key, s, body))
                    size += len(body)
            return items, more

        return self.db.read_now(read)

    async def recent(self, uin: int, key: int, upto: int, limit: int) -> list[Item]:
        rows = await self._read(
            "SELECT l.seq, i.body FROM sync_log l JOIN items i ON i.id = l.item"
            " WHERE l.uin=? AND l.key=? AND l.seq<=? ORDER BY l.seq DESC LIMIT ?",
            (uin, key, upto, limit),
        )
        return [(key, s, body) for s, body in reversed(rows)]

    async def append(self, appends: Sequence[Append]) -> None:
        await self._write(lambda conn, ch: self._w_append(conn, ch, appends))

    def set_committed_key(self, uin: int, device_id: str, key: bytes, now: int) -> None:
        with self._commit_lock:  # the writer thread swaps the queue out
            first = not self._commit_queue
            self._commit_queue[(uin, device_id)] = (key, now)
        if first:  # one write job carries every commit mark queued until it runs
            self.db.write_nowait(self._w_flush_commits)

    def _w_flush_commits(self, conn: sqlite3.Connection) -> None:
        with self._commit_lock:
            queued, self._commit_queue = self._commit_queue, {}
        conn.executemany(
            "INSERT INTO devices VALUES (?,?,?,?) ON CONFLICT(uin, device_id)"
            " DO UPDATE SET committed_key=excluded.committed_key, updated=excluded.updated",
            [(u, d, key, t) for (u, d), (key, t) in queued.items()],
        )

    async def committed_key(self, uin: int, device_id: str) -> bytes | None:
        r = await self._one(
            "SELECT committed_key FROM devices WHERE uin=? AND device_id=?", (uin, device_id)
        )
        return None if r is None else bytes(r[0])

    # ---------------------------------------------------------------- contacts, rooms
    async def contacts_of(self, uin: int) -> set[str]:
        return {r[0] for r in await self._read("SELECT peer FROM contacts WHERE owner=?", (uin,))}

    async def add_contacts(
        self, pairs: Sequence[tuple[int, str]], now: int, appends: Sequence[Append]
    ) -> None:
        def w(conn: sqlite3.Connection, ch: Changes) -> None:
            conn.executemany(
                "INSERT OR IGNORE INTO contacts VALUES (?,?,?)", [(o, p, now) for o, p in pairs]
            )
            self._w_append(conn, ch, appends)

        await self._write(w)

    async def room(self, name: str) -> RoomRow | None:
        def read(conn: sqlite3.Connection) -> RoomRow | None:
            r = conn.execute("SELECT topic, owner FROM chatrooms WHERE name=?", (name,)).fetchone()
            if r is None:
                return None
            ms = conn.execute(
                "SELECT member FROM room_members WHERE room=? ORDER BY member", (name,)
            ).fetchall()
            return RoomRow(name, r[0], r[1], [m[0] for m in ms])

        return self.db.read_now(read)

    async def rooms_of(self, user_name: str) -> list[str]:
        rows = await self._read(
            "SELECT room FROM room_members WHERE member=? ORDER BY room", (user_name,)
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
        def w(conn: sqlite3.Connection, ch: Changes) -> None:
            if create:
                conn.execute(
                    "INSERT INTO chatrooms VALUES (?,?,?,?)",
                    (room.name, room.topic, room.owner, now),
                )
            else:
                conn.execute("UPDATE chatrooms SET topic=? WHERE name=?", (room.topic, room.name))
            conn.executemany(
                "INSERT OR IGNORE INTO room_members VALUES (?,?)", [(room.name, n) for n in added]
            )
            conn.executemany(
                "DELETE FROM room_members WHERE room=? AND member=?",
                [(room.name, n) for n in removed],
            )
            self._w_append(conn, ch, appends)

        await self._write(w)

    # ---------------------------------------------------------------- messages
    def _w_msg_id(self, conn: sqlite3.Connection) -> int:
        if self._w_next_msg_id is None:
            row = conn.execute("SELECT MAX(msg_id) FROM messages").fetchone()
            self._w_next_msg_id = max(int(row[0] or 0) + 1, FIRST_MSG_ID)
        mid = self._w_next_msg_id
        self._w_next_msg_id += 1
        return mid

    async def store_messages(
        self, sender: int, msgs: Sequence[NewMessage], now: int
    ) -> list[tuple[int, int, bool]]:
        def w(conn: sqlite3.Connection, ch: Changes) -> list[tuple[int, int, bool]]:
            out = []
            for m in msgs:
                mid = self._w_msg_id(conn)
                try:
                    conn.execute(
                        "INSERT INTO messages (msg_id, sender, client_msg_id, to_user, msg_type,"
                        " create_time, media) VALUES (?,?,?,?,?,?,?)",
                        (mid, sender, m.client_msg_id, m.to_user, m.msg_type, now, m.media),
                    )
                except sqlite3.IntegrityError:  # (sender, client_msg_id) seen before
                    row = conn.execute(
                        "SELECT msg_id, create_time FROM messages"
                        " WHERE sender=? AND client_msg_id=?",
                        (sender, m.client_msg_id),
                    ).fetchone()
                    if row is None:  # another constraint failed: a write error, not a dup
                        raise
                    out.append((int(row[0]), int(row[1]), True))
                    continue
                self._w_append(conn, ch, [Append(m.recipients, 2, m.make_body(mid, now))])
                out.append((mid, now, False))
            return out

        return await self._write(w)

    async def message(self, msg_id: int) -> MessageRow | None:
        if not 0 < msg_id < 1 << 63:  # SQLite integers are signed 64-bit: no such id
            return None
        return _message(
            await self._one(f"SELECT {_MSG_COLS} FROM messages WHERE msg_id=?", (msg_id,))
        )

    async def message_by_client_id(self, sender: int, client_msg_id: str) -> MessageRow | None:
        return _message(
            await self._one(
                f"SELECT {_MSG_COLS} FROM messages WHERE sender=? AND client_msg_id=?",
                (sender, client_msg_id),
            )
        )

    async def revoke(self, msg_id: int, appends: Sequence[Append]) -> None:
        def w(conn: sqlite3.Connection, ch: Changes) -> None:
            conn.execute("UPDATE messages SET revoked=1 WHERE msg_id=?", (msg_id,))
            self._w_append(conn, ch, appends)

        await self._write(w)

    # ---------------------------------------------------------------- uploads
    async def upload_begin(
        self, owner: int, client_id: str, kind: str, to_user: str, total: int, now: int
    ) -> tuple[str, int, list[tuple[int, int]]]:
        def w(conn: sqlite3.Connection) -> tuple[str, int, list[tuple[int, int]]]:
            row = conn.execute(
                "SELECT to_user, total_len, ranges FROM uploads"
                " WHERE owner=? AND client_id=? AND kind=?",
                (owner, client_id, kind),
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO uploads (owner, client_id, kind, to_user, total_len, ranges,"
                    " created) VALUES (?,?,?,?,?,?,?)",
                    (owner, client_id, kind, to_user, total, "[]", now),
                )
                return to_user, total, []
            return row[0], int(row[1]), [(a, b) for a, b in json.loads(row[2])]

        return await self.db.write(w)

    async def upload_save(
        self, owner: int, client_id: str, kind: str, ranges: list[tuple[int, int]]
    ) -> None:
        text = json.dumps(ranges)
        await self.db.write(
            lambda c: c.execute(
                "UPDATE uploads SET ranges=? WHERE owner=? AND client_id=? AND kind=?",
                (text, owner, client_id, kind),
            )
        )

    async def upload_drop(self, owner: int, client_id: str, kind: str) -> None:
        await self.db.write(
            lambda c: c.execute(
                "DELETE FROM uploads WHERE owner=? AND client_id=? AND kind=?",
                (owner, client_id, kind),
            )
        )

    async def uploads_of(self, owner: int) -> list[tuple[str, str, int]]:
        rows = await self._read(
            "SELECT client_id, kind, total_len FROM uploads WHERE owner=?", (owner,)
        )
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    async def uploads_older(self, created_before: int, limit: int) -> list[tuple[int, str, str]]:
        rows = await self._read(
            "SELECT owner, client_id, kind FROM uploads WHERE created < ? ORDER BY created LIMIT ?",
            (created_before, limit),
        )
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]
