"""The engine's messages: recipients, sending, receipts and revokes (a part of
:class:`wxnet.sync.engine.Engine`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.enums import CmdId, MsgType, revoke_text
from wxnet.proto.errors import MMError, MMRet
from wxnet.proto.synckey import (
    KEY_MSG,
)
from wxnet.sync.accounts import EngineBase
from wxnet.sync.items import SendResult, TextBody
from wxnet.sync.model import (
    MEDIA_TYPES,
    ROOM_SUFFIX,
    STATUS_READ,
    STATUS_SENT,
    Session,
    _item,
)
from wxnet.sync.store import (
    Append,
    NewMessage,
)

#: msg_type values a text send refuses (media have their own upload CGIs; friend
#: requests are verifyuser's)
_NOT_TEXT = frozenset({*MEDIA_TYPES, 0, MsgType.VERIFY})


def _media_body(
    template: pb.AddMsg, sender_name: str, to_user: str, msg_type: int, content: str, cid: str
) -> Callable[[int, int], bytes]:
    """The ``make_body`` of a message with media fields (``template``)."""
    room = to_user.endswith(ROOM_SUFFIX)

    def make_body(msg_id: int, create_time: int) -> bytes:
        add = pb.AddMsg()
        add.CopyFrom(template)
        add.msg_id = msg_id
        add.from_user = sender_name
        add.to_user = to_user
        add.msg_type = msg_type
        add.content = content
        add.status = STATUS_SENT
        add.create_time = create_time
        add.client_msg_id = cid
        if room:
            add.real_from = sender_name
        return _item(cmd_id=CmdId.ADD_MSG, add_msg=add)

    return make_body


class SendWrite:
    """A checked send whose write is queued (:meth:`Messaging.send_now`): every
    message's result, in order, those whose messages are written, and the write (None
    when it stores nothing)."""

    __slots__ = ("results", "stored_at", "write")

    def __init__(
        self,
        results: list[SendResult],
        stored_at: list[SendResult],
        write: asyncio.Future[list[tuple[int, int, bool]]] | None,
    ) -> None:
        self.results = results
        self.stored_at = stored_at
        self.write = write


class Messaging(EngineBase):
    """Messages: recipients, sending, read receipts and revokes."""

    # ================================================================ messages
    def _recipients_now(self, sess: Session, to_user: str) -> Sequence[int] | None:
        """:meth:`recipients` from the engine's caches alone, without a coroutine:
        None when the answer needs the store (a name, contact list or group not
        cached), and then :meth:`recipients` reads it. The same answers and errors.
        A 1:1 chat's are a tuple (from the tuple free list: unlike a list, no count
        toward the next young collection)."""
        if to_user.endswith(ROOM_SUFFIX):
            room = self._rooms.get(to_user)
            if room is None:
                return None
            if sess.user_name not in room.members:
                raise MMError(MMRet.ERR_NOT_FOUND, f"no group {to_user!r} that you are in")
            uin_of = self._uin_by_name.get
            uins = []
            for n in room.members:
                u = uin_of(n)
                if u is None:
                    return None
                uins.append(u)
            return uins
        if to_user == sess.user_name:
            return (sess.uin,)
        peer = self._uin_by_name.get(to_user)
        contacts = self._contacts.get(sess.uin)
        if peer is None or contacts is None:
            return None
        if to_user not in contacts:
            raise MMError(MMRet.ERR_NOT_FRIEND, f"{to_user!r} is not your contact")
        return (sess.uin, peer)

    async def recipients(self, sess: Session, to_user: str) -> Sequence[int]:
        """Accounts whose message log receives a message from ``sess`` to ``to_user``.

        Raises:
            MMError: ERR_NOUSER / ERR_NOT_FRIEND / ERR_NOT_FOUND.
        """
        cached = self._recipients_now(sess, to_user)
        if cached is not None:
            return cached
        return await self._recipients_stored(sess, to_user)

    async def _recipients_stored(self, sess: Session, to_user: str) -> Sequence[int]:
        """:meth:`recipients` when :meth:`_recipients_now` could not answer: the names,
        contact list and group read (and cached) through the store."""
        if to_user.endswith(ROOM_SUFFIX):
            room = await self._room(to_user)
            if room is None or sess.user_name not in room.members:
                raise MMError(MMRet.ERR_NOT_FOUND, f"no group {to_user!r} that you are in")
            return await self._member_uins(room.members)
        if to_user == sess.user_name:
            return (sess.uin,)
        peer = await self.lookup(to_user)
        if peer is None:
            raise MMError(MMRet.ERR_NOUSER, f"no user {to_user!r}")
        if not await self.is_contact(sess.uin, to_user):
            raise MMError(MMRet.ERR_NOT_FRIEND, f"{to_user!r} is not your contact")
        return (sess.uin, peer)

    def _check_send(
        self, sess: Session, msgs: Sequence[pb.MicroMsg]
    ) -> tuple[list[SendResult], list[tuple[SendResult, str, str, int, str, Sequence[int] | None]]]:
        """The checks of a send, one owner for :meth:`send_now` and :meth:`send`: one
        result per message, in order (a refused one carries its error), and for each
        message that passed, (result, client_msg_id, to_user, msg_type, content,
        recipients), the recipients None when the caches cannot answer
        (:meth:`_recipients_now`; then :meth:`_recipients_stored` reads them).

        Raises:
            MMError: ERR_TOO_LARGE for a batch over ``max_send_batch``.
        """
        if len(msgs) > self.config.max_send_batch:
            raise MMError(MMRet.ERR_TOO_LARGE, f"at most {self.config.max_send_batch} messages")
        results: list[SendResult] = []
        passed: list[tuple[SendResult, str, str, int, str, Sequence[int] | None]] = []
        max_bytes = self.config.max_content_bytes
        for m in msgs:
            # each field read once: a protobuf field read makes a new object each time
            cid, to_user, msg_type = m.client_msg_id, m.to_user, m.msg_type
            res = SendResult(cid, to_user)
            results.append(res)
            try:
                if not cid or len(cid) > 64:
                    raise MMError(MMRet.ERR_ARG, "client_msg_id must be 1-64 characters")
                if msg_type in _NOT_TEXT:
                    raise MMError(MMRet.ERR_ARG, f"msg_type {msg_type} cannot be sent as text")
                content = m.content
                # a character is 1-4 bytes of UTF-8: encode only when it may be too long
                if len(content) * 4 > max_bytes and len(content.encode()) > max_bytes:
                    raise MMError(MMRet.ERR_TOO_LARGE, "message content is too long")
                rcpts = self._recipients_now(sess, to_user)
            except MMError as exc:
                res.ret, res.err_msg = int(exc.code), exc.message
                continue
            passed.append((res, cid, to_user, msg_type, content, rcpts))
        return results, passed

    def _write_send(
        self,
        sess: Session,
        results: list[SendResult],
        passed: Sequence[tuple[SendResult, str, str, int, str, Sequence[int] | None]],
    ) -> SendWrite:
        """Queue the write of the messages of ``passed`` whose recipients are known."""
        todo: list[NewMessage] = []
        for _res, cid, to_user, msg_type, content, rcpts in passed:
            if rcpts is not None:
                todo.append(self.new_message(sess, cid, to_user, msg_type, content, rcpts))
        # every message written (the common case): they are the results, in order
        stored_at = (
            results if len(todo) == len(results) else [p[0] for p in passed if p[5] is not None]
        )
        # S17: the sending device keeps its own copy (the SDK stores it from this
        # reply), so the sender's log gets the message only for its other devices
        if not todo:
            return SendWrite(results, stored_at, None)
        write = asyncio.ensure_future(self._store_now(sess, todo, own_device=True))
        return SendWrite(results, stored_at, write)

    def send_now(self, sess: Session, msgs: Sequence[pb.MicroMsg]) -> SendWrite | None:
        """:meth:`send` without a coroutine when the caches know every recipient: the
        write queued now, its future in the returned :class:`SendWrite` (None when it
        stored nothing), its results once :meth:`sent` had the outcome. None when some
        recipients need the store: then :meth:`send` serves the batch. The same
        checks, answers and errors as :meth:`send` (:meth:`_check_send`).

        Raises:
            MMError: ERR_TOO_LARGE for a batch over ``max_send_batch``.
        """
        results, passed = self._check_send(sess, msgs)
        for p in passed:
            if p[5] is None:
                return None
        return self._write_send(sess, results, passed)

    async def send(self, sess: Session, msgs: Sequence[pb.MicroMsg]) -> list[SendResult]:
        """Store a batch of messages; one result per message, in order.

        Returns only after every stored message is durable (the ack of S16). A message
        whose (sender, client_msg_id) was seen before is not stored again: its result
        carries the original msg_id and create_time (S23) and ``duplicate``.
        """
        results, passed = self._check_send(sess, msgs)
        for i, (res, cid, to_user, msg_type, content, rcpts) in enumerate(passed):
            if rcpts is None:  # not all cached: read what is missing
                try:
                    rcpts = await self._recipients_stored(sess, to_user)
                except MMError as exc:
                    res.ret, res.err_msg = int(exc.code), exc.message
                    continue
                passed[i] = (res, cid, to_user, msg_type, content, rcpts)
        w = self._write_send(sess, results, passed)
        return self.sent(w, [] if w.write is None else await w.write)

    def sent(self, w: SendWrite, out: Sequence[tuple[int, int, bool]]) -> list[SendResult]:
        """The results of ``w`` given its write's outcome ``out`` (what
        :meth:`Store.store_messages` returned)."""
        self._count_stored(out)
        for res, (mid, ctime, dup) in zip(w.stored_at, out, strict=True):
            res.msg_id, res.create_time, res.duplicate = mid, ctime, dup
        return w.results

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
        real_from = sender_name if to_user.endswith(ROOM_SUFFIX) else ""
        if template is None:  # a text: its item encoded without protobuf objects
            body: Callable[[int, int], bytes] = TextBody(
                sender_name, to_user, msg_type, content, STATUS_SENT, client_msg_id, real_from
            )
        else:  # (the closure's cells in a function of its own: a text makes none)
            body = _media_body(template, sender_name, to_user, msg_type, content, client_msg_id)
        return NewMessage(client_msg_id, to_user, msg_type, media_ref, recipients, body)

    async def store_messages(
        self, sess: Session, msgs: Sequence[NewMessage], *, own_device: bool = False
    ) -> list[tuple[int, int]]:
        """Store ``msgs``; (msg_id, create_time) of each. ``own_device``: the sending
        device keeps its own copy, so the sender's message log gets the messages only
        when another device of the account needs them (S17; :meth:`Store.store_messages`
        with ``device``)."""
        out = await self._store_now(sess, msgs, own_device=own_device)
        self._count_stored(out)
        return [(mid, ctime) for mid, ctime, _ in out]

    def _store_now(
        self, sess: Session, msgs: Sequence[NewMessage], *, own_device: bool
    ) -> Awaitable[list[tuple[int, int, bool]]]:
        """Queue the write of :meth:`store_messages`; its outcome goes through
        :meth:`_count_stored`."""
        device = sess.device_id if own_device else ""
        return self.store.store_messages(sess.uin, msgs, self.now(), device)

    def _count_stored(self, out: Sequence[tuple[int, int, bool]]) -> None:
        """A write's outcome into the engine's counters."""
        dups = 0
        for _, _, dup in out:
            if dup:
                dups += 1
        self.stats["duplicates"] += dups
        self.stats["messages"] += len(out) - dups

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

    async def prompt_web_login(self, uin: int, prompt: pb.WebLoginPrompt) -> None:
        """A web client asks account ``uin`` to approve a login without a QR code (push
        login): every device of the account gets a WebLoginPrompt item."""
        body = _item(cmd_id=CmdId.WEB_LOGIN, web_login=prompt)
        await self.store.append([Append([uin], KEY_MSG, body)])

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
