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
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from wxnet.proto.errors import MMError
from wxnet.proto.synckey import KEY_MSG
from wxnet.sync.pg_accounts import PostgresAccounts
from wxnet.sync.pg_base import (
    _MSG_COLS,
    MAX_GROUP,
    StoreUnavailable,
    connect_error,
    log,
)
from wxnet.sync.pg_commit import Job
from wxnet.sync.pg_shared import PostgresShared
from wxnet.sync.store import (
    KEY_SENT,
    Append,
    Item,
    MessageRow,
    NewMessage,
    RoomRow,
    RoomSave,
    SyncWindow,
    history_page,
)

if TYPE_CHECKING:
    from wxnet.sync.pg_base import _Conn

__all__ = ["MAX_GROUP", "PostgresStore", "StoreUnavailable", "connect_error"]


class PostgresStore(PostgresShared, PostgresAccounts):
    """Args:
    dsn: a libpq connection URI (``postgresql://user@host:port/db``).
    profile_item: builds the first profile log item of a new account from
        (uin, name, nick).
    min_size, max_size: the connection pool's bounds.
    timeout: seconds for connecting and for any one statement.
    tail_items, tail_bytes, tail_total_bytes: bounds of the in-memory log tail
        (:class:`wxnet.sync.logtail.LogTail`), filled with what this process's own
        commits appended; a newsync it can answer whole up to the head just read from
        PostgreSQL needs no log read.
    """

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

    def head_now(self, uin: int, key: int) -> int | None:
        hs = self._heads.get(uin)
        return None if hs is None else hs.get(key, 0)

    def _clear_heads(self) -> None:
        self._heads.clear()
        self._heads_clear = False

    async def read_log(
        self, uin: int, after: Sequence[tuple[int, int]], max_items: int, max_bytes: int
    ) -> tuple[list[Item], list[int]]:
        window = SyncWindow(max_items, max_bytes)
        todo: list[tuple[int, int]] = []  # keys the tail cannot serve, in order
        tail = self.tail
        heads = self._heads.get(uin)
        for key, seq in after:
            # the ring must reach this loop turn's head read from PostgreSQL: entries
            # another process appended are not in it, and then PostgreSQL answers
            ring = None if heads is None or todo else tail.read(uin, key, seq, heads.get(key, 0))
            if ring is None:
                todo.append((key, seq))
                continue
            tail.hits += 1
            window.take(key, ring, seq)
        if not todo:
            return window.items, window.more
        tail.misses += len(todo)
        if window.full():
            window.more.extend(k for k, _ in todo)
            return window.items, window.more
        keys = [k for k, _ in todo]
        rows = await self._fetch(
            "SELECT k.key, l.seq, i.body FROM unnest($2::int[], $3::bigint[])"
            " WITH ORDINALITY AS k(key, after, o) CROSS JOIN LATERAL"
            " (SELECT seq, item FROM sync_log WHERE uin=$1 AND key=k.key AND seq>k.after"
            "  ORDER BY seq LIMIT $4) l JOIN items i ON i.id=l.item ORDER BY k.o, l.seq",
            uin,
            keys,
            [s for _, s in todo],
            max_items - len(window.items) + 1,
        )
        by_key: dict[int, list[tuple[int, bytes]]] = {}
        for k, s, body in rows:
            by_key.setdefault(int(k), []).append((int(s), bytes(body)))
        for key in keys:
            window.take(key, by_key.get(key, ()))
        return window.items, window.more

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

    async def recent_messages(self, uin: int, upto: int, limit: int) -> list[Item]:
        rows = await self._fetch(
            "SELECT key, seq, body FROM ("
            " (SELECT l.key, l.seq, l.item, i.body FROM sync_log l JOIN items i ON i.id=l.item"
            "  WHERE l.uin=$1 AND l.key=$2 AND l.seq<=$3 ORDER BY l.seq DESC LIMIT $5)"
            " UNION ALL"
            " (SELECT l.key, l.seq, l.item, i.body FROM sync_log l JOIN items i ON i.id=l.item"
            "  WHERE l.uin=$1 AND l.key=$4 ORDER BY l.seq DESC LIMIT $5)"
            ") t ORDER BY item DESC LIMIT $5",
            uin,
            KEY_MSG,
            upto,
            KEY_SENT,
            limit,
        )
        return [
            (KEY_MSG, 0, bytes(b)) if k == KEY_SENT else (int(k), int(s), bytes(b))
            for k, s, b in reversed(rows)
        ]

    async def message_history(self, uin: int, before: int, limit: int) -> list[tuple[int, bytes]]:
        parts = []
        for key in (KEY_MSG, KEY_SENT):
            hi = int(await self.head(uin, key, fresh=True))
            lo = 0 if before > 0 else hi
            while lo < hi:  # the last seq whose item is below before (items grow with seqs)
                mid = (lo + hi + 1) // 2
                item = await self._row(
                    "SELECT item FROM sync_log WHERE uin=$1 AND key=$2 AND seq<=$3"
                    " ORDER BY seq DESC LIMIT 1",
                    uin,
                    key,
                    mid,
                )
                if item is not None and int(item[0]) < before:
                    lo = mid
                else:
                    hi = mid - 1
            rows = await self._fetch(
                "SELECT l.item, i.body FROM sync_log l JOIN items i ON i.id = l.item"
                " WHERE l.uin=$1 AND l.key=$2 AND l.seq<=$3 ORDER BY l.seq DESC LIMIT $4",
                uin,
                key,
                lo,
                limit,
            )
            parts.append([(int(i), bytes(b)) for i, b in rows])
        return history_page(parts, limit)

    async def append(self, appends: Sequence[Append]) -> None:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._enqueue(Job(fut, appends=appends))
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

    async def contact_marks(self, owner: int) -> dict[str, tuple[str, bool]]:
        rows = await self._fetch(
            "SELECT peer, remark, pinned FROM contact_marks WHERE owner=$1", owner
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
        async def w(c: _Conn) -> None:
            await c.execute(
                "INSERT INTO contact_marks VALUES ($1,$2,$3,$4,$5) ON CONFLICT (owner, peer)"
                " DO UPDATE SET remark=excluded.remark, pinned=excluded.pinned,"
                " updated=excluded.updated",
                owner, peer, remark, pinned, now,
            )  # fmt: skip

        await self._appending_tx(w, appends)

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

    async def save_room(self, save: RoomSave) -> None:
        room = save.room

        async def w(c: _Conn) -> None:
            if save.create:
                await c.execute("INSERT INTO chatrooms VALUES ($1,$2,$3,$4)", *save.room_row())
            else:
                await c.execute(
                    "UPDATE chatrooms SET topic=$1 WHERE name=$2", room.topic, room.name
                )
            if save.added:
                await c.executemany(
                    "INSERT INTO room_members VALUES ($1,$2) ON CONFLICT DO NOTHING",
                    save.added_rows(),
                )
            if save.removed:
                await c.executemany(
                    "DELETE FROM room_members WHERE room=$1 AND member=$2", save.removed_rows()
                )

        await self._appending_tx(w, save.appends)

    # ---------------------------------------------------------------- messages
    async def store_messages(
        self, sender: int, msgs: Sequence[NewMessage], now: int, device: str = ""
    ) -> list[tuple[int, int, bool]]:
        if not msgs:
            return []
        # S17: wx_commit asks whether the sender's entry goes to its message log, under
        # the account's lock that a session creation takes too (sync/pg_schema.py)
        fut: asyncio.Future[list[tuple[int, int, bool]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._enqueue(Job(fut, sender=sender, msgs=msgs, now=now, device=device))
        return await fut

    async def message(self, msg_id: int) -> MessageRow | None:
        if not 0 < msg_id < 1 << 63:  # bigint is signed 64-bit: no such id
            return None
        return MessageRow.from_row(
            await self._row(f"SELECT {_MSG_COLS} FROM messages WHERE msg_id=$1", msg_id)
        )

    async def message_by_client_id(self, sender: int, client_msg_id: str) -> MessageRow | None:
        return MessageRow.from_row(
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
