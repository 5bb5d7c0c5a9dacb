"""The sync engine: accounts, sessions, contacts, chatrooms, messages and the SyncKey
logs (DESIGN section 4; S16-S19, S22, S23, S31, S34). Storage is a :class:`Store`.

Model. Every account has one append-only log per key type (1 profile, 2 messages,
3 contacts, 11 chatrooms). A change is an item appended to the log of every account
it concerns (fan-out on write). A SyncKey is the vector of the last seq a device has
seen per key type, so ``newsync(key)`` is "everything after the key" and a repeated old
key returns the same items again (S19): nothing is consumed until the device presents
a newer key or says sync-done, which is recorded as the device's committed key (S31).

After every durable write that grew some logs, ``on_news({uin: selector})`` is called
on the event loop (the store guarantees it runs before the writer resumes).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.enums import CmdId, MsgType
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
from wxnet.sync.items import stored
from wxnet.sync.sqlite_store import SQLiteStore, insert_account
from wxnet.sync.store import Append, Changes, Item, NewMessage, RoomRow, SessionRow, Store

__all__ = [
    "Engine",
    "EngineConfig",
    "Session",
    "SyncResult",
    "add_user_sync",
    "profile_item",
]

SERVED_KEYS = (KEY_PROFILE, KEY_MSG, KEY_CONTACT, KEY_CHATROOM)
# Wire numbers are wxnet.proto.enums' (CmdId, MsgType); these are the engine's names.
MSG_TEXT, MSG_IMAGE, MSG_VOICE = MsgType.TEXT, MsgType.IMAGE, MsgType.VOICE
MEDIA_TYPES = frozenset({MsgType.IMAGE, MsgType.VOICE, MsgType.VIDEO, MsgType.MICRO_VIDEO})
STATUS_SENT, STATUS_READ = 2, 4
ROOM_SUFFIX = "@chatroom"
_NAME_RE = re.compile(r"[a-z][a-z0-9_.-]{2,31}")

_hasher = PasswordHasher()

#: A session as the engine hands it to request handlers.
Session = SessionRow


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
class SyncResult:
    items: list[Item]
    key: SyncKey
    continue_flag: int


# ---------------------------------------------------------------------- accounts
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


def profile_item(uin: int, name: str, nick: str) -> bytes:
    user = pb.UserInfo(uin=uin, user_name=name, nick_name=nick)
    return stored(pb.CmdItem(cmd_id=CmdId.MOD_USER_INFO, user_info=user))


def add_user_sync(
    conn: sqlite3.Connection, name: str, password: str, nick: str | None, now: float
) -> int:
    """Create an account on an open SQLite connection (``wxnet user add``, which may
    run while the server does). Returns the new uin.

    Raises:
        MMError: ERR_ARG for a bad name or password, or a name that is taken.
    """
    nick = check_new_user(name, password, nick)
    pw_hash = _hasher.hash(password)
    conn.execute("BEGIN IMMEDIATE")
    try:
        uin = insert_account(conn, name, pw_hash, nick, int(now), b"")
        conn.execute(
            "UPDATE items SET body=? WHERE id=(SELECT item FROM sync_log"
            " WHERE uin=? AND key=1 AND seq=1)",
            (profile_item(uin, name, nick), uin),
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return uin


def _verify_password(pw_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(pw_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _item(**body: object) -> bytes:
    return stored(pb.CmdItem(**body))  # type: ignore[arg-type]


def _contact_item(c: pb.Contact) -> bytes:
    return _item(cmd_id=CmdId.MOD_CONTACT, contact=c)


def _room_pb(room: RoomRow) -> pb.Contact:
    return pb.Contact(
        user_name=room.name,
        nick_name=room.topic,
        is_chatroom=True,
        members=room.members,
        owner=room.owner,
        contact_type=2,
    )


class Engine:
    """The messaging domain.

    Args:
        data_dir: where the embedded store (``wxnet.db``) and ``media/`` live.
        config: limits and policies.
        on_news: called on the event loop with ``{uin: selector bits}`` after every
            durable write that grew some account's logs.
        clock: wall-clock seconds (injectable for tests).
        store: another :class:`Store` implementation (default: SQLite in data_dir).
    """

    def __init__(
        self,
        data_dir: Path,
        config: EngineConfig | None = None,
        *,
        on_news: Callable[[dict[int, int]], None] | None = None,
        clock: Callable[[], float] = time.time,
        store: Store | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.media = media.MediaStore(data_dir / "media")
        self.store: Store = store or SQLiteStore(
            data_dir / "wxnet.db", self.config.durability, profile_item=profile_item
        )
        self.clock = clock
        self.on_news = on_news
        self._loop: asyncio.AbstractEventLoop | None = None
        # Caches of what rarely changes (filled lazily; updated by our own writes).
        self._sessions: dict[str, Session] = {}
        self._uin_by_name: dict[str, int] = {}
        self._account: dict[int, tuple[str, str]] = {}  # uin -> (user_name, nick)
        self._contacts: dict[int, set[str]] = {}
        self._rooms: dict[str, RoomRow] = {}
        self._committed: dict[tuple[int, str], bytes] = {}
        self._login_failures: dict[str, deque[float]] = {}
        self.stats = {"messages": 0, "duplicates": 0, "syncs": 0}

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.store.start(self._published)

    def close(self) -> None:
        self.store.close()

    async def aclose(self) -> None:
        await self.store.aclose()

    def _published(self, ch: Changes) -> None:
        if ch.news and self.on_news is not None:
            self.on_news(ch.news)

    def now(self) -> int:
        return int(self.clock())

    def forget(self, news: dict[int, int]) -> None:
        """Another process grew these logs (news from the bus): drop what this process
        cached about them (contacts, groups, profile) so the next request reads it."""
        for uin, sel in news.items():
            if sel & SELECTOR_BITS[KEY_CONTACT]:
                self._contacts.pop(uin, None)
            if sel & SELECTOR_BITS[KEY_CHATROOM]:
                self._rooms.clear()
            if sel & SELECTOR_BITS[KEY_PROFILE]:
                self._account.pop(uin, None)

    # ================================================================ accounts
    async def add_user(self, name: str, password: str, nick: str | None = None) -> int:
        nick_name = check_new_user(name, password, nick)
        pw_hash = await asyncio.to_thread(_hasher.hash, password)
        return await self.store.create_account(name, pw_hash, nick_name, self.now())

    async def lookup(self, name: str) -> int | None:
        uin = self._uin_by_name.get(name)
        if uin is not None:
            return uin
        acc = await self.store.account_by_name(name)
        if acc is None:
            return None
        self._uin_by_name[name] = acc.uin
        self._account[acc.uin] = (name, acc.nick_name)
        return acc.uin

    async def account(self, uin: int) -> tuple[str, str]:
        cached = self._account.get(uin)
        if cached is None:
            acc = await self.store.account_by_uin(uin)
            if acc is None:
                raise MMError(MMRet.ERR_NOUSER, f"no account {uin}")
            cached = self._account[uin] = (acc.user_name, acc.nick_name)
            self._uin_by_name[acc.user_name] = uin
        return cached

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
        buckets = [(f"u:{user_name}", self.config.login_failures_per_account)]
        if peer:
            buckets.append((f"a:{peer}", self.config.login_failures_per_address))
        for bucket, limit in buckets:
            self._check_login_rate(bucket, limit, now)
        acc = await self.store.account_by_name(user_name)
        ok = acc is not None and await asyncio.to_thread(_verify_password, acc.pw_hash, password)
        if not ok or acc is None:
            for bucket, _ in buckets:
                self._note_login_failure(bucket, now)
            if acc is None:
                raise MMError(MMRet.ERR_NOUSER, f"no user {user_name!r}")
            raise MMError(MMRet.ERR_PASSWORD, "wrong password")
        return await self.create_session(acc.uin, device_id, device_name or device_id)

    async def create_session(
        self, uin: int, device_id: str, device_name: str, kind: str = "mobile", ttl: int = 0
    ) -> Session:
        """Open a session for a device of ``uin`` (also used for web logins)."""
        name, _ = await self.account(uin)
        now = self.now()
        sess = Session(
            secrets.token_urlsafe(24),
            uin,
            name,
            device_id,
            device_name,
            kind,
            now + (ttl or self.config.session_ttl),
        )
        await self.store.create_session(sess, now)
        self._sessions[sess.sid] = sess
        return sess

    async def session(self, sid: str, uin: int) -> Session:
        """The live session ``sid`` of account ``uin``.

        Raises:
            MMError: ERR_SESSIONTIMEOUT when unknown, expired, or of another account.
        """
        sess = self._sessions.get(sid)
        if sess is None and sid:
            sess = await self.store.session(sid)
            if sess is not None:
                self._sessions[sid] = sess
        if sess is None or sess.uin != uin:
            raise MMError(MMRet.ERR_SESSIONTIMEOUT, "unknown session: log in again")
        if sess.expires < self.clock():
            self._sessions.pop(sid, None)
            raise MMError(MMRet.ERR_SESSIONTIMEOUT, "session expired: log in again")
        return sess

    async def logout(self, sess: Session) -> None:
        self._sessions.pop(sess.sid, None)
        await self.store.delete_session(sess.sid)

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

    # ================================================================ sync
    async def news(self, uin: int, key: SyncKey, selector: int = 0) -> int:
        """Selector bits of the key types that have items after ``key``."""
        sel = 0
        for k in SERVED_KEYS:
            bit = SELECTOR_BITS[k]
            if selector and not selector & bit:
                continue
            if await self.store.head(uin, k) > key.get(k):
                sel |= bit
        return sel

    def parse_key(self, key_buf: bytes) -> SyncKey:
        try:
            return SyncKey.from_bytes(key_buf)
        except RemoteProtocolError as exc:
            raise MMError(MMRet.ERR_SYNCKEY_INVALID, f"{exc}: call newinit") from None

    async def check_key(self, uin: int, key: SyncKey) -> None:
        for k in SERVED_KEYS:
            val = key.get(k)
            # The cached head may lag a read that already returned newer items: ask the
            # store itself before calling a key invalid.
            if val > await self.store.head(uin, k) and val > await self.store.head(
                uin, k, fresh=True
            ):
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
        after = [(k, key.get(k)) for k in wanted if await self.store.head(sess.uin, k) > key.get(k)]
        items: list[Item] = []
        more: list[int] = []
        if after:
            items, more = await self.store.read_log(
                sess.uin, after, self.config.sync_window_items, self.config.sync_window_bytes
            )
        new = key.as_dict()
        for k in wanted:
            new.setdefault(k, key.get(k))
        for k, seq, _ in items:
            new[k] = seq
        cont = 0
        for k in more:
            cont |= SELECTOR_BITS[k]
        return SyncResult(items, SyncKey.of(new), cont)

    async def newinit(self, sess: Session) -> SyncResult:
        """A snapshot for a new device: profile, contacts, chatrooms, recent message-log
        items, and the key to continue from with newsync."""
        uin = sess.uin
        heads = {k: await self.store.head(uin, k) for k in SERVED_KEYS}
        user = await self.user_info(uin)
        items: list[Item] = [
            (KEY_PROFILE, heads[KEY_PROFILE], _item(cmd_id=CmdId.MOD_USER_INFO, user_info=user))
        ]
        for c in await self.contacts(sess):
            k = KEY_CHATROOM if c.is_chatroom else KEY_CONTACT
            items.append((k, heads[k], _contact_item(c)))
        items += await self.store.recent(
            uin, KEY_MSG, heads[KEY_MSG], self.config.init_recent_messages
        )
        return SyncResult(items, SyncKey.of(heads), 0)

    def commit(self, sess: Session, key: SyncKey) -> None:
        """Record ``key`` as the device's committed key (the "acknowledged" mark of
        S31). Not waited for: it changes no answer the server gives."""
        if not key:
            return
        blob = key.to_bytes()
        ck = (sess.uin, sess.device_id)
        if self._committed.get(ck) != blob:
            self._committed[ck] = blob
            self.store.set_committed_key(sess.uin, sess.device_id, blob, self.now())

    async def committed_key(self, uin: int, device_id: str) -> SyncKey | None:
        blob = await self.store.committed_key(uin, device_id)
        return None if blob is None else SyncKey.from_bytes(blob)

    # ================================================================ contacts
    async def _contact_set(self, uin: int) -> set[str]:
        s = self._contacts.get(uin)
        if s is None:
            s = self._contacts[uin] = await self.store.contacts_of(uin)
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
        """Make ``name`` and the session's user contacts of each other."""
        peer = await self.lookup(name)
        if peer is None:
            raise MMError(MMRet.ERR_NOUSER, f"no user {name!r}")
        if peer == sess.uin:
            raise MMError(MMRet.ERR_ARG, "you cannot add yourself")
        me_pb = await self._contact_pb(sess.user_name)
        peer_pb = await self._contact_pb(name)
        await self.store.add_contacts(
            [(sess.uin, name), (peer, sess.user_name)],
            self.now(),
            [
                Append([sess.uin], KEY_CONTACT, _contact_item(peer_pb)),
                Append([peer], KEY_CONTACT, _contact_item(me_pb)),
            ],
        )
        (await self._contact_set(sess.uin)).add(name)
        (await self._contact_set(peer)).add(sess.user_name)
        return peer_pb

    async def contacts(self, sess: Session, names: Sequence[str] = ()) -> list[pb.Contact]:
        out = [await self._contact_pb(n) for n in sorted(await self._contact_set(sess.uin))]
        for room_name in await self.store.rooms_of(sess.user_name):
            room = await self._room(room_name)
            if room is not None:
                out.append(_room_pb(room))
        if names:
            want = set(names)
            out = [c for c in out if c.user_name in want]
        return out

    # ================================================================ chatrooms
    async def _room(self, name: str) -> RoomRow | None:
        room = self._rooms.get(name)
        if room is None:
            room = await self.store.room(name)
            if room is not None:
                self._rooms[name] = room
        return room

    async def room(self, name: str) -> RoomRow | None:
        """The chatroom ``name`` (a copy), or None."""
        room = await self._room(name)
        return (
            None if room is None else RoomRow(room.name, room.topic, room.owner, list(room.members))
        )

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
        room = RoomRow(secrets.token_hex(8) + ROOM_SUFFIX, topic, sess.user_name, names)
        uins = await self._member_uins(names)
        await self.store.save_room(
            room,
            names,
            (),
            self.now(),
            [Append(uins, KEY_CHATROOM, _contact_item(_room_pb(room)))],
            create=True,
        )
        self._rooms[room.name] = room
        return _room_pb(room)

    async def mod_room(
        self, sess: Session, name: str, op: int, members: Sequence[str], topic: str
    ) -> pb.Contact:
        """op 1 adds members (your contacts), 2 removes (yourself, or anyone if you own
        the group), 3 renames."""
        room = await self._room(name)
        if room is None or sess.user_name not in room.members:
            raise MMError(MMRet.ERR_NOT_FOUND, f"no group {name!r} that you are in")
        new = RoomRow(room.name, room.topic, room.owner, list(room.members))
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
        appends = [
            Append(await self._member_uins(new.members), KEY_CHATROOM, _contact_item(_room_pb(new)))
        ]
        if removed:
            gone = _item(cmd_id=CmdId.DEL_CONTACT, del_contact=pb.DelContact(user_name=name))
            appends.append(Append(await self._member_uins(removed), KEY_CHATROOM, gone))
        added = [n for n in new.members if n not in room.members]
        await self.store.save_room(new, added, removed, self.now(), appends, create=False)
        self._rooms[name] = new
        return _room_pb(new)

    # ================================================================ messages
    async def recipients(self, sess: Session, to_user: str) -> list[int]:
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
        todo: list[tuple[int, NewMessage]] = []
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
                rcpts = await self.recipients(sess, m.to_user)
                todo.append(
                    (
                        i,
                        self.new_message(
                            sess, m.client_msg_id, m.to_user, m.msg_type, m.content, rcpts
                        ),
                    )
                )
            except MMError as exc:
                res.ret, res.err_msg = exc.code, exc.message
        if todo:
            done = await self.store_messages(sess, [nm for _, nm in todo])
            for (i, _), (mid, ctime) in zip(todo, done, strict=True):
                results[i].msg_id, results[i].create_time = mid, ctime
        return results

    def new_message(
        self,
        sess: Session,
        client_msg_id: str,
        to_user: str,
        msg_type: int,
        content: str,
        recipients: Sequence[int],
        template: pb.AddMsg | None = None,
        media_ref: str | None = None,
    ) -> NewMessage:
        """A message ready for :meth:`store_messages`; ``template`` carries media fields."""
        sender_name = sess.user_name

        def make_body(msg_id: int, create_time: int) -> bytes:
            add = pb.AddMsg()
            if template is not None:
                add.CopyFrom(template)
            add.msg_id = msg_id
            add.from_user = sender_name
            add.to_user = to_user
            add.msg_type = msg_type
            add.content = content
            add.status = STATUS_SENT
            add.create_time = create_time
            add.client_msg_id = client_msg_id
            if to_user.endswith(ROOM_SUFFIX):
                add.real_from = sender_name
            return _item(cmd_id=CmdId.ADD_MSG, add_msg=add)

        return NewMessage(client_msg_id, to_user, msg_type, media_ref, recipients, make_body)

    async def store_messages(
        self, sess: Session, msgs: Sequence[NewMessage]
    ) -> list[tuple[int, int]]:
        out = await self.store.store_messages(sess.uin, msgs, self.now())
        dups = sum(1 for _, _, dup in out if dup)
        self.stats["duplicates"] += dups
        self.stats["messages"] += len(out) - dups
        return [(mid, ctime) for mid, ctime, _ in out]

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
        if talker.endswith(ROOM_SUFFIX):
            if await self._room(talker) is None:
                raise MMError(MMRet.ERR_NOT_FOUND, f"no group {talker!r}")
        elif talker != sess.user_name:
            peer = await self.lookup(talker)
            if peer is None:
                raise MMError(MMRet.ERR_NOUSER, f"no user {talker!r}")
            rcpts.append(peer)
        status = pb.ModMsgStatus(
            talker=talker, reader=sess.user_name, msg_id=last_msg_id, status=STATUS_READ
        )
        await self.store.append(
            [Append(rcpts, KEY_MSG, _item(cmd_id=CmdId.MOD_MSG_STATUS, msg_status=status))]
        )

    async def revoke(self, sess: Session, msg_id: int, client_msg_id: str) -> None:
        """Recall one of your messages within the revoke window (WeChat: 2 minutes)."""
        if msg_id:
            msg = await self.store.message(msg_id)
        else:
            msg = await self.store.message_by_client_id(sess.uin, client_msg_id)
        if msg is None or msg.sender != sess.uin:
            raise MMError(MMRet.ERR_NOT_FOUND, f"no message {msg_id or client_msg_id!r} of yours")
        if msg.revoked:
            return
        if self.clock() - msg.create_time > self.config.revoke_window:
            raise MMError(
                MMRet.ERR_REVOKE_EXPIRED,
                f"messages can be revoked within {self.config.revoke_window} s of sending",
            )
        if msg.to_user.endswith(ROOM_SUFFIX):
            room = await self._room(msg.to_user)
            rcpts = await self._member_uins(room.members if room else [sess.user_name])
        else:
            peer = await self.lookup(msg.to_user)
            rcpts = sorted({sess.uin, *([peer] if peer is not None else [])})
        revoke = pb.RevokeMsg(
            msg_id=msg.msg_id,
            client_msg_id=msg.client_msg_id,
            from_user=sess.user_name,
            to_user=msg.to_user,
            replace_text=f'"{sess.user_name}" recalled a message',
        )
        await self.store.revoke(
            msg.msg_id, [Append(rcpts, KEY_MSG, _item(cmd_id=CmdId.REVOKE, revoke=revoke))]
        )
