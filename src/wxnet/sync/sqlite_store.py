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
from collections.abc import Awaitable, Sequence
from typing import Any

from wxnet.proto.synckey import KEY_MSG
from wxnet.sync.db import insert_rows
from wxnet.sync.logtail import LogTail
from wxnet.sync.sqlite_base import (
    _LOG_HEAD,
    _MSG_COLS,
    _SERVED_SLOT,
    FIRST_MSG_ID,
    SQLiteBase,
    insert_account,
)
from wxnet.sync.sqlite_shared import SQLiteShared
from wxnet.sync.store import (
    KEY_SENT,
    Append,
    Changes,
    Item,
    MessageRow,
    NewMessage,
    RoomRow,
    RoomSave,
    SyncWindow,
    history_page,
)

__all__ = ["FIRST_MSG_ID", "LogTail", "SQLiteStore", "insert_account"]

_MSG_HEAD = (
    "INSERT OR IGNORE INTO messages (msg_id, sender, client_msg_id, to_user, msg_type,"
    " create_time, media)"
)
_MSG_WIDTH = 7
_ITEMS_HEAD = "INSERT INTO items (id, body)"
_RECENT_LOG = (
    "SELECT * FROM (SELECT l.key, l.seq, i.body, l.item FROM sync_log l JOIN items i"
    " ON i.id = l.item WHERE l.uin=? AND l.key=? AND l.seq<=? ORDER BY l.seq DESC LIMIT ?)"
)
# both logs' newest entries, merged by item id: the order the writer wrote them in
_RECENT_SQL = (
    f"SELECT key, seq, body FROM ({_RECENT_LOG} UNION ALL"
    f" {_RECENT_LOG.replace(' AND l.seq<=?', '')}) ORDER BY item DESC LIMIT ?"
)


_COMMIT_UPSERT = (
    " ON CONFLICT(uin, device_id)"
    " DO UPDATE SET committed_key=excluded.committed_key, updated=excluded.updated"
)

_HISTORY_SQL = (
    "SELECT l.item, i.body FROM sync_log l JOIN items i ON i.id = l.item"
    " WHERE l.uin=? AND l.key=? AND l.seq<=? ORDER BY l.seq DESC LIMIT ?"
)


def _last_seq_below(conn: sqlite3.Connection, uin: int, key: int, item: int) -> int:
    """The last seq of a log whose entry's item id is below ``item`` (0: the head). Item
    ids grow with the seqs of one log, so a binary search on the primary key finds it in
    about log2(length) lookups (the log has no index on item)."""
    row = conn.execute("SELECT MAX(seq) FROM sync_log WHERE uin=? AND key=?", (uin, key))
    hi = int(row.fetchone()[0] or 0)
    if item <= 0:
        return hi
    lo = 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        row = conn.execute(
            "SELECT item FROM sync_log WHERE uin=? AND key=? AND seq<=? ORDER BY seq DESC LIMIT 1",
            (uin, key, mid),
        ).fetchone()
        if row is not None and int(row[0]) < item:
            lo = mid
        else:
            hi = mid - 1
    return lo


#: One :meth:`SQLiteStore.store_messages` call, as its group's batch gets it: (sender,
#: messages, now, device). A plain tuple: made once per send on the event loop, where a
#: frozen dataclass's ``__init__`` cost ten times as much.
_Send = tuple[int, Sequence[NewMessage], int, str]


