"""The storage interface of the sync engine: ``Store``.

The engine holds the domain rules; a store keeps accounts, sessions, contacts, groups,
messages, uploads and the per-account sync logs, and guarantees three things:

* every write method returns only after its data is durable (the engine acknowledges
  sends on that);
* sequence numbers of one account's log become visible in order (never N+1 before N);
* after each durable write that appended to some logs, ``publish(Changes)`` is called
  on the event loop, before the write's own caller resumes.

:class:`wxnet.sync.sqlite_store.SQLiteStore` is the embedded implementation;
:class:`wxnet.sync.pg_store.PostgresStore` the shared one (several processes and nodes).
Both pass the same contract tests (``tests/sync/test_store_contract.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import astuple, dataclass, field
from typing import Any, Protocol

from wxnet.sync.shared import SharedState

__all__ = [
    "KEY_SENT",
    "Account",
    "Append",
    "Changes",
    "Item",
    "MessageRow",
    "NewMessage",
    "RoomRow",
    "RoomSave",
    "SessionRow",
    "Store",
    "SyncWindow",
    "WebSessionRow",
    "history_page",
    "session_key_hash",
]


def session_key_hash(sid: str) -> str:
    """What a store keeps instead of a session key: SHA-256, hex. Keys are 192-bit
    random tokens, so an unsalted fast hash is enough; a copy of the store then
    holds no key that logs anyone in (issue 12)."""
    return hashlib.sha256(sid.encode()).hexdigest()


#: One log entry as read: (key type, seq, stored CmdItem bytes without key and seq).
Item = tuple[int, int, bytes]

#: The sent log (S17): where a message an account sent goes instead of its own message
#: log when no other device of the account needed it (:meth:`Store.store_messages` with
#: a ``device``). A log in the store like the others, but not a SyncKey key type:
#: newsync never serves it and no notify or push tells of it; newinit reads it
#: (:meth:`Store.recent_messages`), so that a device that comes later sees what the
#: account sent.
KEY_SENT = 1002


def history_page(parts: Iterable[list[tuple[int, bytes]]], limit: int) -> list[tuple[int, bytes]]:
    """One :meth:`Store.message_history` page from each log's ``(item id, body)`` rows
    (newest first, at most ``limit`` each): merged, newest first, cut at ``limit``. When
    the page holds the oldest entry of all the logs, that one's position is 1, so that a
    reader knows it reached the start without asking again."""
    lists = list(parts)
    rows = sorted((r for p in lists for r in p), reverse=True)
    page = rows[:limit]
    if page and len(rows) <= limit and all(len(p) < limit for p in lists):
        page[-1] = (1, page[-1][1])
    return page


@dataclass(frozen=True, slots=True)
class Account:
    uin: int
    user_name: str
    nick_name: str
    pw_hash: str


@dataclass(frozen=True, slots=True)
class SessionRow:
    sid: str
    uin: int
    user_name: str
    device_id: str
    device_name: str
    kind: str
    expires: int


@dataclass(frozen=True, slots=True)
class WebSessionRow:
    """A web login as stored (the in-memory extras of a web session are not).
    ``key`` is the SHA-256 of the wxsid (hex): the store never holds the wxsid."""

    key: str
    uin: int
    user_name: str
    nick_name: str
    session_key: str  # the mobile-protocol session the web device uses
    skey: str
    pass_ticket: str
    data_ticket: str
    expires: float
    alive: bool

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> WebSessionRow:
        """A row of ``web_sessions`` (every store selects its columns in this order)."""
        return cls(r[0], int(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], float(r[8]), bool(r[9]))

    def values(self) -> tuple[Any, ...]:
        """The row's columns in table order (what :meth:`from_row` reads back)."""
        return astuple(self)


@dataclass(slots=True)
class RoomRow:
    name: str
    topic: str
    owner: str
    members: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class MessageRow:
    msg_id: int
    sender: int
    client_msg_id: str
    to_user: str
    msg_type: int
    create_time: int
    revoked: bool
    media: str | None

    @classmethod
    def from_row(cls, r: Sequence[Any] | None) -> MessageRow | None:
        """A row of ``messages`` (columns in this order), or None for no row."""
        if r is None:
            return None
        return cls(int(r[0]), int(r[1]), r[2], r[3], int(r[4]), int(r[5]), bool(r[6]), r[7])


@dataclass(frozen=True, slots=True)
class Append:
    """Append ``body`` to the ``key`` log of every account in ``uins``."""

    uins: Sequence[int]
    key: int
    body: bytes


