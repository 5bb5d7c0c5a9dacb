"""The engine's state, accounts and sessions, and its caches of contacts and chatrooms:
the base class of :class:`wxnet.sync.engine.Engine`.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMError, MMRet
from wxnet.proto.synckey import (
    KEY_CHATROOM,
    KEY_CONTACT,
    KEY_PROFILE,
    SELECTOR_BITS,
)
from wxnet.sync import media
from wxnet.sync.cache import ActiveCache, BoundedCache
from wxnet.sync.db import private_dir
from wxnet.sync.logtail import LogTail
from wxnet.sync.model import (
    MAX_DEVICE_CHARS,
    MAX_PASSWORD_CHARS,
    EngineConfig,
    Session,
    check_new_user,
    log,
    profile_item,
)
from wxnet.sync.passwords import PasswordPool, hash_password, verify_password
from wxnet.sync.sqlite_store import SQLiteStore
from wxnet.sync.store import (
    Changes,
    RoomRow,
    Store,
    session_key_hash,
)
from wxnet.sync.throttle import LoginThrottle


class ContactNames:
    """An account's contact names as the engine caches them: one sorted tuple of
    strings (a set costs 216 bytes for up to four names and about 50 a name beyond).
    The names are not interned: interning every account's name grew the interpreter's
    table of interned strings for good (~100 bytes per idle link at 10,000 links)."""

    __slots__ = ("_names",)

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._names = tuple(sorted(set(names)))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        names = self._names
        i = bisect_left(names, name)
        return i < len(names) and names[i] == name

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def add(self, name: str) -> None:
        names = self._names
        i = bisect_left(names, name)
        if i == len(names) or names[i] != name:
            self._names = (*names[:i], name, *names[i:])


def _names(name: str, nick: str) -> tuple[str, str]:
    """An account's (name, nick) as the engine caches them: a nick equal to the name
    (the default, when none was given) is the name's string, not a second one."""
    return (name, name if nick == name else nick)