class SQLiteStore(SQLiteShared, SQLiteBase):
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
        page_cache_kib: SQLite's page cache per connection (``[sync] page_cache_kib``).
        checkpoint_interval: seconds between WAL checkpoints on the reader thread (0:
            inside the writer's commits; ``[sync] checkpoint_interval``, :class:`Database`).
        active_accounts: accounts whose log heads and device lists stay cached while in
            use (``[sync] active_accounts``; :class:`~wxnet.sync.cache.ActiveCache`).

    Raises:
        StoreDamaged: the file failed the check (the message says how to recover).
    """

    # ---------------------------------------------------------------- logs
    async def head(self, uin: int, key: int, *, fresh: bool = False) -> int:
        h = self.head_now(uin, key)
        if h is None or fresh:
            r = await self._one("SELECT MAX(seq) FROM sync_log WHERE uin=? AND key=?", (uin, key))
            h = int(r[0] or 0)
            i = _SERVED_SLOT.get(key)
            if i is not None:  # a served key's: cached
                hs = self._heads.get(uin)
                if hs is None:
                    hs = self._heads[uin] = [None] * len(_SERVED_SLOT)
                h = max(h, hs[i] or 0)
                hs[i] = h
        return h

    def head_now(self, uin: int, key: int) -> int | None:
        hs = self._heads.get(uin)
        i = _SERVED_SLOT.get(key)
        return None if hs is None or i is None else hs[i]

    async def read_log(
        self, uin: int, after: Sequence[tuple[int, int]], max_items: int, max_bytes: int
    ) -> tuple[list[Item], list[int]]:
        window = SyncWindow(max_items, max_bytes)
        todo: list[tuple[int, int]] = []  # keys the tail cannot serve, in order
        tail = self.tail
        hs = self._heads.get(uin)
        slot = _SERVED_SLOT
        for key, seq in after:
            i = slot.get(key)
            # not cached (an idle account's, or not a served key): SQLite
            head = None if hs is None or i is None else hs[i]
            ring = None if head is None else tail.read(uin, key, seq, head)
            if ring is None:
                todo.append((key, seq))
                continue
            if todo:  # keep the keys in order: the rest goes to SQLite too
                todo.append((key, seq))
                continue
            tail.hits += 1
            window.take(key, ring, seq)
        if not todo:
            return window.items, window.more
        tail.misses += len(todo)

        def read(conn: sqlite3.Connection) -> tuple[list[Item], list[int]]:
            for key, seq in todo:
                if window.full():
                    window.more.append(key)
                    continue
                rows = conn.execute(
                    "SELECT l.seq, i.body FROM sync_log l JOIN items i ON i.id = l.item"
                    " WHERE l.uin=? AND l.key=? AND l.seq>? ORDER BY l.seq LIMIT ?",
                    (uin, key, seq, max_items - len(window.items) + 1),
                ).fetchall()
                window.take(key, rows)
            return window.items, window.more

        return self.db.read_now(read)

    async def recent(self, uin: int, key: int, upto: int, limit: int) -> list[Item]:
        rows = await self._read(
            "SELECT l.seq, i.body FROM sync_log l JOIN items i ON i.id = l.item"
            " WHERE l.uin=? AND l.key=? AND l.seq<=? ORDER BY l.seq DESC LIMIT ?",
            (uin, key, upto, limit),
        )
        return [(key, s, body) for s, body in reversed(rows)]

    async def recent_messages(self, uin: int, upto: int, limit: int) -> list[Item]:
        rows = await self._read(
            _RECENT_SQL, (uin, KEY_MSG, upto, limit, uin, KEY_SENT, limit, limit)
        )
        return [(KEY_MSG, 0, b) if k == KEY_SENT else (k, s, b) for k, s, b in reversed(rows)]

    async def message_history(self, uin: int, before: int, limit: int) -> list[tuple[int, bytes]]:
        def read(conn: sqlite3.Connection) -> list[tuple[int, bytes]]:
            parts = []
            for key in (KEY_MSG, KEY_SENT):
                upto = _last_seq_below(conn, uin, key, before)
                rows = conn.execute(_HISTORY_SQL, (uin, key, upto, limit)).fetchall()
                parts.append([(int(i), bytes(b)) for i, b in rows])
            return history_page(parts, limit)

        return self.db.read_now(read)

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
        values: list[Any] = []
        for (u, d), (key, t) in queued.items():
            values += (u, d, key, t)
        insert_rows(conn, "INSERT INTO devices", 4, values, _COMMIT_UPSERT)

    async def committed_key(self, uin: int, device_id: str) -> bytes | None:
        r = await self._one(
            "SELECT committed_key FROM devices WHERE uin=? AND device_id=?", (uin, device_id)
        )
        return None if r is None else bytes(r[0])

    # ---------------------------------------------------------------- contacts, rooms
    async def contacts_of(self, uin: int) -> set[str]:
        return {r[0] for r in await self._read("SELECT peer FROM contacts WHERE owner=?", (uin,))}

    async def contact_marks(self, owner: int) -> dict[str, tuple[str, bool]]:
        rows = await self._read(
            "SELECT peer, remark, pinned FROM contact_marks WHERE owner=?", (owner,)
        )
        return {r[0]: (r[1], bool(r[2])) for r in rows}

    async def set_contact_mark(
        self,
        owner: int,
        peer: str,
        remark: str,
        pinned: bool,
        now: int,
        appends: Sequence[Append],
    ) -> None:
        def w(conn: sqlite3.Connection, ch: Changes) -> None:
            conn.execute(
                "INSERT INTO contact_marks VALUES (?,?,?,?,?) ON CONFLICT (owner, peer)"
                " DO UPDATE SET remark=excluded.remark, pinned=excluded.pinned,"
                " updated=excluded.updated",
                (owner, peer, remark, int(pinned), now),
            )
            self._w_append(conn, ch, appends)

        await self._write(w)

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

    async def save_room(self, save: RoomSave) -> None:
        room = save.room

        def w(conn: sqlite3.Connection, ch: Changes) -> None:
            if save.create:
                conn.execute("INSERT INTO chatrooms VALUES (?,?,?,?)", save.room_row())
            else:
                conn.execute("UPDATE chatrooms SET topic=? WHERE name=?", (room.topic, room.name))
            conn.executemany("INSERT OR IGNORE INTO room_members VALUES (?,?)", save.added_rows())
            conn.executemany(
                "DELETE FROM room_members WHERE room=? AND member=?", save.removed_rows()
            )
            self._w_append(conn, ch, save.appends)

        await self._write(w)

    # ---------------------------------------------------------------- messages
    def _w_msg_ids(self, conn: sqlite3.Connection, n: int) -> int:
        """Take ``n`` message ids: the first of them (the rest follow it)."""
        if self._w_next_msg_id is None:
            row = conn.execute("SELECT MAX(msg_id) FROM messages").fetchone()
            self._w_next_msg_id = max(int(row[0] or 0) + 1, FIRST_MSG_ID)
        mid = self._w_next_msg_id
        self._w_next_msg_id += n
        return mid

    def store_messages(
        self, sender: int, msgs: Sequence[NewMessage], now: int, device: str = ""
    ) -> Awaitable[list[tuple[int, int, bool]]]:
        # not a coroutine: the future of the group's batch, awaited by the caller
        if not msgs:
            done: asyncio.Future[list[tuple[int, int, bool]]]
            done = asyncio.get_running_loop().create_future()
            done.set_result([])
            return done
        return self.db.submit_batched(self._w_store_batch, (sender, msgs, now, device))

    def _w_store_batch(
        self, conn: sqlite3.Connection, sends: list[_Send]
    ) -> list[list[tuple[int, int, bool]]]:
        """Every send of one group at once: one multi-row INSERT per table (messages,
        items, log rows; :func:`insert_rows`), whatever the number of messages
        (``Database.write_batched``)."""
        count = 0
        for sd in sends:
            count += len(sd[1])
        first = mid = self._w_msg_ids(conn, count)
        rows: list[Any] = []  # the messages' values, _MSG_WIDTH each
        for sender, msgs, now, _ in sends:
            for m in msgs:
                rows += (mid, sender, m.client_msg_id, m.to_user, m.msg_type, now, m.media)
                mid += 1
        stored = insert_rows(conn, _MSG_HEAD, _MSG_WIDTH, rows)
        dups = self._w_dups(conn, rows) if stored != count else {}
        item = int(conn.execute("SELECT MAX(id) FROM items").fetchone()[0] or 0)
        items: list[Any] = []  # (id, body) values
        entries: list[tuple[int, int, int, bytes]] = []
        out: list[list[tuple[int, int, bool]]] = []
        own: dict[tuple[int, str], bool] = {}
        mid = first
        for sender, msgs, now, device in sends:
            res = []
            for m in msgs:
                dup = dups.get(mid) if dups else None
                if dup is not None:
                    res.append((dup[0], dup[1], True))
                    mid += 1
                    continue
                item += 1
                body = m.make_body(mid, now)
                items += (item, body)
                for uin in m.recipients:
                    key = KEY_MSG
                    if uin == sender and device:
                        ok = own.get((uin, device))
                        if ok is None:
                            ok = own[(uin, device)] = self._w_other_device(conn, uin, device, now)
                        key = KEY_MSG if ok else KEY_SENT
                    entries.append((uin, key, item, body))
                res.append((mid, now, False))
                mid += 1
            out.append(res)
        insert_rows(conn, _ITEMS_HEAD, 2, items)
        ch = Changes()
        insert_rows(conn, _LOG_HEAD, 4, self._w_log_rows(conn, ch, entries))
        if ch.heads:
            self._hand_over(ch)
        return out

    @staticmethod
    def _w_dups(conn: sqlite3.Connection, rows: list[Any]) -> dict[int, tuple[int, int]]:
        """The rows the INSERT OR IGNORE left out (``rows``: the messages' values,
        :data:`_MSG_WIDTH` each): msg_id asked -> (msg_id, create_time) of the message
        stored before with the same (sender, client_msg_id).

        Raises:
            sqlite3.IntegrityError: a row was left out for another reason.
        """
        dups: dict[int, tuple[int, int]] = {}
        for i in range(0, len(rows), _MSG_WIDTH):
            mid, sender, cid = rows[i], rows[i + 1], rows[i + 2]
            found = conn.execute(
                "SELECT msg_id, create_time FROM messages WHERE sender=? AND client_msg_id=?",
                (sender, cid),
            ).fetchone()
            if found is None:  # another constraint failed: a write error, not a dup
                raise sqlite3.IntegrityError(f"message {cid!r} was not stored")
            if int(found[0]) != mid:
                dups[mid] = (int(found[0]), int(found[1]))
        return dups

    async def message(self, msg_id: int) -> MessageRow | None:
        if not 0 < msg_id < 1 << 63:  # SQLite integers are signed 64-bit: no such id
            return None
        return MessageRow.from_row(
            await self._one(f"SELECT {_MSG_COLS} FROM messages WHERE msg_id=?", (msg_id,))
        )

    async def message_by_client_id(self, sender: int, client_msg_id: str) -> MessageRow | None:
        return MessageRow.from_row(
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