class SyncWindow:
    """One newsync page being filled, the same way by every store: keys in order, each
    key's items in seq order, at most ``max_items`` items and ``max_bytes`` of bodies (the
    first item goes in whatever its size). A key that does not fit whole is listed in
    :attr:`more` (the ContinueFlag): its next items come on the next page."""

    __slots__ = ("items", "max_bytes", "max_items", "more", "size")

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.max_items, self.max_bytes = max_items, max_bytes
        self.items: list[Item] = []
        self.more: list[int] = []
        self.size = 0

    def full(self) -> bool:
        return len(self.items) >= self.max_items or self.size >= self.max_bytes

    def take(self, key: int, rows: Iterable[tuple[int, bytes]], after: int = -1) -> None:
        """Add ``key``'s ``(seq, body)`` rows with a seq above ``after``, in order."""
        if self.full():
            self.more.append(key)
            return
        for seq, body in rows:
            if seq <= after:
                continue
            if len(self.items) >= self.max_items or (
                self.items and self.size + len(body) > self.max_bytes
            ):
                self.more.append(key)
                return
            self.items.append((key, seq, body))
            self.size += len(body)


@dataclass(frozen=True, slots=True)
class RoomSave:
    """One chatroom write (:meth:`Store.save_room`): the room as it is now (``create``:
    a new one), the members added and removed, and the items for its members' logs."""

    room: RoomRow
    added: Sequence[str]
    removed: Sequence[str]
    now: int
    appends: Sequence[Append]
    create: bool

    def room_row(self) -> tuple[str, str, str, int]:
        """The ``chatrooms`` row: name, topic, owner, created."""
        return (self.room.name, self.room.topic, self.room.owner, self.now)

    def added_rows(self) -> list[tuple[str, str]]:
        """``room_members`` rows (room, member) to insert."""
        return [(self.room.name, n) for n in self.added]

    def removed_rows(self) -> list[tuple[str, str]]:
        """``room_members`` rows (room, member) to delete."""
        return [(self.room.name, n) for n in self.removed]


@dataclass(slots=True)
class NewMessage:
    """A message to store unless (sender, client_msg_id) exists. ``make_body(msg_id,
    create_time)`` builds the log item once the store has assigned the id. (Not frozen:
    one is made per message sent, and a frozen dataclass's ``__init__`` sets each field
    through ``object.__setattr__``; nothing changes one after it is made.)"""

    client_msg_id: str
    to_user: str
    msg_type: int
    media: str | None
    recipients: Sequence[int]
    make_body: Callable[[int, int], bytes]


@dataclass(slots=True)
class Changes:
    """What a write appended: new log heads and, per account, the selector bits."""

    heads: dict[tuple[int, int], int] = field(default_factory=dict)
    news: dict[int, int] = field(default_factory=dict)
    #: (uin, key, seq, body) of every appended entry, in seq order per log (a store
    #: may leave it empty; the SQLite store fills its in-memory log tail from it).
    entries: list[tuple[int, int, int, bytes]] = field(default_factory=list)


