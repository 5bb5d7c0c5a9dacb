"""QR login, the login poll, the login page redirect and logout (docs/web.md, "How it works")."""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
from typing import Any

from aiohttp import web

from wxnet._compat import wait_for
from wxnet.proto import web as wp
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMError
from wxnet.server.web import csrf
from wxnet.server.web.base import WebBase
from wxnet.server.web.common import _CGI, WebError, _js, _q
from wxnet.server.web.limits import address_key
from wxnet.server.web.login import LoginState, QrLogin, new_token, sid_key

log = logging.getLogger(__name__)


class LoginHandlers(WebBase):
    # -- login -------------------------------------------------------------------------
    async def jslogin(self, request: web.Request) -> web.StreamResponse:
        """A new QR login: rate-limited per address; an address holds at most
        ``qr_pending_per_address``, and at the global cap the heaviest holder's oldest
        login makes room, so a flood cannot keep a browser from getting a code (the
        logins and their caps are in the store: every process counts the same)."""
        now = self.clock()
        addr = address_key(request.remote or "")
        wait = await self.jslogin_limit.take(addr, now)
        if wait:
            self.count("jslogin_rate")
            return _too_many('window.QRLogin.code = 429; window.QRLogin.uuid = "";', wait)
        try:
            q = await self._new_login(request, addr, now)
        except MMError as exc:
            log.warning("no QR login: %s", exc.message)
            q = None
        if q is None:
            return _js('window.QRLogin.code = 500; window.QRLogin.uuid = "";')
        return _js(wp.encode_qrlogin(200, q.uuid))

    async def _new_login(
        self, request: web.Request, addr: str, now: float, push_uin: int = 0
    ) -> QrLogin | None:
        """A new pending login held for ``addr`` (fairly, see :meth:`jslogin`), naming
        who asked; None when only scanned logins are left, all in use."""
        q, evicted = await self.logins.create(
            now, addr, user_agent=request.headers.get("User-Agent", "")[:256],
            address=request.remote or "", push_uin=push_uin,
        )  # fmt: skip
        for key in evicted:
            self.count("qr_evicted")
            self._wake_login(key)
        if q is None:
            self.count("qr_pending")
        return q

    async def qrcode(self, request: web.Request) -> web.StreamResponse:
        """The QR image of a pending login: rendered once per uuid (cached), and
        rate-limited per address (rendering costs milliseconds of CPU)."""
        uuid = request.match_info["uuid"]
        png = self._qr_png.get(uuid)
        if png is not None:
            self._qr_png.move_to_end(uuid)
            return web.Response(body=png, content_type="image/png")
        try:
            known = await self.logins.get(uuid, self.clock())
        except MMError as exc:
            raise web.HTTPServiceUnavailable(text=exc.message + "\n") from None
        if known is None:
            raise web.HTTPNotFound(text="no such QR code\n")
        addr = address_key(request.remote or "")
        wait = await self.qrcode_limit.take(addr, self.clock())
        if wait:
            self.count("qrcode_rate")
            return _too_many("too many QR images\n", wait)
        png = _qr_png(self.qr_text(uuid))
        self._qr_png[uuid] = png
        while len(self._qr_png) > self.config.qrcode_cache:
            self._qr_png.popitem(last=False)
        return web.Response(body=png, content_type="image/png")

    @staticmethod
    def qr_text(uuid: str) -> str:
        """What the QR code says: the real web login URL form, which ``wxnet scan``
        accepts as well as the bare uuid."""
        return f"https://login.weixin.qq.com/l/{uuid}"

    async def login_poll(self, request: web.Request) -> web.StreamResponse:
        """The login long poll: answers at once when the login changed since this
        process last reported it, else holds until it changes (a scan on any process
        wakes it: here directly, from another one over the bus), at most
        ``login_hold``. With a bus, a held poll also reads the login again every
        ``login_recheck`` seconds, in case the bus lost the wake-up."""
        uuid = _q(request, "uuid")
        try:
            return await self._login_poll(request, uuid)
        except MMError as exc:  # the store cannot be reached: the client polls again
            log.warning("login poll: %s", exc.message)
            return _js(wp.encode_login_poll(wp.LoginPoll(408)))

    async def _login_poll(self, request: web.Request, uuid: str) -> web.StreamResponse:
        q = await self.logins.get(uuid, self.clock())
        if q is None:
            self._reported.pop(uuid, None)
            return _js(wp.encode_login_poll(wp.LoginPoll(400)))
        held = self._reported.get(uuid, 0) == q.version and q.state is not LoginState.CONFIRMED
        if held and q.poll_code(self.clock()) != 400:
            self._hold()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + max(0.0, min(self.config.login_hold, q.expires - self.clock()))
            step = self.config.login_recheck if self.publish_login is not None else None
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    if q.poll_code(self.clock()) == 400:
                        break  # it expired while held
                    return _js(wp.encode_login_poll(wp.LoginPoll(408)))
                ev = self._login_waiters.setdefault(q.key, asyncio.Event())
                try:
                    await wait_for(ev.wait(), left if step is None else min(left, step))
                except TimeoutError:
                    if step is None:
                        continue  # no other process can change it: the deadline is here
                now_q = await self.logins.get(uuid, self.clock())
                if now_q is None:
                    self._reported.pop(uuid, None)
                    return _js(wp.encode_login_poll(wp.LoginPoll(400)))
                q = now_q
                if self._reported.get(uuid, 0) != q.version or q.poll_code(self.clock()) == 400:
                    break
        self._reported_version(uuid, q.version)
        return _js(wp.encode_login_poll(self._poll_answer(request, q)))

    def _poll_answer(self, request: web.Request, q: QrLogin) -> wp.LoginPoll:
        code = q.poll_code(self.clock())
        if code == 400:
            self._forget_login(q.uuid)
        if code != 200:
            return wp.LoginPoll(code)
        uri = (
            f"http://{request.host}{_CGI}/webwxnewloginpage?ticket={q.ticket}&uuid={q.uuid}"
            f"&lang=zh_CN&scan={int(self.clock())}"
        )
        return wp.LoginPoll(200, redirect_uri=uri)

    async def newloginpage(self, request: web.Request) -> web.StreamResponse:
        ticket, uuid = _q(request, "ticket"), _q(request, "uuid")
        try:
            uin = await self.logins.redeem(ticket, uuid, self.clock())
        except MMError as exc:
            log.warning("login page: %s", exc.message)
            uin = None
        dev = await self.backend.open_device(uin, "web") if uin is not None else None
        if dev is None:
            fail = (
                "<error><ret>1203</ret><message>login ticket is invalid or used</message></error>"
            )
            return web.Response(text=fail, content_type="text/plain")
        self._reported.pop(uuid, None)
        s = self.sessions.add(dev.uin, dev.user_name, dev.nick_name, dev.session_key, self.clock())
        await self.sessions.save(s)  # durable before the client hears of it
        await self.sessions.remember_browser(s)  # for a push login from it later
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
            ("webwxuvid", _uvid(request)),  # itchat keeps it for its push login
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
        await self.spool.drop_session(s.uin, sid_key(s.wxsid))
        await self.sessions.save(s)
        try:
            await self.backend.call("logout", self._based(s, pb.LogoutRequest()))
        except Exception:  # the web session is over whatever the mobile side says
            log.exception("logout of web session uin=%s", s.uin)
        resp = web.Response(text="")
        for name in ("wxsid", "wxuin", "webwx_data_ticket"):
            resp.del_cookie(name, path="/")
        return resp


_ANY_FORM = csrf.FORM_TYPES  # wechat4u logs out with an empty form POST


def _too_many(text: str, retry_after: float) -> web.Response:
    resp = web.Response(status=429, text=text, content_type="text/javascript")
    resp.headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
    return resp


def _qr_png(text: str) -> bytes:
    import segno

    buf = io.BytesIO()
    segno.make(text, error="m").save(buf, kind="png", scale=6, border=2)
    return buf.getvalue()


def _uvid(request: web.Request) -> str:
    """The browser's id cookie: the one it has, else a new one."""
    have = request.cookies.get("webwxuvid", "")
    return have if wp.is_token(have) else new_token()
