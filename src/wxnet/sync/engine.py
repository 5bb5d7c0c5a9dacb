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
import logging
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.enums import CmdId, MsgType, revoke_text
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
from wxnet.sync.db import private_dir
from wxnet.sync.items import stored
from wxnet.sync.passwords import PasswordPool, hash_password, verify_password
from wxnet.sync.sqlite_store import SQLiteStore, insert_account
from wxnet.sync.store import (
    Append,
    Changes,
    Item,
    NewMessage,
    RoomRow,
    SessionRow,
    Store,
    session_key_hash,
)
from wxnet.sync.throttle import LoginThrottle

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
#: A friend request in the recipient's message log (WeChat's VERIFYMSG, research 5).
MSG_VERIFY = 37
OP_REQUEST, OP_ACCEPT = 2, 3
_REQUEST_ID = "verify:"  # client_msg_id of a request: one per (requester, recipient)
STATUS_SENT, STATUS_READ = 2, 4
ROOM_SUFFIX = "@chatroom"
_NAME_RE = re.compile(r"[a-z][a-z0-9_.-]{2,31}")
#: Longest password accepted (argon2 hashes any length; a megabyte costs CPU for nothing).
MAX_PASSWORD_CHARS = 1024
MAX_DEVICE_CHARS = 64

log = logging.getLogger("wxnet.engine")

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
    login_failures_per_account_address: int = 5
    uploads_per_account: int = 16  # unfinished image and voice uploads of an account
    upload_bytes_per_account: int = 64 * 1024 * 1024  # their declared sizes, together
    upload_ttl: float = 86400.0  # an unfinished upload is deleted after this (seconds)
    min_free_disk_bytes: int = 256 * 1024 * 1024  # new upload bytes stop below this
    login_failures_per_address: int = 20
    login_failure_window: float = 60.0
    login_backoff_base: float = 1.0
    login_backoff_max: float = 900.0
    login_workers: int = 1
    login_queue: int = 16
    max_sessions_per_account: int = 20
    contacts: str = "request"
    integrity_check: str = "quick"
    durability: str = "FULL"
    #: The in-memory log tail (SQLiteStore's LogTail): entries per log, bytes per log,
    #: bytes in all; tail_items = 0 turns it off.
    tail_items: int = 32
    tail_bytes: int = 16 * 1024
    tail_total_bytes: int = 32 << 20


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
    pw_hash = hash_password(password)
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
        private_dir(data_dir)
        self.media = media.MediaStore(data_dir / "media")
        self.store: Store = store or SQLiteStore(
            data_dir / "wxnet.db",
            self.config.durability,
            profile_item=profile_item,
            integrity_check=self.config.integrity_check,
            tail_items=self.config.tail_items,
            tail_bytes=self.config.tail_bytes,
            tail_total_bytes=self.config.tail_total_bytes,
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
        c = self.config
        self.throttle = LoginThrottle(
            c.login_failures_per_account_address,
            c.login_failures_per_address,
            c.login_failure_window,
            c.login_backoff_max,
            c.login_backoff_base,
        )
        self.passwords = PasswordPool(c.login_workers, c.login_queue)
        #: called with (uin, hash of the session key) when a session ends (logout or
        #: eviction), so the server can close the long links bound to it
        self.on_session_end: list[Callable[[int, str], None]] = []
        self.stats = {"messages": 0, "duplicates": 0, "syncs": 0, "sessions_evicted": 0}

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.store.start(self._published)

    def close(self) -> None:
        self.passwords.close()
        self.store.close()

    async def aclose(self) -> None:
        await self.store.aclose()

    def limit_counters(self) -> list[tuple[str, str, str, Callable[[], dict[str, float]]]]:
        """The engine's caps as /metrics counters: (name, help, label, read)."""
        return [
            (
                "wxnet_logins_throttled_total",
                "Logins refused by the per-(account, address) or per-address backoff.",
                "",
                lambda: {"": self.throttle.throttled},
            ),
            (
                "wxnet_logins_busy_total",
                "Logins refused because the password-hashing queue was full.",
                "",
                lambda: {"": self.passwords.rejected},
            ),
            (
                "wxnet_sessions_evicted_total",
                "Oldest sessions ended because an account went over its session cap.",
                "",
                lambda: {"": self.stats["sessions_evicted"]},
            ),
        ]

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
        pw_hash = await self.passwords.run(hash_password, password)
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
        self,
        user_name: str,
        password: str,
        device_id: str,
        device_name: str,
        peer: str = "",
        session_key: str = "",
    ) -> Session:
        """Check the password (argon2id, on the bounded password pool) and open a session.

        Failed attempts slow down the (account, address) pair and the address, never
        the account as such; a device that presents a live session of the account
        (``session_key``) is never throttled.

        Raises:
            MMError: ERR_FREQ_LIMITED, ERR_BUSY, ERR_NOUSER, ERR_PASSWORD, ERR_ARG.
        """
        now = self.clock()
        if not device_id or len(device_id) > 64:
            raise MMError(MMRet.ERR_ARG, "device_id must be 1-64 characters")
        if len(device_name) > MAX_DEVICE_CHARS:
            raise MMError(MMRet.ERR_ARG, f"device_name has at most {MAX_DEVICE_CHARS} characters")
        if len(password) > MAX_PASSWORD_CHARS:
            raise MMError(MMRet.ERR_ARG, f"passwords have at most {MAX_PASSWORD_CHARS} characters")
        if len(user_name) > 32:
            raise MMError(MMRet.ERR_NOUSER, "no such user (names have at most 32 characters)")
        trusted = False
        if session_key:
            held = await self._live_session(session_key)
            trusted = held is not None and held.user_name == user_name
        if not trusted:
            wait = self.throttle.retry_after(user_name, peer, now)
            if wait > 0:
                raise MMError(
                    MMRet.ERR_FREQ_LIMITED,
                    f"too many failed logins from this address; retry in {int(wait) + 1} s",
                )
        acc = await self.store.account_by_name(user_name)
        ok = acc is not None and await self.passwords.run(verify_password, acc.pw_hash, password)
        if not ok or acc is None:
            if not trusted:
                self.throttle.failed(user_name, peer, now)
            if acc is None:
                raise MMError(MMRet.ERR_NOUSER, f"no user {user_name!r}")
            raise MMError(MMRet.ERR_PASSWORD, "wrong password")
        self.throttle.succeeded(user_name, peer)
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
            device_name[:MAX_DEVICE_CHARS],
            kind,
            now + (ttl or self.config.session_ttl),
        )
        await self.store.create_session(sess, now)
        self._sessions[sess.sid] = sess
        evicted = await self.store.evict_sessions(uin, self.config.max_sessions_per_account)
        if evicted:
            gone = set(evicted)
            for sid in [k for k, v in self._sessions.items() if v.uin == uin]:
                if session_key_hash(sid) in gone:
                    del self._sessions[sid]
            for h in evicted:
                self.stats["sessions_evicted"] += 1
                log.warning(
                    "session evicted: account over its session cap",
                    extra={
                        "data": {
                            "uin": uin,
                            "session": h[:12],
                            "cap": self.config.max_sessions_per_account,
                        }
                    },
                )
                self._session_ended(uin, h)
        return sess

    def _session_ended(self, uin: int, key_hash: str) -> None:
        for fn in self.on_session_end:
            fn(uin, key_hash)

    async def _live_session(self, sid: str) -> Session | None:
        sess = self._sessions.get(sid)
        if sess is None and sid:
            sess = await self.store.session(sid)
            if sess is not None:
                self._sessions[sid] = sess
        if sess is None or sess.expires < self.clock():
            return None
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
        self._session_ended(sess.uin, session_key_hash(sess.sid))

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

    async def add_contact(
        self, sess: Session, name: str, opcode: int = 0, greeting: str = ""
    ) -> tuple[pb.Contact, bool]:
        """Ask ``name`` to be a contact (``opcode`` 0 or 2) or accept their request (3).

        With ``contacts = "open"`` both become contacts at once, whatever the opcode.
        With ``"request"`` (the default), a request is a VERIFYMSG item (msg_type 37,
        the greeting as content) in ``name``'s message log, sent once per pair; they
        become contacts of each other when ``name`` accepts it (or asks back).
        Returns (the peer's contact card, whether it is still only a request).

        Raises:
            MMError: ERR_NOUSER, ERR_ARG (yourself, an unknown opcode), ERR_NOT_FOUND
                (accepting a request nobody sent).
        """
        peer = await self.lookup(name)
        if peer is None:
            raise MMError(MMRet.ERR_NOUSER, f"no user {name!r}")
        if peer == sess.uin:
            raise MMError(MMRet.ERR_ARG, "you cannot add yourself")
        if opcode not in (0, 1, OP_REQUEST, OP_ACCEPT):
            raise MMError(MMRet.ERR_ARG, f"unknown opcode {opcode}: 2 request, 3 accept")
        peer_pb = await self._contact_pb(name)
        if await self.is_contact(sess.uin, name):
            return peer_pb, False
        asked_me = await self.requested(peer, sess.user_name)
        if self.config.contacts == "open" or asked_me:
            await self._befriend(sess, peer, name, peer_pb)
            return peer_pb, False
        if opcode == OP_ACCEPT:
            raise MMError(MMRet.ERR_NOT_FOUND, f"{name!r} has not asked to be your contact")
        req = self.new_message(
            sess, _REQUEST_ID + name, name, MSG_VERIFY, greeting[:256], [peer]
        )  # the store's dedup makes a repeated request a no-op
        await self.store_messages(sess, [req])
        return peer_pb, True

    async def requested(self, requester: int, recipient: str) -> bool:
        """Whether ``requester`` has sent ``recipient`` a friend request."""
        msg = await self.store.message_by_client_id(requester, _REQUEST_ID + recipient)
        return msg is not None and msg.msg_type == MSG_VERIFY and msg.to_user == recipient

    async def _befriend(self, sess: Session, peer: int, name: str, peer_pb: pb.Contact) -> None:
        me_pb = await self._contact_pb(sess.user_name)
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
                if m.msg_type in MEDIA_TYPES or m.msg_type in (0, MSG_VERIFY):
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
        """A read receipt (S22): the reader's other devices and, in a 1:1 chat with a
        contact, the peer are told that ``talker``'s messages up to ``last_msg_id``
        were read. Receipts never go to strangers."""
        rcpts = [sess.uin]
        if talker.endswith(ROOM_SUFFIX):
            room = await self._room(talker)
            if room is None or sess.user_name not in room.members:
                raise MMError(MMRet.ERR_NOT_FOUND, f"no group {talker!r} that you are in")
        elif talker != sess.user_name:
            peer = await self.lookup(talker)
            if peer is None:
                raise MMError(MMRet.ERR_NOUSER, f"no user {talker!r}")
            if await self.is_contact(sess.uin, talker):  # a stranger's log gets nothing
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
        _, nick = await self.account(sess.uin)
        revoke = pb.RevokeMsg(
            msg_id=msg.msg_id,
            client_msg_id=msg.client_msg_id,
            from_user=sess.user_name,
            to_user=msg.to_user,
            replace_text=revoke_text(nick or sess.user_name),
        )
        await self.store.revoke(
            msg.msg_id, [Append(rcpts, KEY_MSG, _item(cmd_id=CmdId.REVOKE, revoke=revoke))]
        )