class Store(SharedState, Protocol):
    """(QR logins, web uploads and the account list: :class:`SharedState`.)"""

    async def start(self, publish: Callable[[Changes], None]) -> None: ...

    def close(self) -> None: ...

    async def aclose(self) -> None:
        """Finish queued writes and close, from the event loop."""
        ...

    async def flush(self) -> None:
        """Return once every write queued before the call (background ones too) is durable."""
        ...

    def statistics(self) -> dict[str, int]:
        """Counters for /metrics (at least ``commits`` and ``writes``)."""
        ...

    def schema_version(self) -> int:
        """The store's schema version after the migrations of its opening (``/healthz``;
        the numbers and rules are those of :mod:`wxnet.sync.schema`)."""
        ...

    # accounts and sessions (a store keeps session_key_hash(sid), never sid itself)
    async def create_account(self, name: str, pw_hash: str, nick: str, now: int) -> int: ...
    async def account_by_name(self, name: str) -> Account | None: ...
    async def account_by_uin(self, uin: int) -> Account | None: ...
    async def create_session(self, row: SessionRow, now: int) -> None: ...
    async def session(self, sid: str) -> SessionRow | None: ...
    async def delete_session(self, sid: str) -> None: ...
    async def evict_sessions(self, uin: int, keep: int) -> list[str]:
        """Delete all but the ``keep`` newest sessions of ``uin``; returns the
        :func:`session_key_hash` of each deleted session, oldest first."""
        ...

    # web sessions (durable: any process serves them, a restart keeps them)
    async def save_web_session(self, row: WebSessionRow) -> None:
        """Insert or replace the row with ``row.key``."""
        ...

    async def web_session(self, key: str) -> WebSessionRow | None: ...
    async def drop_web_sessions(self, before: float) -> int:
        """Forget web sessions that expired before ``before``; returns how many."""
        ...

    # sync logs
    async def head(self, uin: int, key: int, *, fresh: bool = False) -> int:
        """The last committed seq of a log. May lag behind what a concurrent read already
        returned; ``fresh`` reads it from the storage instead of a cache."""
        ...

    def head_now(self, uin: int, key: int) -> int | None:
        """:meth:`head` when it is cached (no coroutine), else None."""
        ...

    async def read_log(
        self, uin: int, after: Sequence[tuple[int, int]], max_items: int, max_bytes: int
    ) -> tuple[list[Item], list[int]]:
        """Items after each (key, seq) in order, within the window; also the keys that
        still have items beyond it."""
        ...

    async def recent(self, uin: int, key: int, upto: int, limit: int) -> list[Item]: ...
    async def recent_messages(self, uin: int, upto: int, limit: int) -> list[Item]:
        """The last ``limit`` entries of the message log (up to seq ``upto``) and of the
        sent log (:data:`KEY_SENT`) together, in the order they were written; a
        sent-log entry comes as ``(KEY_MSG, 0, body)``: it has no seq in any SyncKey."""
        ...

    async def message_history(self, uin: int, before: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` entries of the message log and the sent log together, newest
        first, as ``(position, body)``: the position is the entry's item id (both logs
        in the order they were written), and the entries are those below ``before``
        (0: from the newest). A page reader (webwxhistory) passes the last position it
        got as the next ``before``; the oldest entry of the two logs has position 1
        (nothing is before it: :func:`history_page`)."""
        ...

    async def has_other_device(self, uin: int, device_id: str, now: int) -> bool:
        """Whether ``uin`` has a live session (not expired at ``now``) of a device other
        than ``device_id``: a device that needs the account's own sent messages in its
        message log (S17, S31)."""
        ...

    async def append(self, appends: Sequence[Append]) -> None: ...
    def set_committed_key(self, uin: int, device_id: str, key: bytes, now: int) -> None:
        """Record a device's committed key; may be batched (no answer depends on it)."""
        ...

    async def committed_key(self, uin: int, device_id: str) -> bytes | None: ...

    # contacts and chatrooms
    async def contacts_of(self, uin: int) -> set[str]: ...
    async def contact_marks(self, owner: int) -> dict[str, tuple[str, bool]]:
        """``owner``'s marks: peer -> (remark name, pinned)."""
        ...

    async def set_contact_mark(
        self,
        owner: int,
        peer: str,
        remark: str,
        pinned: bool,
        now: int,
        appends: Sequence[Append],
    ) -> None:
        """Store ``owner``'s mark on ``peer`` and ``appends``, in one transaction."""
        ...

    async def add_contacts(
        self, pairs: Sequence[tuple[int, str]], now: int, appends: Sequence[Append]
    ) -> None: ...
    async def room(self, name: str) -> RoomRow | None: ...
    async def rooms_of(self, user_name: str) -> list[str]: ...
    async def save_room(self, save: RoomSave) -> None: ...

    # messages
    def store_messages(
        self, sender: int, msgs: Sequence[NewMessage], now: int, device: str = ""
    ) -> Awaitable[list[tuple[int, int, bool]]]:
        """(msg_id, create_time, duplicate) per message, in order, once durable.

        An awaitable, not necessarily a coroutine: the write is queued when the method
        is called (the SQLite store returns its group's future; an ``async def`` is
        fine too), so call it only where its result is awaited.

        ``device``: the sending device (its session's ``device_id``), for S17: the
        sender's own entry (``sender`` among a message's recipients) then goes to its
        message log only if :meth:`has_other_device` holds when the write runs, and to
        its sent log (:data:`KEY_SENT`) otherwise. The question is asked in the order of
        the writes: a session created before the write commits is seen by it, or (if
        the write ran first) the new device's newinit, which comes after its login,
        finds the message in the sent log. Without ``device`` every recipient's log
        gets the entry."""
        ...

    async def message(self, msg_id: int) -> MessageRow | None: ...
    async def message_by_client_id(self, sender: int, client_msg_id: str) -> MessageRow | None: ...
    async def revoke(self, msg_id: int, appends: Sequence[Append]) -> None: ...

    # resumable uploads
    async def upload_begin(
        self, owner: int, client_id: str, kind: str, to_user: str, total: int, now: int
    ) -> tuple[str, int, list[tuple[int, int]]]:
        """Start or resume; returns (to_user, total_len, received ranges) as stored."""
        ...

    async def upload_save(
        self, owner: int, client_id: str, kind: str, ranges: list[tuple[int, int]]
    ) -> None: ...

    async def upload_drop(self, owner: int, client_id: str, kind: str) -> None: ...

    async def uploads_of(self, owner: int) -> list[tuple[str, str, int]]:
        """(client_id, kind, total_len) of every unfinished upload of ``owner``."""
        ...

    async def uploads_older(self, created_before: int, limit: int) -> list[tuple[int, str, str]]:
        """(owner, client_id, kind) of at most ``limit`` unfinished uploads begun before
        ``created_before`` (oldest first): the expiry sweep's work list."""
        ...