class EngineBase:
    """The messaging domain's state, accounts and sessions; the arguments are
    :class:`~wxnet.sync.engine.Engine`'s."""

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
            page_cache_kib=self.config.page_cache_kib,
            checkpoint_interval=self.config.checkpoint_interval,
            active_accounts=self.config.active_accounts,
        )
        #: the store's log tail (both stores have one), which a device's commit trims
        #: (LogTail.committed)
        tail = getattr(self.store, "tail", None)
        self._tail: LogTail | None = tail if isinstance(tail, LogTail) else None
        self.clock = clock
        self.on_news = on_news
        #: called just before ``on_news`` with the entries the write appended, (uin, key,
        #: seq, stored body) in seq order per log, when the store reports them (the
        #: server pushes the small ones, cmd 122)
        self.on_entries: Callable[[list[tuple[int, int, int, bytes]]], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Caches of what rarely changes (filled lazily; updated by our own writes; a
        # miss reads the store). The per-account ones keep the accounts in use
        # ([sync] active_accounts: an idle account's entries go, and are read back when
        # it is next used); the groups at most cache_entries.
        act = self.config.active_accounts
        self._sessions: ActiveCache[str, Session] = ActiveCache(act)
        self._uin_by_name: ActiveCache[str, int] = ActiveCache(act)
        self._account: ActiveCache[int, tuple[str, str]] = ActiveCache(act)  # (name, nick)
        self._contacts: ActiveCache[int, ContactNames] = ActiveCache(act)
        self._rooms: BoundedCache[str, RoomRow] = BoundedCache(self.config.cache_entries)
        #: the last committed key written per device (so an unchanged one is not
        #: written again; a dropped one is written once more)
        self._committed: ActiveCache[tuple[int, str], bytes] = ActiveCache(act)
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
            (
                "wxnet_engine_cache_dropped_total",
                "Entries the engine's and the store's in-memory caches dropped"
                " ([sync] active_accounts, cache_entries).",
                "cache",
                lambda: {name: c.evicted for name, c in self.caches().items()},
            ),
        ]

    def caches(self) -> dict[str, ActiveCache[object, object] | BoundedCache[object, object]]:
        """The engine's in-memory caches by name, and the store's (for /metrics)."""
        caches: dict[str, ActiveCache[object, object] | BoundedCache[object, object]] = {
            "sessions": self._sessions,  # type: ignore[dict-item]
            "user_names": self._uin_by_name,  # type: ignore[dict-item]
            "accounts": self._account,  # type: ignore[dict-item]
            "contacts": self._contacts,  # type: ignore[dict-item]
            "groups": self._rooms,  # type: ignore[dict-item]
            "committed_keys": self._committed,  # type: ignore[dict-item]
        }
        store_caches = getattr(self.store, "caches", None)
        if callable(store_caches):
            caches.update(store_caches())
        return caches

    def _published(self, ch: Changes) -> None:
        if ch.entries and self.on_entries is not None:
            self.on_entries(ch.entries)
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
        self._account[acc.uin] = _names(name, acc.nick_name)
        return acc.uin

    async def account(self, uin: int) -> tuple[str, str]:
        cached = self._account.get(uin)
        if cached is None:
            acc = await self.store.account_by_uin(uin)
            if acc is None:
                raise MMError(MMRet.ERR_NOUSER, f"no account {uin}")
            name = acc.user_name
            cached = self._account[uin] = _names(name, acc.nick_name)
            self._uin_by_name[name] = uin
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
            wait = await self.throttle.check(user_name, peer, now)
            if wait > 0:
                raise MMError(
                    MMRet.ERR_FREQ_LIMITED,
                    f"too many failed logins from this address; retry in {int(wait) + 1} s",
                )
        acc = await self.store.account_by_name(user_name)
        ok = acc is not None and await self.passwords.run(verify_password, acc.pw_hash, password)
        if not ok or acc is None:
            if not trusted:
                await self.throttle.record_failure(user_name, peer, now)
            if acc is None:
                raise MMError(MMRet.ERR_NOUSER, f"no user {user_name!r}")
            raise MMError(MMRet.ERR_PASSWORD, "wrong password")
        await self.throttle.record_success(user_name, peer)
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
            # one string per device model ("iPhone"), not one per session
            sys.intern(device_name[:MAX_DEVICE_CHARS]),
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

    def session_now(self, sid: str, uin: int) -> Session | None:
        """:meth:`session` when ``sid`` is cached (no coroutine), else None: then
        :meth:`session` reads the store. The same answers and errors.

        Raises:
            MMError: ERR_SESSIONTIMEOUT when expired or of another account.
        """
        sess = self._sessions.get(sid)
        return None if sess is None else self._live(sid, uin, sess)

    def _live(self, sid: str, uin: int, sess: Session | None) -> Session:
        if sess is None or sess.uin != uin:
            raise MMError(MMRet.ERR_SESSIONTIMEOUT, "unknown session: log in again")
        if sess.expires < self.clock():
            self._sessions.pop(sid, None)
            raise MMError(MMRet.ERR_SESSIONTIMEOUT, "session expired: log in again")
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
        return self._live(sid, uin, sess)

    def drop_session(self, key_hash: str) -> None:
        """Another process ended the session with this :func:`session_key_hash`: forget
        it here too (the next request reads the store, where it is gone)."""
        for sid in [k for k in self._sessions if session_key_hash(k) == key_hash]:
            del self._sessions[sid]

    async def logout(self, sess: Session) -> None:
        self._sessions.pop(sess.sid, None)
        await self.store.delete_session(sess.sid)
        self._session_ended(sess.uin, session_key_hash(sess.sid))

    # ================================================================ contacts
    async def _contact_set(self, uin: int) -> ContactNames:
        s = self._contacts.get(uin)
        if s is None:
            s = self._contacts[uin] = ContactNames(await self.store.contacts_of(uin))
        return s

    async def is_contact(self, uin: int, name: str) -> bool:
        return name in await self._contact_set(uin)

    async def _contact_pb(self, name: str) -> pb.Contact:
        uin = await self.lookup(name)
        if uin is None:
            raise MMError(MMRet.ERR_NOUSER, f"no user {name!r}")
        _, nick = await self.account(uin)
        return pb.Contact(user_name=name, nick_name=nick, contact_type=1)

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
