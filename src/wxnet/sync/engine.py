"""The sync engine: accounts, sessions, contacts, chatrooms, messages and the SyncKey
logs (docs/server.md, "How it works"; S16-S19, S22, S23, S31, S34). Storage is a :class:`Store`.

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

import secrets
from collections.abc import Sequence

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
from wxnet.sync.messages import Messaging
from wxnet.sync.model import (
    _REQUEST_ID,
    MSG_IMAGE,
    MSG_VOICE,
    OP_ACCEPT,
    OP_REQUEST,
    ROOM_SUFFIX,
    SERVED_KEYS,
    EngineConfig,
    Session,
    SyncResult,
    _contact_item,
    _item,
    _room_pb,
    add_user_sync,
    profile_item,
)
from wxnet.sync.store import (
    Append,
    Item,
    RoomRow,
    RoomSave,
)

__all__ = [
    "MSG_IMAGE",
    "MSG_VOICE",
    "Engine",
    "EngineConfig",
    "Session",
    "SyncResult",
    "add_user_sync",
    "profile_item",
]


class Engine(Messaging):
    """The messaging domain.

    Args:
        data_dir: where the embedded store (``wxnet.db``) and ``media/`` live.
        config: limits and policies.
        on_news: called on the event loop with ``{uin: selector bits}`` after every
            durable write that grew some account's logs.
        clock: wall-clock seconds (injectable for tests).
        store: another :class:`Store` implementation (default: SQLite in data_dir).
    """

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

    def check_key_now(self, uin: int, key: SyncKey) -> bool:
        """:meth:`check_key` from the cached log heads alone, without a coroutine: True
        when they show ``key`` is not ahead of this server; False when a head it needs
        is not cached or is behind the key (then :meth:`check_key` asks the store,
        which alone says a key is invalid)."""
        head_now = self.store.head_now
        for k in SERVED_KEYS:
            val = key.get(k)
            if val:
                h = head_now(uin, k)
                if h is None or val > h:
                    return False
        return True

    async def check_key(self, uin: int, key: SyncKey) -> None:
        if self.check_key_now(uin, key):
            return
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
        items (with what the account sent while it had one device: the sent log, S17),
        and the key to continue from with newsync."""
        uin = sess.uin
        heads = {k: await self.store.head(uin, k) for k in SERVED_KEYS}
        user = await self.user_info(uin)
        items: list[Item] = [
            (KEY_PROFILE, heads[KEY_PROFILE], _item(cmd_id=CmdId.MOD_USER_INFO, user_info=user))
        ]
        for c in await self.contacts(sess):
            k = KEY_CHATROOM if c.is_chatroom else KEY_CONTACT
            items.append((k, heads[k], _contact_item(c)))
        items += await self.store.recent_messages(
            uin, heads[KEY_MSG], self.config.init_recent_messages
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
            if self._tail is not None:  # what the device has leaves the log tail
                self._tail.committed(sess.uin, key.pairs)

    async def committed_key(self, uin: int, device_id: str) -> SyncKey | None:
        blob = await self.store.committed_key(uin, device_id)
        return None if blob is None else SyncKey.from_bytes(blob)

    # ================================================================ contacts
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
            sess, _REQUEST_ID + name, name, MsgType.VERIFY, greeting[:256], [peer]
        )  # the store's dedup makes a repeated request a no-op
        await self.store_messages(sess, [req])
        return peer_pb, True

    async def requested(self, requester: int, recipient: str) -> bool:
        """Whether ``requester`` has sent ``recipient`` a friend request."""
        msg = await self.store.message_by_client_id(requester, _REQUEST_ID + recipient)
        return msg is not None and msg.msg_type == MsgType.VERIFY and msg.to_user == recipient

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
        """The account's contacts and groups (those in ``names``, if given), with its own
        marks on them (remark name, pin)."""
        out = [await self._contact_pb(n) for n in sorted(await self._contact_set(sess.uin))]
        for room_name in await self.store.rooms_of(sess.user_name):
            room = await self._room(room_name)
            if room is not None:
                out.append(_room_pb(room))
        if names:
            want = set(names)
            out = [c for c in out if c.user_name in want]
        marks = await self.store.contact_marks(sess.uin)
        for c in out:
            c.remark_name, c.pinned = marks.get(c.user_name, ("", False))
        return out

    async def mark_contact(
        self, sess: Session, name: str, remark: str | None, pinned: bool | None
    ) -> pb.Contact:
        """Set the account's remark name for, or pin of, its contact or group ``name``
        (what is None stays); every device of the account gets the contact again, as
        a ModContact item.

        Raises:
            MMError: ERR_ARG (remark over 64 characters), ERR_NOT_FOUND (not a contact
                or group of the account).
        """
        if remark is not None and len(remark) > 64:
            raise MMError(MMRet.ERR_ARG, "a remark name has at most 64 characters")
        found = await self.contacts(sess, [name])
        if not found:
            raise MMError(MMRet.ERR_NOT_FOUND, f"{name!r} is not your contact or group")
        c = found[0]
        if remark is not None:
            c.remark_name = remark
        if pinned is not None:
            c.pinned = pinned
        key = KEY_CHATROOM if c.is_chatroom else KEY_CONTACT
        await self.store.set_contact_mark(
            sess.uin,
            name,
            c.remark_name,
            c.pinned,
            self.now(),
            [Append([sess.uin], key, _contact_item(c))],
        )
        return c

    # ================================================================ chatrooms
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
            RoomSave(
                room,
                names,
                (),
                self.now(),
                [Append(uins, KEY_CHATROOM, _contact_item(_room_pb(room)))],
                create=True,
            )
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
        await self.store.save_room(RoomSave(new, added, removed, self.now(), appends, create=False))
        self._rooms[name] = new
        return _room_pb(new)
