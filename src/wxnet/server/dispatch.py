"""One handler table for both links: CGI name + request bytes in, response bytes out.

The long link (cmd) and the short link (``/cgi-bin/micromsg-bin/<name>``) both call
:meth:`Dispatcher.handle`; a CGI behaves the same on either (docs/protocol.md). MM
errors become a response whose ``base.ret`` carries the code; a body that does not
decode raises :class:`BadRequest` (HTTP 400 on the short link, an error reply on the
long link).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from wxnet.proto import commands as C
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.enums import OpLogCmd
from wxnet.proto.errors import MMError, MMRet, WxnetError
from wxnet.proto.synckey import SyncKey
from wxnet.server.metrics import Metrics
from wxnet.server.notify import Notifier
from wxnet.sync.engine import Engine, Session
from wxnet.sync.items import SendResult, join_cmd_list, newsync_response, send_msg_response
from wxnet.sync.messages import SendWrite
from wxnet.sync.uploads import Uploads

__all__ = ["BadRequest", "Context", "Dispatcher", "Handler", "NowHandler", "oversized"]

log = logging.getLogger("wxnet.server")

#: String fields bounded by their own, larger caps instead of ``max_field_chars``.
_LONG_TEXT = frozenset({"content"})
#: The CGI of a send (named in the errors of its done callback).
_SENDMSG = C.BY_NAME["newsendmsg"]
#: A response message with no field set, serialised (SyncDoneResponse's).
_EMPTY = b""


def oversized(
    msg: Message, max_field_chars: int, max_list_items: int, body_len: int | None = None
) -> str:
    """The first string field of ``msg`` (nested messages included) longer than
    ``max_field_chars`` characters, or repeated field with more than ``max_list_items``
    entries, as a message; '' when none. Message text (:data:`_LONG_TEXT`) has its own,
    larger bound (``max_content_bytes``, checked by the engine).

    ``body_len``, the length of the wire bytes ``msg`` was parsed from, skips the walk
    when nothing can be over a bound: a string of N characters takes at least N bytes
    on the wire and a list entry at least one, so a body no longer than both bounds
    holds nothing too long (most requests, a short text message among them)."""
    if body_len is not None and body_len <= max_field_chars and body_len <= max_list_items:
        return ""
    for fd, value in msg.ListFields():
        repeated = bool(fd.is_repeated)
        values = list(value) if repeated else [value]
        if repeated and len(values) > max_list_items:
            return f"{fd.name} has more than {max_list_items} entries"
        for v in values:
            if fd.type == FieldDescriptor.TYPE_STRING:
                if fd.name not in _LONG_TEXT and len(v) > max_field_chars:
                    return f"{fd.name} is longer than {max_field_chars} characters"
            elif fd.type == FieldDescriptor.TYPE_MESSAGE:
                inner = oversized(v, max_field_chars, max_list_items)
                if inner:
                    return inner
    return ""


class BadRequest(WxnetError):
    """The request body is not a valid message of the CGI's request type."""


@dataclass(slots=True)
class Context:
    """Where a request came from."""

    peer: str
    link: Any = None  # the long link, when the request came over it


Handler = Callable[[Any, Session | None, Context], Awaitable[Message | bytes]]
#: A handler of :attr:`Dispatcher.now_handlers`: (request, session, context, done) ->
#: the response now, True when ``done(response)`` will be called, or False when the
#: request needs the coroutine handler.
NowHandler = Callable[[Any, Session, Context, Callable[[bytes], None]], bytes | bool]


class _Written:
    """The done callback of a send's write (:meth:`Dispatcher._sendmsg_now`): builds
    the reply and hands it to ``done``. One object with slots, not a closure, which
    cost a function, its tuple of cells and a cell per variable, per send."""

    __slots__ = ("d", "done", "t0", "w")

    def __init__(
        self, d: Dispatcher, w: SendWrite, t0: float, done: Callable[[bytes], None]
    ) -> None:
        self.d, self.w, self.t0, self.done = d, w, t0, done

    def __call__(self, fut: asyncio.Future[list[tuple[int, int, bool]]]) -> None:
        d = self.d
        try:
            out = d._sent(d.engine.sent(self.w, fut.result()), self.t0)
        except Exception as exc:
            out = d._failed(_SENDMSG, exc)
        self.done(out)


