"""The sync engine: accounts, sessions, contacts, chatrooms, messages and the SyncKey
logs (DESIGN section 4; S16-S19, S22-S25, S31, S34).

Model. Every account has one append-only log per key type (1 profile, 2 messages,
3 contacts, 11 chatrooms). A change is an item appended to the log of every account
it concerns (fan-out on write). A SyncKey is the vector of the last seq a device has
seen per key type, so ``newsync(key)`` is "everything after the key" and a repeated old
key returns the same items again (S19): nothing is consumed until the device presents
a newer key or says sync-done, which is recorded as the device's committed key (S31).

Writes run as functions on the database's writer thread (group commit); sequence
numbers and message ids are assigned there, inside the transaction, so a reader can
never see seq N+1 committed before seq N. When a group commits, the new heads are
published and ``on_news`` is called on the event loop with the accounts whose logs grew.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMError, MMRet, RemoteProtocolError
from wxnet.proto.synckey import (
    KEY_CHATROOM,
    KEY_CONTACT,
    KEY_MSG,
    KEY_PROFILE,
    SELECTOR_BITS,
    SyncKey,
)
from wxnet.sync import media
from wxnet.sync.db import Database
from wxnet.sync.items import Item, stored
from wxnet.sync.schema import init_schema

__all__ = ["Engine", "EngineConfig", "Session", "SyncResult", "add_user_sync"]

SERVED_KEYS = (KEY_PROFILE, KEY_MSG, KEY_CONTACT, KEY_CHATROOM)
CMD_MOD_USERINFO = 1
CMD_MOD_CONTACT = 2
CMD_DEL_CONTACT = 4
CMD_ADD_MSG = 5
CMD_MOD_MSG_STATUS = 6
CMD_REVOKE = 10002
MSG_TEXT, MSG_IMAGE, MSG_VOICE = 1, 3, 34
MEDIA_TYPES = {MSG_IMAGE, MSG_VOICE, 43, 62}
STATUS_SENT, STATUS_READ = 2, 4
ROOM_SUFFIX = "@chatroom"
_NAME_RE = re.compile(r"[a-z][a-z0-9_.-]{2,31}")
_FIRST_MSG_ID = 1_000_000_000

_hasher = PasswordHasher()


@dataclass(frozen=True, slots=True)
class EngineConfig:
    session_ttl: int = 30 * 24 * 3600
    sync_window_items: int = 100
    sync_window_bytes: int = 64 * 1024
    init_recent_messages: int = 50
    max_send_batch: int = 10
    max_content_bytes: int = 16 * 1024
    max_room_members: int = 500
    revoke_window: int = 120
    max_image_bytes: int = 10 * 1024 * 1024
    max_voice_bytes: int = 2 * 1024 * 1024
    max_chunk_bytes: int = 64 * 1024
    login_failures_per_account: int = 5
    login_failures_per_address: int = 20
    login_failure_window: float = 60.0
    durability: str = "FULL"


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    uin: int
    user_name: str
    device_id: str
    device_name: str
    kind: str
    expires: int


@dataclass(frozen=True, slots=True)
class SyncResult:
    items: list[Item]
    key: SyncKey
    continue_flag: int


@dataclass(slots=True)
class _Room:
    name: str
    topic: str
    owner: str
    members: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Changes:
    """What one write function did, published after its group commits."""

    heads: dict[tuple[int, int], int] = field(default_factory=dict)
    news: dict[int, int] = field(default_factory=dict)


def validate_user_name(name: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise MMError(
            MMRet.ERR_ARG,
            "user names are 3-32 characters: a lowercase letter, then letters, digits, . _ -",
        )


def check_new_user(name: str, password: str, nick: str | None) -> str:
    """Validate a new account's fields; returns the nick name to store.

    Raises:
        MMError: ERR_ARG, saying which field is wrong.
    """
    validate_user_name(name)
    if len(password) < 6:
        raise MMError(MMRet.ERR_ARG, "passwords must have at least 6 characters")
    nick = nick or name
    if len(nick) > 64:
        raise MMError(MMRet.ERR_ARG, "nick names have at most 64 characters")
    return nick


def insert_user(conn: sqlite3.Connection, name: str, pw_hash: str, nick: str, now: float) -> int:
    """Insert an account and its first profile item (inside the caller's transaction)."""
    try:
        cur = conn.execute(
            "INSERT INTO accounts (user_name, nick_name, pw_hash, created) VALUES (?,?,?,?)",
            (name, nick, pw_hash, int(now)),
        )
    except sqlite3.IntegrityError:
        raise MMError(MMRet.ERR_ARG, f"user {name!r} already exists") from None
    uin = int(cur.lastrowid or 0)
    item = pb.CmdItem(
        cmd_id=CMD_MOD_USERINFO, user_info=pb.UserInfo(uin=uin, user_name=name, nick_name=nick)
    )
    conn.execute(
        "INSERT INTO sync_log (uin, key, seq, body) VALUES (?,?,?,?)",
        (uin, KEY_PROFILE, 1, stored(item)),
    )
    return uin


def add_user_sync(
    conn: sqlite3.Connection, name: str, password: str, nick: str | None, now: float
) -> int:
    """Create an account on an open connection (used by ``wxnet user add``, which may
    run while the server does). Returns the new uin.

    Raises:
        MMError: ERR_ARG for a bad name or password, or a name that is taken.
    """
    nick = check_new_user(name, password, nick)
    pw_hash = _hasher.hash(password)
    conn.execute("BEGIN IMMEDIATE")
    try:
        uin = insert_user(conn, name, pw_hash, nick, now)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return uin


class Engine:
    """The messaging domain on top of a :class:`Database`.

    Args:
        data_dir: where ``wxnet.db`` and ``media/`` live (created if missing).
        config: limits and policies.
        on_news: called on the event loop with ``{uin: selector bits}`` after every
            group commit that grew some account's logs.
        clock: wall-clock seconds (injectable for tests).
    """

    def __init__(
        self,
        data_dir: Path,
        config: EngineConfig | None = None,
        *,
        on_news: Callable[[dict[int, int]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or EngineConfig()
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.media = media.MediaStore(data_dir / "media")
        self.db = Database(
            data_dir / "wxnet.db", synchronous=self.config.durability, init=init_schema
        )
        self.clock = clock
        self.on_news = on_news
        self._loop: asyncio.AbstractEventLoop | None = None
        # Loop-side caches (filled lazily; updated after commits).
        self._heads: dict[tuple[int, int], int] = {}
        self._sessions: dict[str, Session] = {}
        self._uin_by_name: dict[str, int] = {}
        self._account: dict[int, tuple[str, str]] = {}  # uin -> (user_name, nick)
        self._contacts: dict[int, set[str]] = {}
        self._rooms: dict[str, _Room] = {}
        self._committed: dict[tuple[int, str], bytes] = {}
        self._login_failures: dict[str, deque[float]] = {}
        self._upload_locks: dict[tuple[int, str, str], asyncio.Lock] = {}
        # Writer-side state (touched only on the writer thread).
        self._w_heads: dict[tuple[int, int], int] = {}
        self._w_next_msg_id: int | None = None
        self.stats = {"messages": 0, "duplicates": 0, "syncs": 0}

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    def close(self) -> None:
        self.db.close()

    # ================================================================ accounts
    async def add_user(self, name: str, password: str, nick: str | None = None) -> int:
        now = self.clock()
        nick_name = check_new_user(name, password, nick)
        pw_hash = await asyncio.to_thread(_hasher.hash, password)
        uin: int = await self.db.write(lambda c: insert_user(c, name, pw_hash, nick_name, now))
        return uin

    async def lookup(self, name: str) -> int | None:
        uin = self._uin_by_name.get(name)
        if uin is not None:
            return uin
        row = await self.db.read(
            lambda c: c.execute(
                "SELECT uin, nick_name FROM accounts WHERE user_name=?", (name,)
            ).fetchone()
        )
        if row is None:
            return None
        self._uin_by_name[name] = row[0]
        self._account[row[0]] = (name, row[1])
        return int(row[0])

    async def account(self, uin: int) -> tuple[str, str]:
        acc = self._account.get(uin)
        if acc is None:
            row = await self.db.read(
                lambda c: c.execute(
                    "SELECT user_name, nick_name FROM accounts WHERE uin=?", (uin,)
                ).fetchone()
            )
            if row is None:
                raise MMError(MMRet.ERR_NOUSER, f"no account {uin}")
            acc = (row[0], row[1])
            self._account[uin] = acc
            self._uin_by_name[row[0]] = uin
        return acc

    async def user_info(self, uin: int) -> pb.UserInfo:
        name, nick = await self.account(uin)
        return pb.UserInfo(uin=uin, user_name=name, nick_name=nick)

    # ================================================================ sessions
    async def login(
        self, user_name: str, password: str, device_id: str, device_name: str, peer: str = ""
    ) -> Session:
        """Check the password (argon2id, off the event loop) and open a session.

        Raises:
            MMError: ERR_FREQ_LIMITED, ERR_NOUSER, ERR_PASSWORD, ERR_ARG.
        """
        now = self.clock()
        if not device_id or len(device_id) > 64:
            raise MMError(MMRet.ERR_ARG, "device_id must be 1-64 characters")
        self._check_login_rate(f"u:{user_name}", self.config.login_failures_per_account, now)
        if peer:
            self._check_login_rate(f"a:{peer}", self.config.login_failures_per_address, now)
        row = await self.db.read(
            lambda c: c.execute(
                "SELECT uin, pw_hash FROM accounts WHERE user_name=?", (user_name,)
            ).fetchone()
        )
        ok = False
        if row is not None:
            assert self._loop is not None
            ok = await self._loop.run_in_executor(None, _verify_password, row[1], password)
        if not ok:
            self._note_login_failure(f"u:{user_name}", now)
            if peer:
                self._note_login_failure(f"a:{peer}", now)
            if row is None:
                raise MMError(MMRet.ERR_NOUSER, f"no user {user_name!r}")
            raise MMError(MMRet.ERR_PASSWORD, "wrong password")
        return await self.create_session(int(row[0]), device_id, device_name or device_id)

    async def create_session(
        self, uin: int, device_id: str, device_name: str, kind: str = "mobile", ttl: int = 0
    ) -> Session:
        name, _ = await self.account(uin)
        now = int(self.clock())
        sid = secrets.token_urlsafe(24)
        sess = Session(
            sid, uin, name, device_id, device_name, kind, now + (ttl or self.config.session_ttl)
        )
        await self.db.write(
            lambda c: c.execute(
                "INSERT INTO sessions VALUES (?,?,?,?,?,?,?)",
                (sid, uin, device_id, device_name, kind, now, sess.expires),
            )
        )
        self._sessions[sid] = sess
        return sess

    async def session(self, sid: str, uin: int) -> Session:
        """The live session ``sid`` of account ``uin``.

        Raises:
            MMError: ERR_SESSIONTIMEOUT when unknown, expired, or of another account.
        """
        sess = self._sessions.get(sid)
        if sess is None and sid:
            row = await self.db.read(
                lambda c: c.execute(
                    "SELECT s.sid, s.uin, a.user_name, s.device_id, s.device_name, s.kind,"
                    " s.expires FROM sessions s JOIN accounts a ON a.uin=s.uin WHERE s.sid=?",
                    (sid,),
                ).fetchone()
            )
            if row is not None:
                sess = Session(*row)
                self._sessions[sid] = sess
        if sess is None or sess.uin != uin:
            raise MMError(MMRet.ERR_SESSIONTIMEOUT, "unknown session: log in again")
        if sess.expires < self.clock():
            self._sessions.pop(sid, None)
            raise MMError(MMRet.ERR_SESSIONTIMEOUT, "session expired: log in again")
        return sess

    async def logout(self, sess: Session) -> None:
        self._sessions.pop(sess.sid, None)
        await self.db.write(lambda c: c.execute("DELETE FROM sessions WHERE sid=?", (sess.sid,)))

    def _check_login_rate(self, bucket: str, limit: int, now: float) -> None:
        q = self._login_failures.get(bucket)
        if q is None:
            return
        while q and q[0] < now - self.config.login_failure_window:
            q.popleft()
        if len(q) >= limit:
            raise MMError(MMRet.ERR_FREQ_LIMITED, "too many failed logins; wait a minute")

    def _note_login_failure(self, bucket: str, now: float) -> None:
        if len(self._login_failures) > 100_000:
            self._login_failures.clear()
        self._login_failures.setdefault(bucket, deque()).append(now)

    # ================================================================ heads and news
    async def head(self, uin: int, key: int) -> int:
        h = self._heads.get((uin, key))
        if h is None:
            row = await self.db.read(
                lambda c: c.execute(
                    "SELECT MAX(seq) FROM sync_log WHERE uin=? AND key=?", (uin, key)
                ).fetchone()
            )
            h = int(row[0] or 0)
            h = max(h, self._heads.get((uin, key), 0))
            self._heads[(uin, key)] = h
        return h

    async def news(self, uin: int, key: SyncKey, selector: int = 0) -> int:
        """Selector bits of the key types that have items after ``key``."""
        sel = 0
        for k in SERVED_KEYS:
            bit = SELECTOR_BITS[k]
            if selector and not selector & bit:
                continue
            if await self.head(uin, k) > key.get(k):
                sel |= bit
        return sel

    def _publish(self, ch: _Changes) -> None:
        """Writer thread, after commit: hand the changes to the event loop."""
        if self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._apply_changes, ch)
        except RuntimeError:
            pass

    def _apply_changes(self, ch: _Changes) -> None:
        for hk, seq in ch.heads.items():
            if seq > self._heads.get(hk, 0):
                self._heads[hk] = seq
        if ch.news and self.on_news is not None:
            self.on_news(ch.news)

    # -- writer-thread helpers ---------------------------------------------------------
    def _w_append(
        self, conn: sqlite3.Connection, ch: _Changes, uin: int, key: int, body: bytes
    ) -> int:
        hk = (uin, key)
        seq = self._w_heads.get(hk)
        if seq is None:
            row = conn.execute(
                "SELECT MAX(seq) FROM sync_log WHERE uin=? AND key=?", (uin, key)
            ).fetchone()
            seq = int(row[0] or 0)
        seq += 1
        self._w_heads[hk] = seq
        conn.execute(
            "INSERT INTO sync_log (uin, key, seq, body) VALUES (?,?,?,?)", (uin, key, seq, body)
        )
        ch.heads[hk] = seq
        ch.news[uin] = ch.news.get(uin, 0) | SELECTOR_BITS[key]
        return seq

    def _w_msg_id(self, conn: sqlite3.Connection) -> int:
        if self._w_next_msg_id is None:
            row = conn.execute("SELECT MAX(msg_id) FROM messages").fetchone()
            self._w_next_msg_id = max(int(row[0] or 0) + 1, _FIRST_MSG_ID)
        mid = self._w_next_msg_id
        self._w_next_msg_id += 1
        return mid

    async def _write(self, fn: Callable[[sqlite3.Connection, _Changes], Any]) -> Any:
        def job(conn: sqlite3.Connection) -> Any:
            ch = _Changes()
            value = fn(conn, ch)
            if ch.heads:
                self.db.after_commit(lambda: self._publish(ch))
            return value

        return await self.db.write(job)

    # ================================================================ sync
    def parse_key(self, key_buf: bytes) -> SyncKey:
        try:
            return SyncKey.from_bytes(key_buf)
        except RemoteProtocolError as exc:
            raise MMError(MMRet.ERR_SYNCKEY_INVALID, f"{exc}: call newinit") from None

    async def check_key(self, uin: int, key: SyncKey) -> None:
        for k in SERVED_KEYS:
            if key.get(k) > await self.head(uin, k):
                raise MMError(
                    MMRet.ERR_SYNCKEY_INVALID,
                    f"SyncKey {k}_{key.get(k)} is ahead of this server: call newinit",
                )

    async def newsync(self, sess: Session, key: SyncKey, selector: int = 0) -> SyncResult:
        """Items after ``key`` for the selected types, up to the window.

        Presenting ``key`` commits everything up to it for this device (S19, S31).

        Raises:
            MMError: ERR_SYNCKEY_INVALID for a key this server cannot serve.
        """
        await self.check_key(sess.uin, key)
        self.stats["syncs"] += 1
        self.commit(sess, key)
        wanted = [k for k in SERVED_KEYS if not selector or selector & SELECTOR_BITS[k]]
        todo = [(k, key.get(k)) for k in wanted if await self.head(sess.uin, k) > key.get(k)]
        uin = sess.uin
        max_items, max_bytes = self.config.sync_window_items, self.config.sync_window_bytes

        def read(conn: sqlite3.Connection) -> tuple[list[Item], int]:
            items: list[Item] = []
            size = 0
            cont = 0
            for k, after in todo:
                if len(items) >= max_items or size >= max_bytes:
                    cont |= SELECTOR_BITS[k]
                    continue
                rows = conn.execute(
                    "SELECT seq, body FROM sync_log WHERE uin=? AND key=? AND seq>?"
                    " ORDER BY seq LIMIT ?",
                    (uin, k, after, max_items - len(items) + 1),
                ).fetchall()
                for seq, body in rows:
                    if len(items) >= max_items or (items and size + len(body) > max_bytes):
                        cont |= SELECTOR_BITS[k]
                        break
                    items.append((k, seq, body))
                    size += len(body)
            return items, cont

        items, cont = await self.db.read(read) if todo else ([], 0)
        new = key.as_dict()
        for k in wanted:
            new.setdefault(k, key.get(k))
        for k, seq, _ in items:
            new[k] = seq
        return SyncResult(items, SyncKey.of(new), cont)

    async def newinit(self, sess: Session) -> SyncResult:
        """A snapshot for a new device: profile, contacts, chatrooms, recent messages,
        and the key to continue from with newsync."""
        uin = sess.uin
        heads = {k: await self.head(uin, k) for k in SERVED_KEYS}
        user = await self.user_info(uin)
        contacts = await self.contacts(sess)
        recent = self.config.init_recent_messages

        def read(conn: sqlite3.Connection) -> list[Item]:
            rows = conn.execute(
                "SELECT seq, body FROM sync_log WHERE uin=? AND key=? AND seq<=?"
                " ORDER BY seq DESC LIMIT ?",
                (uin, KEY_MSG, heads[KEY_MSG], recent),
            ).fetchall()
            return [(KEY_MSG, seq, body) for seq, body in reversed(rows)]

        msgs = await self.db.read(read)
        items: list[Item] = [
            (KEY_PROFILE, heads[KEY_PROFILE], stored(pb.CmdItem(cmd_id=1, user_info=user)))
        ]
        for c in contacts:
            k = KEY_CHATROOM if c.is_chatroom else KEY_CONTACT
            items.append((k, heads[k], stored(pb.CmdItem(cmd_id=CMD_MOD_CONTACT, contact=c))))
        items += msgs
        return SyncResult(items, SyncKey.of(heads), 0)

    def commit(self, sess: Session, key: SyncKey) -> None:
        """Record ``key`` as the device's committed key (the "acknowledged" mark of
        S31). Queued without waiting: it changes no answer the server gives."""
        if not key:
            return
        blob = key.to_bytes()
        ck = (sess.uin, sess.device_id)
        if self._committed.get(ck) == blob:
            return
        self._committed[ck] = blob
        now = int(self.clock())
        self.db.write_nowait(
            lambda c: c.execute(
                "INSERT INTO devices VALUES (?,?,?,?) ON CONFLICT(uin, device_id)"
                " DO UPDATE SET committed_key=excluded.committed_key, updated=excluded.updated",
                (ck[0], ck[1], blob, now),
            )
        )

    async def committed_key(self, uin: int, device_id: str) -> SyncKey | None:
        row = await self.db.read(
            lambda c: c.execute(
                "SELECT committed_key FROM devices WHERE uin=? AND device_id=?", (uin, device_id)
            ).fetchone()
        )
        return None if row is None else SyncKey.from_bytes(row[0])

    # ================================================================ contacts
    async def _contact_set(self, uin: int) -> set[str]:
        s = self._contacts.get(uin)
        if s is None:
            rows = await self.db.read(
                lambda c: c.execute("SELECT peer FROM contacts WHERE owner=?", (uin,)).fetchall()
            )
            s = {r[0] for r in rows}
            self._contacts[uin] = s
        return s

    async def is_contact(self, uin: int, name: str) -> bool:
        return name in await self._contact_set(uin)

    async def _contact_pb(self, name: str) -> pb.Contact:
        uin = await self.lookup(name)
        if uin is None:
            raise MMError(MMRet.ERR_NOUSER, f"no user {name!r}")
        _, nick = await self.account(uin)
        return pb.Contact(user_name=name, nick_name=nick, contact_type=1)

    async def add_contact(self, sess: Session, name: str) -> pb.Contact:
        peer = await self.lookup(name)
        if peer is None:
            raise MMError(MMRet.ERR_NOUSER, f"no user {name!r}")
        if peer == sess.uin:
            raise MMError(MMRet.ERR_ARG, "you cannot add yourself")
        me_pb = await self._contact_pb(sess.user_name)
        peer_pb = await self._contact_pb(name)
        now = int(self.clock())
        me, me_name = sess.uin, sess.user_name

        def w(conn: sqlite3.Connection, ch: _Changes) -> None:
            conn.execute("INSERT OR IGNORE INTO contacts VALUES (?,?,?)", (me, name, now))
            conn.execute("INSERT OR IGNORE INTO contacts VALUES (?,?,?)", (peer, me_name, now))
            self._w_append(conn, ch, me, KEY_CONTACT, _contact_item(peer_pb))
            self._w_append(conn, ch, peer, KEY_CONTACT, _contact_item(me_pb))

        await self._write(w)
        (await self._contact_set(me)).add(name)
        (await self._contact_set(peer)).add(me_name)
        return peer_pb

    async def contacts(self, sess: Session, names: Sequence[str] = ()) -> list[pb.Contact]:
        out = [await self._contact_pb(n) for n in sorted(await self._contact_set(sess.uin))]
        for room in await self._rooms_of(sess.user_name):
            out.append(room)
        if names:
            want = set(names)
            out = [c for c in out if c.user_name in want]
        return out

    # ================================================================ chatrooms
    async def _room(self, name: str) -> _Room | None:
        room = self._rooms.get(name)
        if room is None:

            def read(conn: sqlite3.Connection) -> _Room | None:
                r = conn.execute(
                    "SELECT topic, owner FROM chatrooms WHERE name=?", (name,)
                ).fetchone()
                if r is None:
                    return None
                ms = conn.execute(
                    "SELECT member FROM room_members WHERE room=? ORDER BY member", (name,)
                ).fetchall()
                return _Room(name, r[0], r[1], [m[0] for m in ms])

            room = await self.db.read(read)
            if room is not None:
                self._rooms[name] = room
        return room

    async def _rooms_of(self, user_name: str) -> list[pb.Contact]:
        rows = await self.db.read(
            lambda c: c.execute(
                "SELECT room FROM room_members WHERE member=? ORDER BY room", (user_name,)
            ).fetchall()
        )
        out = []
        for (name,) in rows:
            room = await self._room(name)
            if room is not None:
                out.append(_room_pb(room))
        return out

    async def _member_uins(self, names: Iterable[str]) -> list[int]:
        out = []
        for n in names:
            u = await self.lookup(n)
            if u is not None:
                out.append(u)
        return out

    async def create_room(self, sess: Session, topic: str, members: Sequence[str]) -> pb.Contact:
        if len(topic) > 64:
            raise MMError(MMRet.ERR_ARG, "a group name has at most 64 characters")
        names = sorted({sess.user_name, *members})
        if len(names) < 2:
            raise MMError(MMRet.ERR_ARG, "a group needs at least one other member")
        if len(names) > self.config.max_room_members:
            raise MMError(MMRet.ERR_TOO_LARGE, f"at most {self.config.max_room_members} members")
        for n in members:
            if n != sess.user_name and not await self.is_contact(sess.uin, n):
                raise MMError(MMRet.ERR_NOT_FRIEND, f"{n!r} is not your contact")
        room = _Room(secrets.token_hex(8) + ROOM_SUFFIX, topic, sess.user_name, names)
        uins = await self._member_uins(names)
        now = int(self.clock())
        body = _contact_item(_room_pb(room))

        def w(conn: sqlite3.Connection, ch: _Changes) -> None:
            conn.execute(
                "INSERT INTO chatrooms VALUES (?,?,?,?)", (room.name, topic, room.owner, now)
            )
            conn.executemany(
                "INSERT INTO room_members VALUES (?,?)", [(room.name, n) for n in names]
            )
            for u in uins:
                self._w_append(conn, ch, u, KEY_CHATROOM, body)

        await self._write(w)
        self._rooms[room.name] = room
        return _room_pb(room)

    async def mod_room(
        self, sess: Session, name: str, op: int, members: Sequence[str], topic: str
    ) -> pb.Contact:
        room = await self._room(name)
        if room is None or sess.user_name not in room.members:
            raise MMError(MMRet.ERR_NOT_FOUND, f"no group {name!r} that you are in")
        new = _Room(room.name, room.topic, room.owner, list(room.members))
        removed: list[str] = []
        if op == 1:
            for n in members:
                if n in new.members:
                    continue
                if not await self.is_contact(sess.uin, n):
                    raise MMError(MMRet.ERR_NOT_FRIEND, f"{n!r} is not your contact")
                new.members.append(n)
            if len(new.members) > self.config.max_room_members:
                raise MMError(
                    MMRet.ERR_TOO_LARGE, f"at most {self.config.max_room_members} members"
                )
            new.members.sort()
        elif op == 2:
            for n in members:
                if n not in new.members:
                    raise MMError(MMRet.ERR_NOT_FOUND, f"{n!r} is not in the group")
                if n != sess.user_name and sess.user_name != room.owner:
                    raise MMError(MMRet.ERR_NOT_ALLOWED, "only the owner removes other members")
                new.members.remove(n)
                removed.append(n)
        elif op == 3:
            if not topic or len(topic) > 64:
                raise MMError(MMRet.ERR_ARG, "a group name has 1-64 characters")
            new.topic = topic
        else:
            raise MMError(MMRet.ERR_ARG, f"unknown op {op}: 1 add, 2 remove, 3 rename")
        uins = await self._member_uins(new.members)
        gone = await self._member_uins(removed)
        body = _contact_item(_room_pb(new))
        deleted = stored(
            pb.CmdItem(cmd_id=CMD_DEL_CONTACT, del_contact=pb.DelContact(user_name=name))
        )
        added = [n for n in new.members if n not in room.members]

        def w(conn: sqlite3.Connection, ch: _Changes) -> None:
            conn.execute("UPDATE chatrooms SET topic=? WHERE name=?", (new.topic, name))
            conn.executemany(
                "INSERT OR IGNORE INTO room_members VALUES (?,?)", [(name, n) for n in added]
            )
            conn.executemany(
                "DELETE FROM room_members WHERE room=? AND member=?", [(name, n) for n in removed]
            )
            for u in uins:
                self._w_append(conn, ch, u, KEY_CHATROOM, body)
            for u in gone:
                self._w_append(conn, ch, u, KEY_CHATROOM, deleted)

        await self._write(w)
        self._rooms[name] = new
        return _room_pb(new)

    # ================================================================ messages
    async def _recipients(self, sess: Session, to_user: str) -> list[int]:
        """Accounts whose message log receives a message from ``sess`` to ``to_user``.

        Raises:
            MMError: ERR_NOUSER / ERR_NOT_FRIEND / ERR_NOT_FOUND.
        """
        if to_user.endswith(ROOM_SUFFIX):
            room = await self._room(to_user)
            if room is None or sess.user_name not in room.members:
                raise MMError(MMRet.ERR_NOT_FOUND, f"no group {to_user!r} that you are in")
            return await self._member_uins(room.members)
        if to_user == sess.user_name:
            return [sess.uin]
        peer = await self.lookup(to_user)
        if peer is None:
            raise MMError(MMRet.ERR_NOUSER, f"no user {to_user!r}")
        if not await self.is_contact(sess.uin, to_user):
            raise MMError(MMRet.ERR_NOT_FRIEND, f"{to_user!r} is not your contact")
        return [sess.uin, peer]

    async def send(self, sess: Session, msgs: Sequence[pb.MicroMsg]) -> list[pb.SendMsgResult]:
        """Store a batch of messages; one result per message, in order.

        Returns only after every stored message is durable (the ack of S16). A message
        whose (sender, client_msg_id) was seen before is not stored again: its result
        carries the original msg_id and create_time (S23).
        """
        if len(msgs) > self.config.max_send_batch:
            raise MMError(MMRet.ERR_TOO_LARGE, f"at most {self.config.max_send_batch} messages")
        results: list[pb.SendMsgResult] = []
        todo: list[tuple[int, pb.MicroMsg, list[int]]] = []
        for i, m in enumerate(msgs):
            res = pb.SendMsgResult(client_msg_id=m.client_msg_id, to_user=m.to_user)
            results.append(res)
            try:
                if not m.client_msg_id or len(m.client_msg_id) > 64:
                    raise MMError(MMRet.ERR_ARG, "client_msg_id must be 1-64 characters")
                if m.msg_type in MEDIA_TYPES or m.msg_type == 0:
                    raise MMError(MMRet.ERR_ARG, f"msg_type {m.msg_type} cannot be sent as text")
                if len(m.content.encode()) > self.config.max_content_bytes:
                    raise MMError(MMRet.ERR_TOO_LARGE, "message content is too long")
                todo.append((i, m, await self._recipients(sess, m.to_user)))
            except MMError as exc:
                res.ret, res.err_msg = exc.code, exc.message
        if todo:
            done = await self._store_messages(
                sess,
                [(m.client_msg_id, m.to_user, m.msg_type, m.content, r, None) for _, m, r in todo],
            )
            for (i, _, _), (mid, ctime) in zip(todo, done, strict=True):
                results[i].msg_id, results[i].create_time = mid, ctime
        return results

    async def _store_messages(
        self,
        sess: Session,
        msgs: Sequence[tuple[str, str, int, str, list[int], pb.AddMsg | None]],
    ) -> list[tuple[int, int]]:
        """Write messages (dedup, id, fan-out) in one job. Each tuple: client_msg_id,
        to_user, type, content, recipient uins, template AddMsg (media fields) or None."""
        now = int(self.clock())
        sender, sender_name = sess.uin, sess.user_name

        def w(conn: sqlite3.Connection, ch: _Changes) -> list[tuple[int, int]]:
            out = []
            for cmid, to_user, mtype, content, rcpts, tmpl in msgs:
                row = conn.execute(
                    "SELECT msg_id, create_time FROM messages WHERE sender=? AND client_msg_id=?",
                    (sender, cmid),
                ).fetchone()
                if row is not None:
                    self.stats["duplicates"] += 1
                    out.append((int(row[0]), int(row[1])))
                    continue
                mid = self._w_msg_id(conn)
                media_ref = None
                add = pb.AddMsg()
                if tmpl is not None:
                    add.CopyFrom(tmpl)
                    media_ref = tmpl.content or None
                add.msg_id = mid
                add.from_user = sender_name
                add.to_user = to_user
                add.msg_type = mtype
                add.content = content
                add.status = STATUS_SENT
                add.create_time = now
                add.client_msg_id = cmid
                if to_user.endswith(ROOM_SUFFIX):
                    add.real_from = sender_name
                conn.execute(
                    "INSERT INTO messages (msg_id, sender, client_msg_id, to_user, msg_type,"
                    " create_time, media) VALUES (?,?,?,?,?,?,?)",
                    (mid, sender, cmid, to_user, mtype, now, media_ref),
                )
                body = stored(pb.CmdItem(cmd_id=CMD_ADD_MSG, add_msg=add))
                for u in rcpts:
                    self._w_append(conn, ch, u, KEY_MSG, body)
                self.stats["messages"] += 1
                out.append((mid, now))
            return out

        result: list[tuple[int, int]] = await self._write(w)
        return result

    async def message(self, msg_id: int) -> tuple[int, str, int, int, int, str | None] | None:
        """(sender uin, to_user, type, create_time, revoked, media) of a message."""
        row = await self.db.read(
            lambda c: c.execute(
                "SELECT sender, to_user, msg_type, create_time, revoked, media FROM messages"
                " WHERE msg_id=?",
                (msg_id,),
            ).fetchone()
        )
        return None if row is None else (row[0], row[1], row[2], row[3], row[4], row[5])

    async def can_see(self, sess: Session, sender: int, to_user: str) -> bool:
        if sender == sess.uin or to_user == sess.user_name:
            return True
        if to_user.endswith(ROOM_SUFFIX):
            room = await self._room(to_user)
            return room is not None and sess.user_name in room.members
        return False

    async def mark_read(self, sess: Session, talker: str, last_msg_id: int) -> None:
        """A read receipt (S22): the reader's other devices and, in a 1:1 chat, the
        peer are told that ``talker``'s messages up to ``last_msg_id`` were read."""
        rcpts = [sess.uin]
        if not talker.endswith(ROOM_SUFFIX) and talker != sess.user_name:
            peer = await self.lookup(talker)
            if peer is None:
                raise MMError(MMRet.ERR_NOUSER, f"no user {talker!r}")
            rcpts.append(peer)
        elif talker.endswith(ROOM_SUFFIX) and await self._room(talker) is None:
            raise MMError(MMRet.ERR_NOT_FOUND, f"no group {talker!r}")
        body = stored(
            pb.CmdItem(
                cmd_id=CMD_MOD_MSG_STATUS,
                msg_status=pb.ModMsgStatus(
                    talker=talker, reader=sess.user_name, msg_id=last_msg_id, status=STATUS_READ
                ),
            )
        )

        def w(conn: sqlite3.Connection, ch: _Changes) -> None:
            for u in rcpts:
                self._w_append(conn, ch, u, KEY_MSG, body)

        await self._write(w)

    async def revoke(self, sess: Session, msg_id: int, client_msg_id: str) -> None:
        if not msg_id:
            row = await self.db.read(
                lambda c: c.execute(
                    "SELECT msg_id FROM messages WHERE sender=? AND client_msg_id=?",
                    (sess.uin, client_msg_id),
                ).fetchone()
            )
            if row is None:
                raise MMError(MMRet.ERR_NOT_FOUND, f"no message {client_msg_id!r} of yours")
            msg_id = int(row[0])
        msg = await self.message(msg_id)
        if msg is None or msg[0] != sess.uin:
            raise MMError(MMRet.ERR_NOT_FOUND, f"no message {msg_id} of yours")
        _, to_user, _, ctime, revoked, _ = msg
        if revoked:
            return
        if self.clock() - ctime > self.config.revoke_window:
            raise MMError(
                MMRet.ERR_REVOKE_EXPIRED,
                f"messages can be revoked within {self.config.revoke_window} s of sending",
            )
        rcpts = await self._recipients_any(sess, to_user)
        row2 = await self.db.read(
            lambda c: c.execute(
                "SELECT client_msg_id FROM messages WHERE msg_id=?", (msg_id,)
            ).fetchone()
        )
        body = stored(
            pb.CmdItem(
                cmd_id=CMD_REVOKE,
                revoke=pb.RevokeMsg(
                    msg_id=msg_id,
                    client_msg_id=row2[0],
                    from_user=sess.user_name,
                    to_user=to_user,
                    replace_text=f'"{sess.user_name}" recalled a message',
                ),
            )
        )

        def w(conn: sqlite3.Connection, ch: _Changes) -> None:
            conn.execute("UPDATE messages SET revoked=1 WHERE msg_id=?", (msg_id,))
            for u in rcpts:
                self._w_append(conn, ch, u, KEY_MSG, body)

        await self._write(w)

    async def _recipients_any(self, sess: Session, to_user: str) -> list[int]:
        """Recipients of an existing message, even if the contact or group changed."""
        if to_user.endswith(ROOM_SUFFIX):
            room = await self._room(to_user)
            return await self._member_uins(room.members if room else [sess.user_name])
        peer = await self.lookup(to_user)
        return sorted({sess.uin, *([peer] if peer is not None else [])})

    # ================================================================ media (S24, S25)
    def _upload_lock(self, owner: int, cid: str, kind: str) -> asyncio.Lock:
        k = (owner, cid, kind)
        lock = self._upload_locks.get(k)
        if lock is None:
            if len(self._upload_locks) > 10_000:
                self._upload_locks = {
                    key: lk for key, lk in self._upload_locks.items() if lk.locked()
                }
            lock = self._upload_locks[k] = asyncio.Lock()
        return lock

    async def _existing(self, sess: Session, cid: str) -> tuple[int, int] | None:
        row = await self.db.read(
            lambda c: c.execute(
                "SELECT msg_id, create_time FROM messages WHERE sender=? AND client_msg_id=?",
                (sess.uin, cid),
            ).fetchone()
        )
        return None if row is None else (int(row[0]), int(row[1]))

    async def upload_image(
        self, sess: Session, req: pb.UploadMsgImgRequest
    ) -> pb.UploadMsgImgResponse:
        """Store one chunk of an image; chunks may come in any order, several at once
        (S24). The reply's start_pos is the lowest offset still missing; once every byte
        is stored the image message exists and the reply carries its id and thumbnail."""
        cid, total = req.client_img_id, req.total_len
        resp = pb.UploadMsgImgResponse(client_img_id=cid, total_len=total)
        if not cid or len(cid) > 64:
            raise MMError(MMRet.ERR_ARG, "client_img_id must be 1-64 characters")
        if not 0 < total <= self.config.max_image_bytes:
            raise MMError(
                MMRet.ERR_TOO_LARGE,
                f"images are 1 to {self.config.max_image_bytes} bytes (total_len={total})",
            )
        if len(req.data) > self.config.max_chunk_bytes:
            raise MMError(
                MMRet.ERR_TOO_LARGE, f"chunks are at most {self.config.max_chunk_bytes} bytes"
            )
        if req.start_pos + len(req.data) > total:
            raise MMError(MMRet.ERR_UPLOAD_OFFSET, "chunk ends past total_len")
        rcpts = await self._recipients(sess, req.to_user)
        async with self._upload_lock(sess.uin, cid, "img"):
            done = await self._existing(sess, cid)
            if done is not None:
                resp.start_pos, resp.msg_id, resp.create_time = total, done[0], done[1]
                return resp
            ranges = await self._upload_state(sess, cid, "img", req.to_user, total)
            path = self.media.partial(sess.uin, cid, "img")
            if req.data:
                await asyncio.to_thread(self.media.write_at, path, req.start_pos, req.data)
                ranges = media.add_range(ranges, req.start_pos, req.start_pos + len(req.data))
                await self._save_ranges(sess, cid, "img", ranges)
            resp.start_pos = media.next_missing(ranges, total)
            if resp.start_pos < total:
                return resp
            try:
                thumb, w, h = await asyncio.to_thread(self.media.finish_image, path)
            except media.MediaError as exc:
                await self._drop_upload(sess, cid, "img")
                raise MMError(MMRet.ERR_ARG, str(exc)) from None
            ref = self.media.ref_for(sess.uin, cid, "img")
            await asyncio.to_thread(self.media.promote, path, ref, thumb)
            tmpl = pb.AddMsg(img_buf=thumb, media_len=total, content=ref)
            content = f'<msg><img length="{total}" width="{w}" height="{h}"/></msg>'
            ((mid, ctime),) = await self._store_messages(
                sess, [(cid, req.to_user, MSG_IMAGE, content, rcpts, tmpl)]
            )
            await self._drop_upload(sess, cid, "img", delete_file=False)
            resp.msg_id, resp.create_time, resp.thumb = mid, ctime, thumb
            return resp

    async def upload_voice(
        self, sess: Session, req: pb.UploadVoiceRequest
    ) -> pb.UploadVoiceResponse:
        """Append one chunk of a voice message (S25): chunks come in order while the user
        records; end_flag creates the message, cancel_flag throws it away."""
        cid = req.client_msg_id
        resp = pb.UploadVoiceResponse(client_msg_id=cid)
        if not cid or len(cid) > 64:
            raise MMError(MMRet.ERR_ARG, "client_msg_id must be 1-64 characters")
        if len(req.data) > self.config.max_chunk_bytes:
            raise MMError(
                MMRet.ERR_TOO_LARGE, f"chunks are at most {self.config.max_chunk_bytes} bytes"
            )
        rcpts = await self._recipients(sess, req.to_user)
        async with self._upload_lock(sess.uin, cid, "voice"):
            done = await self._existing(sess, cid)
            if done is not None:
                resp.msg_id, resp.create_time = done
                resp.offset = req.offset + len(req.data)
                return resp
            if req.cancel_flag:
                await self._drop_upload(sess, cid, "voice")
                resp.cancelled = True
                return resp
            ranges = await self._upload_state(sess, cid, "voice", req.to_user, 0)
            have = ranges[0][1] if ranges else 0
            end = req.offset + len(req.data)
            if req.offset > have:
                raise MMError(MMRet.ERR_UPLOAD_OFFSET, f"expected offset {have}, got {req.offset}")
            if end > self.config.max_voice_bytes:
                raise MMError(
                    MMRet.ERR_TOO_LARGE,
                    f"voice messages are at most {self.config.max_voice_bytes} bytes",
                )
            path = self.media.partial(sess.uin, cid, "voice")
            if end > have:
                await asyncio.to_thread(self.media.write_at, path, req.offset, req.data)
                have = end
                await self._save_ranges(sess, cid, "voice", [(0, have)])
            resp.offset = have
            if not req.end_flag:
                return resp
            if have == 0:
                raise MMError(MMRet.ERR_ARG, "a voice message needs at least one byte")
            ref = self.media.ref_for(sess.uin, cid, "voice")
            await asyncio.to_thread(self.media.promote, path, ref, None)
            tmpl = pb.AddMsg(
                media_len=have,
                voice_length=req.voice_length,
                voice_format=req.voice_format,
                content=ref,
            )
            content = f'<msg><voicemsg length="{have}" voicelength="{req.voice_length}"/></msg>'
            ((mid, ctime),) = await self._store_messages(
                sess, [(cid, req.to_user, MSG_VOICE, content, rcpts, tmpl)]
            )
            await self._drop_upload(sess, cid, "voice", delete_file=False)
            resp.msg_id, resp.create_time = mid, ctime
            return resp

    async def download(
        self, sess: Session, msg_id: int, kind: str, offset: int, length: int
    ) -> tuple[int, bytes]:
        """(total length, bytes) of a message's media; ``kind`` is img, thumb or voice."""
        msg = await self.message(msg_id)
        if msg is None or not await self.can_see(sess, msg[0], msg[1]) or msg[5] is None:
            raise MMError(MMRet.ERR_NOT_FOUND, f"no media for message {msg_id}")
        want_type = MSG_VOICE if kind == "voice" else MSG_IMAGE
        if msg[2] != want_type:
            raise MMError(MMRet.ERR_NOT_FOUND, f"message {msg_id} has no {kind}")
        length = min(length or self.config.max_chunk_bytes, self.config.max_chunk_bytes)
        try:
            return await asyncio.to_thread(self.media.read, msg[5], kind, offset, length)
        except media.MediaError as exc:
            raise MMError(MMRet.ERR_NOT_FOUND, str(exc)) from None

    async def _upload_state(
        self, sess: Session, cid: str, kind: str, to_user: str, total: int
    ) -> list[tuple[int, int]]:
        owner, now = sess.uin, int(self.clock())

        def w(conn: sqlite3.Connection) -> list[tuple[int, int]]:
            row = conn.execute(
                "SELECT to_user, total_len, ranges FROM uploads WHERE owner=? AND client_id=?"
                " AND kind=?",
                (owner, cid, kind),
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO uploads (owner, client_id, kind, to_user, total_len, ranges,"
                    " created) VALUES (?,?,?,?,?,?,?)",
                    (owner, cid, kind, to_user, total, "[]", now),
                )
                return []
            if row[0] != to_user or row[1] != total:
                raise MMError(
                    MMRet.ERR_ARG,
                    f"upload {cid!r} was started with to_user={row[0]!r} total_len={row[1]}",
                )
            return [(a, b) for a, b in json.loads(row[2])]

        result: list[tuple[int, int]] = await self.db.write(w)
        return result

    async def _save_ranges(
        self, sess: Session, cid: str, kind: str, ranges: list[tuple[int, int]]
    ) -> None:
        text, owner = json.dumps(ranges), sess.uin
        await self.db.write(
            lambda c: c.execute(
                "UPDATE uploads SET ranges=? WHERE owner=? AND client_id=? AND kind=?",
                (text, owner, cid, kind),
            )
        )

    async def _drop_upload(
        self, sess: Session, cid: str, kind: str, *, delete_file: bool = True
    ) -> None:
        owner = sess.uin
        await self.db.write(
            lambda c: c.execute(
                "DELETE FROM uploads WHERE owner=? AND client_id=? AND kind=?", (owner, cid, kind)
            )
        )
        if delete_file:
            path = self.media.partial(owner, cid, kind)
            await asyncio.to_thread(_unlink, path)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _verify_password(pw_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(pw_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _contact_item(c: pb.Contact) -> bytes:
    return stored(pb.CmdItem(cmd_id=CMD_MOD_CONTACT, contact=c))


def _room_pb(room: _Room) -> pb.Contact:
    return pb.Contact(
        user_name=room.name,
        nick_name=room.topic,
        is_chatroom=True,
        members=room.members,
        owner=room.owner,
        contact_type=2,
    )
