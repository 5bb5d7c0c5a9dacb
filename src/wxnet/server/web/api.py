"""The Web WeChat API on aiohttp (research/web-protocol.md sections 3-8).

``setup_web(app, backend)`` adds ``/jslogin``, ``/qrcode/<uuid>``, ``/`` (our web page),
``/webwx/*`` (its assets) and ``/cgi-bin/mmwebwx-bin/*`` to the server's app. Each web
session is a device of its account and talks to the sync engine through the same CGIs
as a phone (:mod:`wxnet.server.web.backend`).

Errors never leak a traceback: a request that cannot be understood gets the error form
of its endpoint (``BaseResponse.Ret``, ``window.synccheck={retcode:"1101"...}``, a 4xx
with a short text for media).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os
import secrets
import tempfile
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import BodyPartReader, StreamReader, web
from google.protobuf.message import Message

from wxnet._compat import wait_for
from wxnet.proto import web as wp
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.enums import Selector
from wxnet.proto.errors import MMError, MMRet, RemoteProtocolError
from wxnet.proto.syncdriver import Page, SyncDriver
from wxnet.proto.synckey import SyncKey
from wxnet.server.web import convert, csrf
from wxnet.server.web.backend import Backend
from wxnet.server.web.config import WebConfig
from wxnet.server.web.history import HistoryEndpoint
from wxnet.server.web.limits import FairPending, RateLimiter, address_key
from wxnet.server.web.login import (
    LoginState,
    QrLogin,
    QrLoginRefused,
    QrLogins,
    QrLoginsFull,
    QrLoginUnknown,
    WebSession,
    WebSessions,
)
from wxnet.server.web.spool import SpoolFull, SpoolTooLarge, WebSpool

__all__ = ["WEB_API_KEY", "WebApi", "WebConfig", "setup_web"]

log = logging.getLogger(__name__)

T = TypeVar("T", bound=Message)
R = TypeVar("R", bound=Message)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

WEB_API_KEY: web.AppKey[WebApi] = web.AppKey("wxnet_web_api")
_CGI = "/cgi-bin/mmwebwx-bin"
_IMG_CHUNK = 64 * 1024
_SYNC_PAGES = 8  # newsync pages folded into one webwxsync reply (clients ignore ContinueFlag)
_INIT_PAGES = 64  # newinit pages of one webwxinit snapshot


class WebError(Exception):
    """Answer with ``BaseResponse{Ret: ret}``."""

    def __init__(self, ret: int, message: str) -> None:
        super().__init__(message)
        self.ret = ret
        self.message = message


class SessionGone(WebError):
    def __init__(self, message: str = "session is not logged in") -> None:
        super().__init__(wp.RET_LOGIN_ELSEWHERE, message)


def _json(obj: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(obj, ensure_ascii=False, separators=(",", ":")),
        content_type="application/json",
        charset="utf-8",
    )


def _js(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/javascript", charset="utf-8")


def _base(ret: int = 0, msg: str = "") -> dict[str, Any]:
    return {"BaseResponse": {"Ret": ret, "ErrMsg": msg}}


def _q(request: web.Request, *names: str) -> str:
    """The first query parameter of ``names``, matched case-insensitively (research 7)."""
    wanted = {n.lower() for n in names}
    for k, v in request.query.items():
        if k.lower() in wanted:
            return v
    return ""


def _client_msg_id(msg: dict[str, Any]) -> str:
    for k in ("ClientMsgId", "LocalID"):
        v = msg.get(k)
        if isinstance(v, int | str) and not isinstance(v, bool) and str(v):
            text = str(v)
            if len(text) > 64:
                raise WebError(-1, "ClientMsgId too long")
            return text
    return secrets.token_hex(8)


def _sniff_image(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"GIF8"):
        return "image/gif"
    return "image/jpeg"


class WebApi:
    """State and handlers of the web API; one per server."""

    def __init__(
        self,
        backend: Backend,
        config: WebConfig | None = None,
        clock: Callable[[], float] = time.time,
        spool_dir: Path | None = None,
    ) -> None:
        self.backend = backend
        cfg = self.config = config or WebConfig()
        self.clock = clock
        # scanned logins leave the fair table (their phone owns them), so the store of
        # logins has room for them beyond the cap on pending ones
        self.logins = QrLogins(ttl=cfg.qr_ttl, limit=2 * cfg.qr_max_pending)
        self.sessions = WebSessions(ttl=cfg.session_ttl)
        self.pending = FairPending(cfg.qr_max_pending, cfg.qr_pending_per_address)
        self.jslogin_limit = RateLimiter(cfg.jslogin_rate, cfg.jslogin_burst)
        self.qrcode_limit = RateLimiter(cfg.qrcode_rate, cfg.qrcode_burst)
        self._qr_png: OrderedDict[str, bytes] = OrderedDict()
        if spool_dir is None:
            spool_dir = Path(tempfile.mkdtemp(prefix="wxnet-web-spool-"))
        self.spool = WebSpool(spool_dir, cfg)
        #: refusals by the limit that bit (``wxnet_web_limited_total{limit}``)
        self.limited: dict[str, float] = {}
        self._login_waiters: dict[str, asyncio.Event] = {}
        self._reported: dict[str, int] = {}  # uuid -> login version the poll last reported
        self._polls: dict[str, int] = {}  # wxsid -> pending synccheck polls
        self.pending_polls = 0
        self._avatars: dict[str, bytes] = {}
        self._holding: set[asyncio.Task[Any]] = set()  # long polls, cancelled on shutdown

    def sweep(self) -> None:
        """Forget expired QR logins (waking their polls), long-dead sessions, and uploads
        past their lifetime or of sessions that ended."""
        now = self.clock()
        for q in self.logins.expire(now):
            self._forget_login(q.uuid)
        self.sessions.sweep(now)
        alive = {
            u.sid
            for u in self.spool.uploads_of()
            if (s := self.sessions.find(u.uin, u.sid, now)) is not None and s.alive
        }
        self.spool.sweep(now, alive)

    def _forget_login(self, uuid: str) -> None:
        self._reported.pop(uuid, None)
        self._qr_png.pop(uuid, None)
        self.pending.discard(uuid)
        self._wake_login(uuid)

    def count(self, limit: str) -> None:
        """One more refusal by ``limit`` (a metric label)."""
        self.limited[limit] = self.limited.get(limit, 0) + 1

    async def _sweeper(self, interval: float = 30.0) -> None:
        while True:
            await asyncio.sleep(interval)
            self.sweep()
            try:
                await self.sessions.sweep_store(self.clock())
            except MMError as exc:  # the store is down: sweep next time
                log.warning("web sessions not swept: %s", exc.message)

    async def on_startup(self, _app: web.Application) -> None:
        self._sweep_task = asyncio.get_running_loop().create_task(self._sweeper())

    async def on_shutdown(self, _app: web.Application) -> None:
        """Cancel held long polls so that the server stops without waiting them out."""
        task = getattr(self, "_sweep_task", None)
        if task is not None:
            task.cancel()
        for task in list(self._holding):
            task.cancel()

    def _hold(self) -> asyncio.Task[Any] | None:
        task = asyncio.current_task()
        if task is not None:
            self._holding.add(task)
            task.add_done_callback(self._holding.discard)
        return task

    # -- the phone side: scanqrcode --------------------------------------------------
    def scan_qr(self, uin: int, uuid: str, confirm: bool) -> tuple[int, str]:
        """A logged-in mobile device of ``uin`` scanned / approved web login ``uuid``.

        Returns ``(ret, err_msg)`` for the ScanQrResponse."""
        try:
            self.logins.scan(uuid, uin, self.clock(), confirm=confirm)
        except QrLoginUnknown:
            return MMRet.ERR_NOT_FOUND, "no such QR code (expired?)"
        except QrLoginRefused as exc:
            return MMRet.ERR_NOT_ALLOWED, str(exc)
        self.pending.discard(uuid)  # a phone holds it now: no flood can evict it
        self._wake_login(uuid)
        return 0, ""

    async def handle_scanqrcode(self, uin: int, request: pb.ScanQrRequest) -> pb.ScanQrResponse:
        """The ``scanqrcode`` CGI for an authenticated mobile session of ``uin``."""
        ret, msg = self.scan_qr(uin, request.uuid, request.confirm)
        resp = pb.ScanQrResponse()
        resp.base.ret = ret
        resp.base.err_msg = msg
        return resp

    def _wake_login(self, uuid: str) -> None:
        ev = self._login_waiters.pop(uuid, None)
        if ev is not None:
            ev.set()

    # -- plumbing ----------------------------------------------------------------------
    async def _cgi(self, s: WebSession, name: str, req: Message, resp_type: type[R]) -> R:
        base = req.base  # type: ignore[attr-defined]
        base.session_key = s.session_key
        base.uin = s.uin
        base.device_type = "web"
        resp = await self.backend.call(name, req)
        if not isinstance(resp, resp_type):
            raise WebError(-1, f"{name}: unexpected reply")
        ret = resp.base.ret  # type: ignore[attr-defined]
        if ret == MMRet.ERR_SESSIONTIMEOUT:
            self.sessions.end(s.wxsid, self.clock())
            self.spool.drop_session(s.wxsid)
            await self.sessions.save(s)
            raise SessionGone("the account's session ended")
        if ret != 0:
            raise WebError(int(ret), resp.base.err_msg or f"{name} failed")  # type: ignore[attr-defined]
        return resp

    async def _session(self, request: web.Request, body: dict[str, Any] | None) -> WebSession:
        """Authenticate by wxuin + wxsid: BaseRequest, else query, else cookies (1.3, 10)."""
        uin: int | None = None
        sid = ""
        if body is not None:
            br = wp.parse_base_request(body)
            if br is not None:
                uin, sid = br.uin, br.sid
        if uin is None:
            uin, sid = wp.parse_uin(request.query.get("uin")), request.query.get("sid", "")
        if uin is None or not sid:
            uin = wp.parse_uin(request.cookies.get("wxuin"))
            sid = request.cookies.get("wxsid", "")
        if uin is None or not sid:
            raise WebError(wp.RET_SESSION_REJECTED, "no session (wxuin and wxsid)")
        try:
            s = await self.sessions.lookup(uin, sid, self.clock())
        except MMError as exc:  # the store cannot be reached
            raise WebError(int(exc.code), exc.message) from None
        if s is None or not s.alive:
            raise SessionGone()
        return s

    async def _body(self, request: web.Request) -> dict[str, Any]:
        """The whole JSON body, however many segments it comes in, up to the cap and
        within ``body_timeout`` (a read returns only what is buffered, so loop)."""
        limit = wp.MAX_JSON_BODY
        if request.content_length is not None and request.content_length > limit:
            self.count("body_too_large")
            raise WebError(int(MMRet.ERR_TOO_LARGE), f"body over {limit} bytes")
        try:
            data = await wait_for(_read_all(request.content, limit), self.config.body_timeout)
        except TimeoutError:
            self.count("body_timeout")
            raise WebError(-1, "the body did not arrive in time") from None
        except OverflowError:
            self.count("body_too_large")
            raise WebError(int(MMRet.ERR_TOO_LARGE), f"body over {limit} bytes") from None
        return wp.parse_json_body(data, limit)

    def _refuse_cross_site(
        self, request: web.Request, tolerated: frozenset[str] = frozenset()
    ) -> web.StreamResponse | None:
        why = csrf.check(
            request.method,
            request.host,
            request.headers.get("Origin"),
            request.headers.get("Referer"),
            request.headers.get("Content-Type"),
            tolerated,
        )
        if why is None:
            return None
        self.count("cross_site")
        return web.Response(status=403, text=f"refused: {why}\n", content_type="text/plain")

    def json_endpoint(
        self, fn: Callable[[web.Request, WebSession, dict[str, Any]], Awaitable[dict[str, Any]]]
    ) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            refused = self._refuse_cross_site(request)
            if refused is not None:
                return refused
            try:
                body = await self._body(request)
                s = await self._session(request, body)
                out = await fn(request, s, body)
            except wp.WebProtocolError as exc:
                return _json(_base(exc.ret, str(exc)))
            except WebError as exc:
                return _json(_base(exc.ret, exc.message))
            return _json({**_base(), **out})

        return handler

    # -- login (research 3) --------------------------------------------------------------
    async def jslogin(self, request: web.Request) -> web.StreamResponse:
        """A new QR login: rate-limited per address; an address holds at most
        ``qr_pending_per_address``, and at the global cap the heaviest holder's oldest
        login makes room, so a flood cannot keep a browser from getting a code."""
        now = self.clock()
        addr = address_key(request.remote or "")
        if not self.jslogin_limit.allow(addr, now):
            self.count("jslogin_rate")
            return _too_many(
                'window.QRLogin.code = 429; window.QRLogin.uuid = "";',
                self.jslogin_limit.retry_after(addr),
            )
        for q in self.logins.expire(now):
            self._forget_login(q.uuid)
        for old in self.pending.make_room(addr):
            self.count("qr_evicted")
            self.logins.discard(old)
            self._forget_login(old)
        try:
            q = self.logins.create(now)
        except QrLoginsFull:  # only scanned logins left, all of them in use
            self.count("qr_pending")
            return _js('window.QRLogin.code = 500; window.QRLogin.uuid = "";')
        self.pending.add(q.uuid, addr)
        return _js(wp.encode_qrlogin(200, q.uuid))

    async def qrcode(self, request: web.Request) -> web.StreamResponse:
        """The QR image of a pending login: rendered once per uuid (cached), and
        rate-limited per address (rendering costs milliseconds of CPU)."""
        uuid = request.match_info["uuid"]
        if self.logins.get(uuid, self.clock()) is None:
            raise web.HTTPNotFound(text="no such QR code\n")
        png = self._qr_png.get(uuid)
        if png is not None:
            self._qr_png.move_to_end(uuid)
        else:
            addr = address_key(request.remote or "")
            if not self.qrcode_limit.allow(addr, self.clock()):
                self.count("qrcode_rate")
                return _too_many("too many QR images\n", self.qrcode_limit.retry_after(addr))
            png = _qr_png(self.qr_text(uuid))
            self._qr_png[uuid] = png
            while len(self._qr_png) > self.config.qrcode_cache:
                self._qr_png.popitem(last=False)
        return web.Response(body=png, content_type="image/png")

    @staticmethod
    def qr_text(uuid: str) -> str:
        """What the QR code says: the real web login URL form, which ``wxnet scan``
        accepts as well as the bare uuid (research 3.2)."""
        return f"https://login.weixin.qq.com/l/{uuid}"

    async def login_poll(self, request: web.Request) -> web.StreamResponse:
        uuid = _q(request, "uuid")
        q = self.logins.get(uuid, self.clock())
        if q is None:
            return _js(wp.encode_login_poll(wp.LoginPoll(400)))
        if self._reported.get(uuid, 0) == q.version and q.state is not LoginState.CONFIRMED:
            self._hold()
            ev = self._login_waiters.setdefault(uuid, asyncio.Event())
            try:
                await wait_for(ev.wait(), self.config.login_hold)
            except TimeoutError:
                pass
            q = self.logins.get(uuid, self.clock()) or q
            if self._reported.get(uuid, 0) == q.version:
                return _js(wp.encode_login_poll(wp.LoginPoll(408)))
        self._reported[uuid] = q.version
        return _js(wp.encode_login_poll(self._poll_answer(request, q)))

    def _poll_answer(self, request: web.Request, q: QrLogin) -> wp.LoginPoll:
        code = q.poll_code(self.clock())
        if code == 400:
            self._reported.pop(q.uuid, None)
        if code != 200:
            return wp.LoginPoll(code)
        uri = (
            f"http://{request.host}{_CGI}/webwxnewloginpage?ticket={q.ticket}&uuid={q.uuid}"
            f"&lang=zh_CN&scan={int(self.clock())}"
        )
        return wp.LoginPoll(200, redirect_uri=uri)

    async def newloginpage(self, request: web.Request) -> web.StreamResponse:
        ticket, uuid = _q(request, "ticket"), _q(request, "uuid")
        uin = self.logins.redeem(ticket, uuid, self.clock()) if ticket and uuid else None
        dev = await self.backend.open_device(uin, "web") if uin is not None else None
        if dev is None:
            fail = (
                "<error><ret>1203</ret><message>login ticket is invalid or used</message></error>"
            )
            return web.Response(text=fail, content_type="text/plain")
        self._reported.pop(uuid, None)
        s = self.sessions.add(dev.uin, dev.user_name, dev.nick_name, dev.session_key, self.clock())
        await self.sessions.save(s)  # durable before the client hears of it
        xml = wp.encode_login_ticket(wp.LoginTicket(s.skey, s.wxsid, s.uin, s.pass_ticket))
        # 301 for the clients (wechat4u parses only a 301, 3.4); our page asks with
        # version=v2, as the real browser did, and gets 200 so that fetch() can read it.
        status = 200 if _q(request, "version") == "v2" else 301
        resp = web.Response(status=status, text=xml, content_type="text/plain")
        resp.headers["Location"] = f"http://{request.host}/"
        max_age = int(self.config.session_ttl)
        # Every cookie carries an attribute after its value (wechat4u, 1.5); no Domain.
        for name, value in (
            ("wxuin", str(s.uin)),
            ("wxsid", s.wxsid),
            ("webwx_data_ticket", s.data_ticket),
            ("webwx_auth_ticket", s.pass_ticket),
            ("wxloadtime", str(int(self.clock()))),
            ("mm_lang", "zh_CN"),
        ):
            resp.set_cookie(
                name,
                value,
                path="/",
                max_age=max_age,
                httponly=name == "wxsid",
                samesite="Strict",  # a cross-site request carries no session (CSRF)
            )
        return resp

    async def logout(self, request: web.Request) -> web.StreamResponse:
        """End the web session: over POST (wechat4u, our page; cross-site checks as for
        every POST), or over GET only with proof that a page cannot forge (an ``<img>``
        must not log anyone out): the session's skey in the query (itchat), or, from a
        client that is not a browser page (no ``Sec-Fetch-Site``, itchat-uos whose skey is
        empty), the session cookies, which a browser sends only same-site (Strict)."""
        body: dict[str, Any] | None = None
        if request.method == "POST":
            refused = self._refuse_cross_site(request, _ANY_FORM)
            if refused is not None:
                return refused
            if request.content_type == "application/json":
                try:
                    body = await self._body(request)
                except (wp.WebProtocolError, WebError):
                    body = None
        elif request.method != "GET":
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
        try:
            s = await self._session(request, body)
        except WebError:
            return web.Response(text="")
        if request.method == "GET":
            fetch_site = request.headers.get("Sec-Fetch-Site")
            skey = _q(request, "skey")
            proven = bool(skey) and secrets.compare_digest(skey, s.skey)
            if not proven and fetch_site not in (None, "same-origin", "none"):
                self.count("cross_site")
                return web.Response(
                    status=403, text="log out with POST\n", content_type="text/plain"
                )
        self.sessions.end(s.wxsid, self.clock())
        self.spool.drop_session(s.wxsid)
        await self.sessions.save(s)
        try:
            await self.backend.call("logout", self._based(s, pb.LogoutRequest()))
        except Exception:  # the web session is over whatever the mobile side says
            log.exception("logout of web session uin=%s", s.uin)
        resp = web.Response(text="")
        for name in ("wxsid", "wxuin", "webwx_data_ticket"):
            resp.del_cookie(name, path="/")
        return resp

    @staticmethod
    def _based(s: WebSession, req: T) -> T:
        req.base.session_key = s.session_key  # type: ignore[attr-defined]
        req.base.uin = s.uin  # type: ignore[attr-defined]
        return req

    # -- init, contacts (research 4) ---------------------------------------------------
    async def _nicks(self, s: WebSession, names: list[str]) -> dict[str, str]:
        if not names:
            return {}
        req = pb.GetContactRequest(user_names=sorted(set(names)))
        try:
            resp = await self._cgi(s, "getcontact", req, pb.GetContactResponse)
        except SessionGone:
            raise
        except WebError:
            return {}
        return {c.user_name: c.nick_name for c in resp.contacts if c.nick_name}

    async def init(
        self, request: web.Request, s: WebSession, body: dict[str, Any]
    ) -> dict[str, Any]:
        contacts: list[pb.Contact] = []
        user = pb.UserInfo()
        # The snapshot, as newinit pages (no syncdone: the web client presents its key
        # in webwxsync, which commits it).
        driver = SyncDriver(b"", max_pages=_INIT_PAGES, commit=False)
        async for page in self._sync_pages(s, driver):
            resp = page.response
            if isinstance(resp, pb.NewInitResponse) and resp.HasField("user"):
                user = resp.user
            for item in page.items:
                if item.WhichOneof("body") == "contact":
                    contacts.append(item.contact)
                elif item.WhichOneof("body") == "user_info":
                    user = item.user_info
        key = driver.key
        if user.user_name:
            s.user_name, s.nick_name = user.user_name, user.nick_name or s.nick_name
        skey = SyncKey.from_bytes(key)
        chat = [convert.contact_obj(c, {}, with_members=False) for c in contacts[:50]]
        return {
            "Count": len(chat),
            "ContactList": chat,
            "SyncKey": wp.web_synckey(skey),
            "SyncCheckKey": wp.web_synckey(skey),
            "User": convert.self_obj(s.uin, s.user_name, s.nick_name),
            "ChatSet": ",".join(c["UserName"] for c in chat),
            "SKey": s.skey,
            "ClientVersion": 369299473,
            "SystemTime": int(self.clock()),
            "GrayScale": 1,
            "InviteStartCount": 40,
            "MPSubscribeMsgCount": 0,
            "MPSubscribeMsgList": [],
            "ClickReportInterval": 600000,
        }

    async def statusnotify(
        self, request: web.Request, s: WebSession, body: dict[str, Any]
    ) -> dict[str, Any]:
        to = body.get("ToUserName")
        if body.get("Code") == 1 and isinstance(to, str) and to.startswith("@"):
            name, _ = wp.decode_web_name(to)
            await self._cgi(s, "statusnotify", pb.MarkReadRequest(talker=name), pb.MarkReadResponse)
        return {"MsgID": secrets.token_hex(8)}

    async def _all_contacts(self, s: WebSession) -> list[pb.Contact]:
        resp = await self._cgi(s, "getcontact", pb.GetContactRequest(), pb.GetContactResponse)
        return [c for c in resp.contacts if c.user_name != s.user_name]

    async def getcontact(self, request: web.Request) -> web.StreamResponse:
        try:
            s = await self._session(request, None)
            try:
                seq = int(_q(request, "seq") or 0)
            except ValueError:
                raise WebError(-1, "seq must be a number") from None
            contacts = await self._all_contacts(s)
        except WebError as exc:
            return _json(_base(exc.ret, exc.message))
        page = self.config.contact_page
        seq = max(0, seq)
        chunk = contacts[seq : seq + page]
        nxt = seq + page if seq + page < len(contacts) else 0
        members = [convert.contact_obj(c, {}, with_members=False) for c in chunk]
        return _json({**_base(), "MemberCount": len(members), "MemberList": members, "Seq": nxt})

    async def batchgetcontact(
        self, request: web.Request, s: WebSession, body: dict[str, Any]
    ) -> dict[str, Any]:
        items = body.get("List")
        if not isinstance(items, list) or len(items) > 500:
            raise WebError(-1, "List must be an array of at most 500 items")
        names: list[str] = []
        for it in items:
            un = it.get("UserName") if isinstance(it, dict) else None
            if not isinstance(un, str) or not un.startswith("@"):
                continue  # filehelper, fmessage, junk: omitted (research 4.5)
            try:
                names.append(wp.decode_web_name(un)[0])
            except wp.WebProtocolError:
                continue
        out: list[dict[str, Any]] = []
        if s.user_name in names:
            out.append(convert.self_obj(s.uin, s.user_name, s.nick_name))
        others = [n for n in dict.fromkeys(names) if n != s.user_name]
        if others:
            resp = await self._cgi(
                s, "getcontact", pb.GetContactRequest(user_names=others), pb.GetContactResponse
            )
            member_names = [m for c in resp.contacts for m in c.members]
            nicks = await self._nicks(s, member_names)
            nicks[s.user_name] = s.nick_name
            for c in resp.contacts:
                out.append(convert.contact_obj(c, nicks))
        return {"Count": len(out), "ContactList": out}

    # -- receiving (research 5) ----------------------------------------------------------
    async def synccheck(self, request: web.Request) -> web.StreamResponse:
        try:
            s = await self._session(request, None)
        except WebError as exc:
            return _js(wp.encode_synccheck(exc.ret, 0))
        try:
            key = wp.parse_web_synckey(_q(request, "synckey"))
        except wp.WebProtocolError:
            return _js(wp.encode_synccheck(wp.RET_SESSION_REJECTED, 0))
        if self._polls.get(s.wxsid, 0) >= self.config.max_polls_per_session:
            return _js(wp.encode_synccheck(0, 0))
        self._polls[s.wxsid] = self._polls.get(s.wxsid, 0) + 1
        self.pending_polls += 1
        self._hold()
        try:
            req = pb.SyncCheckRequest(
                key_buf=key.to_bytes(), timeout_ms=int(self.config.synccheck_hold * 1000)
            )
            resp = await self._cgi(s, "newsynccheck", req, pb.SyncCheckResponse)
        except SessionGone:
            return _js(wp.encode_synccheck(wp.RET_LOGIN_ELSEWHERE, 0))
        except WebError as exc:
            if exc.ret == MMRet.ERR_SYNCKEY_INVALID:
                return _js(wp.encode_synccheck(wp.RET_SESSION_REJECTED, 0))
            return _js(wp.encode_synccheck(0, 0))
        finally:
            self.pending_polls -= 1
            left = self._polls.get(s.wxsid, 1) - 1
            if left:
                self._polls[s.wxsid] = left
            else:
                self._polls.pop(s.wxsid, None)
        if not s.alive:
            return _js(wp.encode_synccheck(wp.RET_LOGIN_ELSEWHERE, 0))
        return _js(wp.encode_synccheck(0, 2 if resp.selector else 0))

    async def _sync_pages(self, s: WebSession, driver: SyncDriver) -> AsyncIterator[Page]:
        """Run the shared sync loop over this session's CGIs, yielding each page."""
        try:
            while (call := driver.next_request()) is not None:
                resp = await self._cgi(s, call.cgi.name, call.request, call.cgi.response)
                event = driver.receive(resp)
                if isinstance(event, Page):
                    yield event
        except RemoteProtocolError as exc:
            raise WebError(-1, str(exc)) from None

    @staticmethod
    def _fold(
        s: WebSession,
        items: Sequence[pb.CmdItem],
        msgs: list[dict[str, Any]],
        mod: list[pb.Contact],
        dels: list[str],
        now: int,
    ) -> None:
        """Sort one page's items into webwxsync's lists."""
        for item in items:
            kind = item.WhichOneof("body")
            if kind == "add_msg":
                m = item.add_msg
                if m.from_user == s.user_name and m.client_msg_id in s.sent:
                    continue  # this session's own send: not echoed (research 5.2)
                msgs.append(convert.message_obj(m, s.user_name))
            elif kind == "contact":
                mod.append(item.contact)
            elif kind == "del_contact":
                dels.append(item.del_contact.user_name)
            elif kind == "revoke":
                msgs.append(convert.revoke_obj(item.revoke, s.user_name, now))

    async def sync(
        self, request: web.Request, s: WebSession, body: dict[str, Any]
    ) -> dict[str, Any]:
        raw_key = body.get("SyncKey")
        if not isinstance(raw_key, dict):
            raise WebError(-1, "SyncKey must be an object")
        key_buf = wp.parse_web_synckey(raw_key).to_bytes()
        msgs: list[dict[str, Any]] = []
        mod: list[pb.Contact] = []
        dels: list[str] = []
        now = int(self.clock())
        driver = SyncDriver(key_buf, selector=Selector.ALL, max_pages=_SYNC_PAGES, commit=False)
        try:
            async for page in self._sync_pages(s, driver):
                self._fold(s, page.items, msgs, mod, dels, now)
        except WebError as exc:
            if exc.ret == MMRet.ERR_SYNCKEY_INVALID:
                # A web client cannot take a newinit snapshot here: it logs in again.
                raise WebError(-1, "SyncKey cannot be served; log in again") from None
            raise
        key_buf = driver.key
        nicks = await self._nicks(s, [m for c in mod for m in c.members]) if mod else {}
        mods = [convert.contact_obj(c, nicks) for c in mod]
        new_key = wp.web_synckey(SyncKey.from_bytes(key_buf))
        return {
            "AddMsgCount": len(msgs),
            "AddMsgList": msgs,
            "ModContactCount": len(mods),
            "ModContactList": mods,
            "DelContactCount": len(dels),
            "DelContactList": [{"UserName": wp.web_name(d, convert.is_chatroom(d))} for d in dels],
            "ModChatRoomMemberCount": 0,
            "ModChatRoomMemberList": [],
            "Profile": {
                "BitFlag": 0,
                "UserName": {"Buff": ""},
                "NickName": {"Buff": ""},
                "BindUin": 0,
                "BindEmail": {"Buff": ""},
                "BindMobile": {"Buff": ""},
                "Status": 0,
                "Sex": 0,
                "PersonalCard": 0,
                "Alias": "",
                "HeadImgUpdateFlag": 0,
                "HeadImgUrl": "",
                "Signature": "",
            },
            "ContinueFlag": 0,
            "SyncKey": new_key,
            "SyncCheckKey": new_key,
            "SKey": s.skey,
        }

    # -- sending (research 6) ------------------------------------------------------------
    def _target(self, s: WebSession, to: object) -> str:
        if not isinstance(to, str) or not to:
            raise WebError(-1, "ToUserName is required")
        if to == wp.FILEHELPER:
            return s.user_name  # notes to self
        return wp.decode_web_name(to)[0]

    def _msg(self, body: dict[str, Any]) -> dict[str, Any]:
        msg = body.get("Msg")
        if not isinstance(msg, dict):
            raise WebError(-1, "Msg must be an object")
        return msg

    async def sendmsg(
        self, request: web.Request, s: WebSession, body: dict[str, Any]
    ) -> dict[str, Any]:
        msg = self._msg(body)
        to = self._target(s, msg.get("ToUserName"))
        content = msg.get("Content")
        if not isinstance(content, str):
            raise WebError(-1, "Content must be a string")
        if len(content.encode("utf-8")) > 64 * 1024:
            raise WebError(int(MMRet.ERR_TOO_LARGE), "Content too long")
        cmid = _client_msg_id(msg)
        mtype = msg.get("Type", 1)
        item = pb.MicroMsg(
            to_user=to,
            content=content,
            msg_type=mtype if isinstance(mtype, int) and mtype in (1, 42, 48, 49) else 1,
            create_time=int(self.clock()),
            client_msg_id=cmid,
        )
        s.remember_sent(cmid)
        resp = await self._cgi(s, "newsendmsg", pb.SendMsgRequest(list=[item]), pb.SendMsgResponse)
        if not resp.list:
            raise WebError(-1, "send failed")
        r = resp.list[0]
        if r.ret != 0:
            raise WebError(int(r.ret), r.err_msg or "send failed")
        return {"MsgID": str(r.msg_id), "LocalID": cmid}

    async def uploadmedia(self, request: web.Request) -> web.StreamResponse:
        """One chunk of a multipart upload. The session is checked from the query or the
        cookies before a byte of the body is read; the body is then streamed (fields in
        memory up to ``max_form_bytes``, the file part to the spool on disk up to
        ``max_chunk`` and the account's quota), all within ``upload_timeout``."""
        refused = self._refuse_cross_site(request, _MULTIPART)
        if refused is not None:
            return refused
        try:
            s = await self._session(request, None)
        except WebError as exc:
            self.count("upload_no_session")
            return _json(_base(exc.ret, exc.message))
        try:
            return await self._uploadmedia(request, s)
        except wp.WebProtocolError as exc:
            return _json(_base(exc.ret, str(exc)))
        except WebError as exc:
            return _json(_base(exc.ret, exc.message))

    async def _uploadmedia(self, request: web.Request, s: WebSession) -> web.StreamResponse:
        cfg = self.config
        if not request.content_type.startswith("multipart/"):
            raise WebError(-1, "webwxuploadmedia wants multipart/form-data")
        declared = request.content_length
        if declared is not None and declared > cfg.max_chunk + cfg.max_form_bytes + 8192:
            self.count("upload_too_large")
            raise WebError(int(MMRet.ERR_TOO_LARGE), "chunk too large")
        if self.spool.disk_low():
            self.count("disk")
            raise WebError(int(MMRet.ERR_BUSY), "the server is low on disk space: retry later")
        need = min(declared or cfg.max_chunk, cfg.max_chunk)
        if self.spool.make_room(s.uin, need) <= 0:
            self.count("upload_quota")
            raise WebError(int(MMRet.ERR_BUSY), "upload quota of the account is used up")
        temp: Path | None = None
        size = 0
        try:
            try:
                fields, temp, size = await wait_for(
                    self._read_upload_body(request, s), cfg.upload_timeout
                )
            except TimeoutError:
                self.count("upload_timeout")
                raise WebError(-1, "the upload did not arrive in time") from None
            upreq = wp.parse_json_body(fields.get("uploadmediarequest", "").encode())
            br = wp.parse_base_request(upreq)
            if br is not None and br.sid and (br.uin != s.uin or br.sid != s.wxsid):
                raise WebError(wp.RET_LOGIN_ELSEWHERE, "BaseRequest names another session")
            try:
                total = int(upreq.get("TotalLen") or fields.get("size") or 0)
                chunks = int(fields.get("chunks") or 1)
                chunk = int(fields.get("chunk") or 0)
            except (TypeError, ValueError):
                raise WebError(-1, "TotalLen, chunks and chunk must be numbers") from None
            if not 0 < total <= cfg.max_upload:
                self.count("upload_too_large")
                raise WebError(int(MMRet.ERR_TOO_LARGE), f"file size must be 1..{cfg.max_upload}")
            if not (0 < chunks <= total // (64 * 1024) + 2 and 0 <= chunk < chunks):
                raise WebError(-1, "bad chunk numbers")
            if temp is None:
                raise WebError(-1, "no file part (filename)")
            ident = str(upreq.get("ClientMediaId") or fields.get("name", ""))[:64] + f":{total}"
            try:
                up = self.spool.upload_for(s.wxsid, s.uin, ident, total, chunks, self.clock())
                await asyncio.to_thread(self.spool.commit_chunk, up, chunk, temp, size)
            except SpoolFull as exc:
                self.count("upload_quota")
                raise WebError(int(MMRet.ERR_BUSY), str(exc)) from None
            except SpoolTooLarge as exc:
                self.count("upload_too_large")
                raise WebError(int(MMRet.ERR_UPLOAD_OFFSET), str(exc)) from None
            temp = None  # it belongs to the upload now
            return _json(
                {
                    **_base(),
                    "MediaId": up.media_id,
                    "StartPos": up.spooled,
                    "CDNThumbImgHeight": 100,
                    "CDNThumbImgWidth": 100,
                    "EncryFileName": "",
                }
            )
        finally:
            if temp is not None:
                await asyncio.to_thread(_unlink, temp)
                self.spool.charge(s.uin, -size)

    async def _read_upload_body(
        self, request: web.Request, s: WebSession
    ) -> tuple[dict[str, str], Path | None, int]:
        """Stream the multipart body: returns (fields, spooled file part, its size).

        The file part's bytes are charged to the account as they arrive, so parallel
        requests cannot overrun its quota; on error the caller's cleanup (by size) does
        not apply, so this uncharges and deletes what it spooled itself."""
        cfg = self.config
        fields: dict[str, str] = {}
        form_bytes = 0
        temp: Path | None = None
        size = 0
        fd = -1
        try:
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    raise WebError(-1, "nested multipart is not accepted")
                if part.name == "filename":
                    if temp is not None:
                        raise WebError(-1, "more than one file part")
                    temp, fd = await asyncio.to_thread(self.spool.open_temp)
                    while chunk := await part.read_chunk(64 * 1024):
                        size += len(chunk)
                        self.spool.charge(s.uin, len(chunk))
                        if size > cfg.max_chunk:
                            self.count("upload_too_large")
                            raise WebError(int(MMRet.ERR_TOO_LARGE), "chunk too large")
                        if self.spool.room(s.uin) < 0:
                            self.count("upload_quota")
                            raise WebError(
                                int(MMRet.ERR_BUSY), "upload quota of the account is used up"
                            )
                        await asyncio.to_thread(_write_all, fd, chunk)
                    await asyncio.to_thread(os.close, fd)
                    fd = -1
                else:
                    if len(fields) >= 32:
                        raise WebError(-1, "too many form fields")
                    raw = await _read_part(part, cfg.max_form_bytes - form_bytes)
                    form_bytes += len(raw) + len(part.name or "")
                    if part.name:
                        fields[part.name[:64]] = raw.decode("utf-8", "replace")
        except BaseException:
            if fd >= 0:
                os.close(fd)
            if temp is not None:
                await asyncio.shield(asyncio.to_thread(_unlink, temp))
                self.spool.charge(s.uin, -size)
            raise
        return fields, temp, size

    async def sendmsgimg(
        self, request: web.Request, s: WebSession, body: dict[str, Any]
    ) -> dict[str, Any]:
        msg = self._msg(body)
        to = self._target(s, msg.get("ToUserName"))
        media_id = msg.get("MediaId")
        up = self.spool.finished(s.wxsid, media_id) if isinstance(media_id, str) else None
        if up is None:
            raise WebError(int(MMRet.ERR_NOT_FOUND), "no uploaded media with this MediaId")
        cmid = _client_msg_id(msg)
        s.remember_sent(cmid)
        resp: pb.UploadMsgImgResponse | None = None
        pieces = up.read(_IMG_CHUNK)
        pos = 0
        try:
            while data := await asyncio.to_thread(next, pieces, b""):
                req = pb.UploadMsgImgRequest(
                    client_img_id=cmid, to_user=to, total_len=up.total, start_pos=pos, data=data
                )
                resp = await self._cgi(s, "uploadmsgimg", req, pb.UploadMsgImgResponse)
                pos += len(data)
                if resp.msg_id:
                    break  # stored (or a resend of a stored one: answered from dedup)
        except OSError:  # expired and deleted meanwhile
            raise WebError(int(MMRet.ERR_NOT_FOUND), "the upload is gone; upload again") from None
        finally:
            pieces.close()
        if resp is None or not resp.msg_id:
            raise WebError(-1, "image was not stored")
        up.sent = True
        return {"MsgID": str(resp.msg_id), "LocalID": cmid}

    async def revokemsg(
        self, request: web.Request, s: WebSession, body: dict[str, Any]
    ) -> dict[str, Any]:
        svr = body.get("SvrMsgId")
        try:
            msg_id = int(svr) if isinstance(svr, int | str) and not isinstance(svr, bool) else 0
        except ValueError:
            raise WebError(-1, "SvrMsgId must be a number") from None
        cmid = body.get("ClientMsgId")
        req = pb.RevokeMsgRequest(
            msg_id=msg_id if 0 < msg_id < 1 << 63 else 0,
            client_msg_id=str(cmid) if isinstance(cmid, int | str) else "",
        )
        await self._cgi(s, "revokemsg", req, pb.RevokeMsgResponse)
        return {"Introduction": "", "SysWording": ""}

    # -- media downloads (research 7) ----------------------------------------------------
    async def _media_session(self, request: web.Request) -> WebSession:
        try:
            return await self._session(request, None)
        except WebError:
            raise web.HTTPUnauthorized(text="not logged in\n") from None

    async def _stream_media(self, request: web.Request, kind: str) -> web.StreamResponse:
        """Send a message's media straight from its file (sendfile, or chunks that wait
        for the socket to drain): a reader that never drains holds no copy of it."""
        s = await self._media_session(request)
        msg_id = _msg_id_param(request)
        try:
            path = await self.backend.media_file(s.session_key, s.uin, msg_id, kind)
            head = await asyncio.to_thread(_head, path)
        except MMError as exc:
            if exc.code == MMRet.ERR_SESSIONTIMEOUT:
                self.sessions.end(s.wxsid, self.clock())
                await self.sessions.save(s)
                raise web.HTTPUnauthorized(text="not logged in\n") from None
            raise web.HTTPNotFound(text=f"no such {_KIND_NAMES[kind]}\n") from None
        except OSError:
            raise web.HTTPNotFound(text=f"no such {_KIND_NAMES[kind]}\n") from None
        ctype = "audio/mp3" if kind == "voice" else _sniff_image(head)
        return web.FileResponse(path, chunk_size=64 * 1024, headers={"Content-Type": ctype})

    async def getmsgimg(self, request: web.Request) -> web.StreamResponse:
        return await self._stream_media(
            request, "thumb" if _q(request, "type") == "slave" else "img"
        )

    async def getvoice(self, request: web.Request) -> web.StreamResponse:
        return await self._stream_media(request, "voice")

    async def geticon(self, request: web.Request) -> web.StreamResponse:
        await self._media_session(request)
        name = _q(request, "username")[:600]
        png = self._avatars.get(name)
        if png is None:
            png = _avatar(name)
            if len(self._avatars) > 4096:
                self._avatars.clear()
            self._avatars[name] = png
        return web.Response(body=png, content_type="image/png")

    # -- chatrooms (research 8) ----------------------------------------------------------
    def _names(self, s: WebSession, value: object) -> list[str]:
        if isinstance(value, str):
            raw = [v for v in value.split(",") if v]
        elif isinstance(value, list):
            raw = [str(v.get("UserName")) if isinstance(v, dict) else str(v) for v in value]
        else:
            raw = []
        if len(raw) > 500:
            raise WebError(-1, "too many members")
        return [self._target(s, r) for r in raw]

    async def createchatroom(
        self, request: web.Request, s: WebSession, body: dict[str, Any]
    ) -> dict[str, Any]:
        members = self._names(s, body.get("MemberList"))
        topic = body.get("Topic") if isinstance(body.get("Topic"), str) else ""
        req = pb.CreateChatRoomRequest(topic=str(topic), members=members)
        resp = await self._cgi(s, "createchatroom", req, pb.CreateChatRoomResponse)
        room = resp.chatroom
        nicks = await self._nicks(s, list(room.members))
        obj = convert.contact_obj(room, nicks)
        return {
            "Topic": room.nick_name,
            "PYInitial": "",
            "QuanPin": "",
            "MemberCount": obj["MemberCount"],
            "MemberList": obj["MemberList"],
            "ChatRoomName": obj["UserName"],
            "BlackList": "",
        }

    async def updatechatroom(
        self, request: web.Request, s: WebSession, body: dict[str, Any]
    ) -> dict[str, Any]:
        fun = _q(request, "fun")
        room_web = body.get("ChatRoomName")
        if not isinstance(room_web, str) or not room_web.startswith("@@"):
            raise WebError(-1, "ChatRoomName must be a chatroom")
        room = wp.decode_web_name(room_web)[0]
        if fun == "modtopic":
            topic = body.get("NewTopic")
            req = pb.ModChatRoomRequest(chatroom=room, op=3, topic=str(topic or ""))
        elif fun in ("addmember", "invitemember"):
            field = "AddMemberList" if fun == "addmember" else "InviteMemberList"
            req = pb.ModChatRoomRequest(
                chatroom=room, op=1, members=self._names(s, body.get(field))
            )
        elif fun == "delmember":
            req = pb.ModChatRoomRequest(
                chatroom=room, op=2, members=self._names(s, body.get("DelMemberList"))
            )
        else:
            raise WebError(-1, "fun must be modtopic, addmember, invitemember or delmember")
        await self._cgi(s, "modchatroom", req, pb.ModChatRoomResponse)
        return {}

    async def verifyuser(
        self, request: web.Request, s: WebSession, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Opcode 2 sends a friend request (VerifyContent is its greeting), 3 accepts
        one (the Value of the request's RecommendInfo.UserName)."""
        users = body.get("VerifyUserList")
        if not isinstance(users, list) or not users or len(users) > 20:
            raise WebError(-1, "VerifyUserList must list 1..20 users")
        opcode = body.get("Opcode", 2)
        if opcode not in (2, 3):
            raise WebError(-1, "Opcode must be 2 (send a request) or 3 (accept one)")
        greeting = body.get("VerifyContent", "")
        if not isinstance(greeting, str) or len(greeting) > 256:
            raise WebError(-1, "VerifyContent must be a string of at most 256 characters")
        for u in users:
            value = u.get("Value") if isinstance(u, dict) else None
            name = self._target(s, value)
            req = pb.AddContactRequest(user_name=name, opcode=opcode, verify_content=greeting)
            await self._cgi(s, "verifyuser", req, pb.AddContactResponse)
        return {}

    # -- the page ------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.StreamResponse:
        resp = web.Response(body=_static("index.html"), content_type="text/html", charset="utf-8")
        resp.headers.update(_PAGE_HEADERS)
        return resp

    async def asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        types = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}
        ext = name.rsplit(".", 1)[-1]
        if ext not in types or not name.replace(".", "").replace("-", "").isalnum():
            raise web.HTTPNotFound()
        try:
            data = _static(name)
        except FileNotFoundError:
            raise web.HTTPNotFound() from None
        resp = web.Response(body=data, content_type=types[ext], charset="utf-8")
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp


#: The page's own files only; no frames, no plugins, no inline script (CSRF, DESIGN 8).
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
_MULTIPART = frozenset({"multipart/form-data"})
_ANY_FORM = csrf.FORM_TYPES  # wechat4u logs out with an empty form POST
_KIND_NAMES = {"img": "image", "thumb": "image", "voice": "voice message"}


def _msg_id_param(request: web.Request) -> int:
    """``msgid`` / ``MsgID`` (research 7): a positive signed 64-bit number, else 400."""
    raw = _q(request, "msgid")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        raise web.HTTPBadRequest(text="msgid must be a number below 2**63\n")
    n = int(raw)
    if not 0 < n < 1 << 63:
        raise web.HTTPBadRequest(text="msgid must be a number below 2**63\n")
    return n


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(8)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def _read_all(stream: StreamReader, limit: int) -> bytes:
    """Everything until the end of the body; OverflowError past ``limit`` bytes."""
    buf = bytearray()
    while chunk := await stream.read(64 * 1024):
        buf += chunk
        if len(buf) > limit:
            raise OverflowError(limit)
    return bytes(buf)


def _too_many(text: str, retry_after: float) -> web.Response:
    resp = web.Response(status=429, text=text, content_type="text/javascript")
    resp.headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
    return resp


def _qr_png(text: str) -> bytes:
    import segno

    buf = io.BytesIO()
    segno.make(text, error="m").save(buf, kind="png", scale=6, border=2)
    return buf.getvalue()


async def _read_part(part: BodyPartReader, limit: int) -> bytes:
    """A multipart part's bytes, refusing more than ``limit`` without buffering them."""
    buf = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        buf += chunk
        if len(buf) > limit:
            raise WebError(int(MMRet.ERR_TOO_LARGE), f"form field {part.name} too large")
    return bytes(buf)


def _static(name: str) -> bytes:
    return resources.files("wxnet.server.web").joinpath("static", name).read_bytes()


def _avatar(name: str) -> bytes:
    """A plain coloured square: an avatar for clients that fetch one."""
    from PIL import Image

    digest = hashlib.sha256(name.encode()).digest()
    img = Image.new(
        "RGB", (64, 64), (digest[0] // 2 + 64, digest[1] // 2 + 64, digest[2] // 2 + 64)
    )
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def setup_web(
    app: web.Application,
    backend: Backend,
    config: WebConfig | None = None,
    spool_dir: Path | None = None,
) -> WebApi:
    """Register the web API, the QR login and the web page on ``app``; returns the
    :class:`WebApi`, whose :meth:`WebApi.handle_scanqrcode` serves the ``scanqrcode`` CGI.
    Uploads are spooled under ``spool_dir`` (emptied first; default: a new temporary
    directory)."""
    api = WebApi(backend, config, spool_dir=spool_dir)
    app[WEB_API_KEY] = api
    app.on_startup.append(api.on_startup)
    app.on_shutdown.append(api.on_shutdown)
    j = api.json_endpoint
    r = app.router
    r.add_get("/", api.index)
    r.add_get("/webwx/{name}", api.asset)
    r.add_route("*", "/jslogin", api.jslogin)
    r.add_get("/qrcode/{uuid}", api.qrcode)
    r.add_get(f"{_CGI}/login", api.login_poll)
    r.add_get(f"{_CGI}/webwxnewloginpage", api.newloginpage)
    r.add_route("*", f"{_CGI}/webwxlogout", api.logout)
    r.add_post(f"{_CGI}/webwxinit", j(api.init))
    r.add_post(f"{_CGI}/webwxstatusnotify", j(api.statusnotify))
    r.add_get(f"{_CGI}/webwxgetcontact", api.getcontact)
    r.add_post(f"{_CGI}/webwxbatchgetcontact", j(api.batchgetcontact))
    r.add_get(f"{_CGI}/synccheck", api.synccheck)
    r.add_post(f"{_CGI}/webwxsync", j(api.sync))
    r.add_post(f"{_CGI}/webwxsendmsg", j(api.sendmsg))
    r.add_post(f"{_CGI}/webwxuploadmedia", api.uploadmedia)
    r.add_post(f"{_CGI}/webwxsendmsgimg", j(api.sendmsgimg))
    r.add_post(f"{_CGI}/webwxsendemoticon", j(api.sendmsgimg))
    r.add_post(f"{_CGI}/webwxrevokemsg", j(api.revokemsg))
    r.add_get(f"{_CGI}/webwxgetmsgimg", api.getmsgimg)
    r.add_get(f"{_CGI}/webwxgetvoice", api.getvoice)
    r.add_get(f"{_CGI}/webwxgeticon", api.geticon)
    r.add_get(f"{_CGI}/webwxgetheadimg", api.geticon)
    r.add_post(f"{_CGI}/webwxcreatechatroom", j(api.createchatroom))
    r.add_post(f"{_CGI}/webwxupdatechatroom", j(api.updatechatroom))
    r.add_post(f"{_CGI}/webwxverifyuser", j(api.verifyuser))
    r.add_post(f"{_CGI}/webwxhistory", j(HistoryEndpoint(api)))
    return api