class Dispatcher:
    def __init__(
        self,
        engine: Engine,
        notifier: Notifier,
        metrics: Metrics,
        synccheck_max: float,
        max_field_chars: int = 1024,
        max_list_items: int = 1000,
    ) -> None:
        self.engine = engine
        self.max_field_chars = max_field_chars
        self.max_list_items = max_list_items
        self.uploads = Uploads(engine)
        self.notifier = notifier
        self.metrics = metrics
        self.synccheck_max = synccheck_max
        self.handlers: dict[str, Handler] = {
            "manualauth": self._manualauth,
            "logout": self._logout,
            "getprofile": self._getprofile,
            "newinit": self._newinit,
            "newsync": self._newsync,
            "syncdone": self._syncdone,
            "newsynccheck": self._synccheck,
            "identify": self._identify,
            "newsendmsg": self._sendmsg,
            "statusnotify": self._statusnotify,
            "revokemsg": self._revokemsg,
            "verifyuser": self._verifyuser,
            "getcontact": self._getcontact,
            "oplog": self._oplog,
            "createchatroom": self._createchatroom,
            "modchatroom": self._modchatroom,
            "uploadmsgimg": self._uploadmsgimg,
            "getmsgimg": self._getmsgimg,
            "uploadvoice": self._uploadvoice,
            "downloadvoice": self._downloadvoice,
            "uploadappattach": self._uploadappattach,
            "downloadappattach": self._downloadappattach,
            "uploadvideo": self._uploadvideo,
            "downloadvideo": self._downloadvideo,
        }
        #: handlers that serve a request without a coroutine when the engine's caches
        #: hold what it needs (:meth:`begin`); each falls back to its entry of
        #: :attr:`handlers` (returns False) otherwise
        self.now_handlers: dict[str, NowHandler] = {
            "newsendmsg": self._sendmsg_now,
            "syncdone": self._syncdone_now,
        }

    def register(self, name: str, handler: Handler) -> None:
        """Add or replace the handler of a CGI that is in :data:`commands.CGIS`."""
        if name not in C.BY_NAME:
            raise KeyError(f"{name!r} is not in the command table")
        self.handlers[name] = handler
        self.now_handlers.pop(name, None)  # its coroutine-free twin served the old one

    async def handle(self, cgi: C.CGI, body: bytes, ctx: Context) -> bytes:
        """Run one request; returns the serialised response.

        Raises:
            BadRequest: the body does not decode as ``cgi.request``.
        """
        req = self._parse(cgi, body)
        if isinstance(req, bytes):
            return req
        return await self._serve(cgi, req, ctx)

    def begin(
        self, cgi: C.CGI, body: bytes, ctx: Context, done: Callable[[bytes], None]
    ) -> bytes | Coroutine[Any, Any, bytes] | None:
        """:meth:`handle` as far as it goes without a coroutine, for the long link:
        the response when it is known at once; None when a handler of
        :attr:`now_handlers` took the request (``done(response)`` is called later,
        from a callback of the loop, never from inside this call); else the coroutine
        of the rest, which returns the response (the caller runs it as a task). The
        same responses, errors and metrics as :meth:`handle`.

        Raises:
            BadRequest: the body does not decode as ``cgi.request``.
        """
        req = self._parse(cgi, body)
        if isinstance(req, bytes):
            return req
        now = self.now_handlers.get(cgi.name)
        if now is not None:
            base = req.base  # type: ignore[attr-defined]
            try:
                sess = self.engine.session_now(base.session_key, base.uin)
                if sess is not None:
                    out = now(req, sess, ctx, done)
                    if out is not False:
                        return None if out is True else out
            except Exception as exc:
                return self._failed(cgi, exc)
        return self._serve(cgi, req, ctx)

    def _parse(self, cgi: C.CGI, body: bytes) -> Message | bytes:
        """The request message, or the error response of one over a bound.

        Raises:
            BadRequest: the body does not decode as ``cgi.request``.
        """
        self.metrics.requests.inc(cgi.name)
        req = cgi.request()
        try:
            req.ParseFromString(body)
        except DecodeError as exc:
            self.metrics.errors.inc(str(int(MMRet.ERR_BAD_REQUEST)))
            raise BadRequest(f"{cgi.name}: body is not a {cgi.request.__name__}: {exc}") from None
        too_long = oversized(req, self.max_field_chars, self.max_list_items, len(body))
        if too_long:
            self.metrics.errors.inc(str(int(MMRet.ERR_TOO_LARGE)))
            return C.error_body(MMRet.ERR_TOO_LARGE, f"{cgi.name}: {too_long}")
        return req

    async def _serve(self, cgi: C.CGI, req: Message, ctx: Context) -> bytes:
        handler = self.handlers.get(cgi.name)
        if handler is None:
            return C.error_body(MMRet.ERR_UNKNOWN_CMD, f"{cgi.name} is not served here")
        try:
            sess = None
            if cgi.needs_session:
                base = req.base  # type: ignore[attr-defined]
                sid, uin = base.session_key, base.uin
                sess = self.engine.session_now(sid, uin)  # a cached one: no coroutine
                if sess is None:
                    sess = await self.engine.session(sid, uin)
            out = await handler(req, sess, ctx)
        except Exception as exc:
            return self._failed(cgi, exc)
        return out if isinstance(out, bytes) else out.SerializeToString()

    def _failed(self, cgi: C.CGI, exc: Exception) -> bytes:
        """The response to a request whose handler raised ``exc``: an MM error carries
        its code; anything else is logged and answered ERR_SYS."""
        if isinstance(exc, MMError):
            self.metrics.errors.inc(str(int(exc.code)))
            return C.error_body(int(exc.code), exc.message)
        log.error("%s failed", cgi.name, exc_info=exc)
        self.metrics.errors.inc(str(int(MMRet.ERR_SYS)))
        return C.error_body(MMRet.ERR_SYS, "internal server error")

    # ------------------------------------------------------------------ handlers
    async def _manualauth(self, req: Any, _s: Session | None, ctx: Context) -> Message:
        sess = await self.engine.login(
            req.user_name,
            req.password,
            req.base.device_id,
            req.device_name,
            ctx.peer,
            session_key=req.base.session_key,
        )
        _, nick = await self.engine.account(sess.uin)
        return pb.ManualAuthResponse(
            uin=sess.uin,
            session_key=sess.sid,
            user_name=sess.user_name,
            nick_name=nick,
            session_expires=sess.expires,
        )

    async def _logout(self, _r: Any, sess: Session | None, ctx: Context) -> Message:
        assert sess is not None
        if ctx.link is not None:  # unbound first: this link stays open for its reply
            ctx.link.unbind()
        await self.engine.logout(sess)  # closes the session's other long links
        return pb.LogoutResponse()

    async def _getprofile(self, _r: Any, sess: Session | None, _c: Context) -> Message:
        assert sess is not None
        return pb.GetProfileResponse(user=await self.engine.user_info(sess.uin))

    async def _newinit(self, _r: Any, sess: Session | None, _c: Context) -> bytes:
        assert sess is not None
        res = await self.engine.newinit(sess)
        head = pb.NewInitResponse(
            base=pb.BaseResponse(),
            current_synckey=res.key.to_bytes(),
            continue_flag=res.continue_flag,
            user=await self.engine.user_info(sess.uin),
        )
        return head.SerializeToString() + join_cmd_list(res.items)

    async def _newsync(self, req: Any, sess: Session | None, _c: Context) -> bytes:
        assert sess is not None
        t0 = time.perf_counter()
        key = self.engine.parse_key(req.key_buf)
        res = await self.engine.newsync(sess, key, req.selector)
        out = newsync_response(res.items, res.key.to_bytes(), res.continue_flag)
        self.metrics.sync_latency.observe(time.perf_counter() - t0)
        return out

    async def _syncdone(self, req: Any, sess: Session | None, _c: Context) -> bytes:
        assert sess is not None
        key = self.engine.parse_key(req.key_buf)
        await self.engine.check_key(sess.uin, key)
        self.engine.commit(sess, key)
        return _EMPTY  # a SyncDoneResponse has nothing to say: no fields, no bytes

    def _syncdone_now(
        self, req: Any, sess: Session, _c: Context, _d: Callable[[bytes], None]
    ) -> bytes | bool:
        """:meth:`_syncdone` when the cached log heads vouch for the key
        (:meth:`Engine.check_key_now`)."""
        key = self.engine.parse_key(req.key_buf)
        if not self.engine.check_key_now(sess.uin, key):
            return False
        self.engine.commit(sess, key)
        return _EMPTY

    async def _synccheck(self, req: Any, sess: Session | None, _c: Context) -> Message:
        assert sess is not None
        key = self.engine.parse_key(req.key_buf)
        await self.engine.check_key(sess.uin, key)
        wait = min(
            req.timeout_ms / 1000 if req.timeout_ms else self.synccheck_max, self.synccheck_max
        )
        sel = await self.engine.news(sess.uin, key)
        if not sel and wait > 0:
            await self.notifier.wait(sess.uin, wait, sess.sid)
            sel = await self.engine.news(sess.uin, key)
        return pb.SyncCheckResponse(selector=sel)

    async def _identify(self, req: Any, sess: Session | None, ctx: Context) -> Message:
        assert sess is not None
        if ctx.link is None:
            raise MMError(MMRet.ERR_ARG, "identify binds a long link; it has no meaning over HTTP")
        key = self.engine.parse_key(req.key_buf) if req.key_buf else SyncKey()
        if key:
            await self.engine.check_key(sess.uin, key)
        ctx.link.bind(sess)
        ctx.link.push_data = bool(req.push_data)
        return pb.IdentifyResponse(selector=await self.engine.news(sess.uin, key))

    async def _sendmsg(self, req: Any, sess: Session | None, _c: Context) -> bytes:
        assert sess is not None
        t0 = time.perf_counter()
        return self._sent(await self.engine.send(sess, req.list), t0)

    def _sendmsg_now(
        self, req: Any, sess: Session, _c: Context, done: Callable[[bytes], None]
    ) -> bytes | bool:
        """:meth:`_sendmsg` when the engine's caches know every recipient
        (:meth:`Engine.send_now`): the reply is built by the write's done callback."""
        t0 = time.perf_counter()
        w = self.engine.send_now(sess, req.list)
        if w is None:
            return False
        if w.write is None:  # every message refused
            return self._sent(w.results, t0)
        w.write.add_done_callback(_Written(self, w, t0, done))
        return True

    def _sent(self, results: list[SendResult], t0: float) -> bytes:
        """A send's response and metrics, from its results."""
        self.metrics.send_latency.observe(time.perf_counter() - t0)
        stored = dups = 0
        for r in results:
            if r.ret == 0:
                if r.duplicate:
                    dups += 1
                else:
                    stored += 1
        self.metrics.messages.inc(n=stored)
        if dups:
            self.metrics.duplicates.inc(n=dups)
        return send_msg_response(results)

    async def _statusnotify(self, req: Any, sess: Session | None, _c: Context) -> Message:
        assert sess is not None
        await self.engine.mark_read(sess, req.talker, req.last_msg_id)
        return pb.MarkReadResponse()

    async def _revokemsg(self, req: Any, sess: Session | None, _c: Context) -> Message:
        assert sess is not None
        await self.engine.revoke(sess, req.msg_id, req.client_msg_id)
        return pb.RevokeMsgResponse()

    async def _verifyuser(self, req: Any, sess: Session | None, _c: Context) -> Message:
        assert sess is not None
        contact, pending = await self.engine.add_contact(
            sess, req.user_name, req.opcode, req.verify_content
        )
        return pb.AddContactResponse(contact=contact, pending=pending)

    async def _oplog(self, req: Any, sess: Session | None, _c: Context) -> Message:
        assert sess is not None
        if req.cmd_id == OpLogCmd.REMARK:
            c = await self.engine.mark_contact(sess, req.user_name, req.remark_name, None)
        elif req.cmd_id == OpLogCmd.PIN:
            c = await self.engine.mark_contact(sess, req.user_name, None, req.pinned)
        else:
            raise MMError(MMRet.ERR_ARG, "oplog cmd_id must be 2 (remark) or 3 (pin)")
        return pb.OpLogResponse(contact=c)

    async def _getcontact(self, req: Any, sess: Session | None, _c: Context) -> Message:
        assert sess is not None
        return pb.GetContactResponse(
            contacts=await self.engine.contacts(sess, list(req.user_names))
        )

    async def _createchatroom(self, req: Any, sess: Session | None, _c: Context) -> Message:
        assert sess is not None
        room = await self.engine.create_room(sess, req.topic, list(req.members))
        return pb.CreateChatRoomResponse(chatroom=room)

    async def _modchatroom(self, req: Any, sess: Session | None, _c: Context) -> Message:
        assert sess is not None
        room = await self.engine.mod_room(sess, req.chatroom, req.op, list(req.members), req.topic)
        return pb.ModChatRoomResponse(chatroom=room)

    async def _uploadmsgimg(self, req: Any, sess: Session | None, _c: Context) -> Message:
        assert sess is not None
        resp = await self.uploads.image(sess, req)
        if resp.msg_id:
            self.metrics.messages.inc()
        return resp

    async def _getmsgimg(self, req: Any, sess: Session | None, _c: Context) -> Message:
        assert sess is not None
        kind = "thumb" if req.thumb else "img"
        total, data = await self.uploads.download(
            sess, req.msg_id, kind, req.start_pos, req.data_len
        )
        return pb.DownloadMsgImgResponse(
            msg_id=req.msg_id, total_len=total, start_pos=req.start_pos, data=data
        )

    async def _uploadappattach(self, req: Any, sess: Session | None, _c: Context) -> Message:
        assert sess is not None
        resp = await self.uploads.file(sess, req)
        if resp.msg_id:
            self.metrics.messages.inc()
        return resp

    async def _uploadvideo(self, req: Any, sess: Session | None, _c: Context) -> Message:
        assert sess is not None
        resp = await self.uploads.video(sess, req)
        if resp.msg_id:
            self.metrics.messages.inc()
        return resp

    async def _download_media(self, sess: Session | None, req: Any, kind: str) -> Message:
        assert sess is not None
        total, data = await self.uploads.download(
            sess, req.msg_id, kind, req.start_pos, req.data_len
        )
        return pb.DownloadMediaResponse(
            msg_id=req.msg_id, total_len=total, start_pos=req.start_pos, data=data
        )

    async def _downloadappattach(self, req: Any, sess: Session | None, _c: Context) -> Message:
        return await self._download_media(sess, req, "file")

    async def _downloadvideo(self, req: Any, sess: Session | None, _c: Context) -> Message:
        return await self._download_media(sess, req, "thumb" if req.thumb else "video")

    async def _uploadvoice(self, req: Any, sess: Session | None, _c: Context) -> Message:
        assert sess is not None
        return await self.uploads.voice(sess, req)

    async def _downloadvoice(self, req: Any, sess: Session | None, _c: Context) -> Message:
        assert sess is not None
        total, data = await self.uploads.download(sess, req.msg_id, "voice", req.offset, req.length)
        return pb.DownloadVoiceResponse(
            msg_id=req.msg_id, total_len=total, offset=req.offset, data=data
        )
