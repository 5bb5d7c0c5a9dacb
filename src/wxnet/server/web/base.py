"""The state of the web API and the plumbing its handlers share (sessions, CGIs,
bodies, the cross-site check, the JSON endpoint wrapper)."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from google.protobuf.message import Message

from wxnet._compat import wait_for
from wxnet.proto import web as wp
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMError, MMRet, RemoteProtocolError
from wxnet.proto.syncdriver import Page, SyncDriver
from wxnet.proto.synckey import SyncKey
from wxnet.server.ratelimit import SharedRateLimiter
from wxnet.server.web import csrf
from wxnet.server.web.backend import Backend
from wxnet.server.web.common import Handler, R, SessionGone, T, WebError, _base, _json, _read_all
from wxnet.server.web.config import WebConfig
from wxnet.server.web.limits import RateLimiter
from wxnet.server.web.login import (
    QrLogin,
    QrLoginRefused,
    QrLogins,
    QrLoginUnknown,
    WebSession,
    WebSessions,
    WebStore,
    qr_key,
    sid_key,
)
from wxnet.server.web.spool import Upload, WebSpool

log = logging.getLogger(__name__)


#: Bytes of each chunk a web upload is fed to the mobile CGIs in (the server's default
#: ``max_chunk_bytes``; a larger one would be refused).
FEED_CHUNK = 64 * 1024


class WebBase:
    """The web API's state and plumbing; the handlers are mixins over it."""

    def __init__(
        self,
        backend: Backend,
        store: WebStore,
        config: WebConfig | None = None,
        clock: Callable[[], float] = time.time,
        spool_dir: Path | None = None,
    ) -> None:
        self.backend = backend
        cfg = self.config = config or WebConfig()
        self.clock = clock
        self.store = store
        self.logins = QrLogins(store, cfg.qr_ttl, cfg.qr_max_pending, cfg.qr_pending_per_address)
        self.sessions = WebSessions(ttl=cfg.session_ttl, store=store)
        # counted in Redis when the server has a bus (setup_server_web), else here
        self.jslogin_limit = SharedRateLimiter(
            RateLimiter(cfg.jslogin_rate, cfg.jslogin_burst), "jslogin"
        )
        self.qrcode_limit = SharedRateLimiter(
            RateLimiter(cfg.qrcode_rate, cfg.qrcode_burst), "qrcode"
        )
        self.push_limit = SharedRateLimiter(
            RateLimiter(cfg.push_login_rate, cfg.push_login_burst), "push_login"
        )
        self._qr_png: OrderedDict[str, bytes] = OrderedDict()
        if spool_dir is None:
            spool_dir = Path(tempfile.mkdtemp(prefix="wxnet-web-spool-"))
        self.spool = WebSpool(spool_dir, cfg, store)
        #: refusals by the limit that bit (``wxnet_web_limited_total{limit}``)
        self.limited: dict[str, float] = {}
        self._login_waiters: dict[str, asyncio.Event] = {}  # login key -> its polls' event
        #: uuid -> login version the poll last reported (bounded: the oldest go first)
        self._reported: OrderedDict[str, int] = OrderedDict()
        #: tells the other processes that a login changed (the bus, with several)
        self.publish_login: Callable[[str], None] | None = None
        self._polls: dict[str, int] = {}  # wxsid -> pending synccheck polls
        self.pending_polls = 0
        self._avatars: dict[str, bytes] = {}
        self._holding: set[asyncio.Task[Any]] = set()  # long polls, cancelled on shutdown

    async def sweep(self) -> None:
        """Forget expired QR logins, long-dead sessions, and uploads past their lifetime
        or of sessions that ended."""
        now = self.clock()
        await self.logins.expire(now)
        self.sessions.sweep(now)
        await self.spool.sweep(now, self._session_alive)

    async def _session_alive(self, uin: int, key: str) -> bool:
        row = await self.store.web_session(key)
        return row is not None and row.alive and row.uin == uin and row.expires > self.clock()

    def _forget_login(self, uuid: str) -> None:
        self._reported.pop(uuid, None)
        self._qr_png.pop(uuid, None)
        self._wake_login(qr_key(uuid), remote=False)  # every process sees the expiry itself

    def _reported_version(self, uuid: str, version: int) -> None:
        self._reported[uuid] = version
        self._reported.move_to_end(uuid)
        while len(self._reported) > 2 * self.config.qr_max_pending:
            self._reported.popitem(last=False)

    def count(self, limit: str) -> None:
        """One more refusal by ``limit`` (a metric label)."""
        self.limited[limit] = self.limited.get(limit, 0) + 1

    async def _sweeper(self, interval: float = 30.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
                await self.sessions.sweep_store(self.clock())
            except MMError as exc:  # the store is down: sweep next time
                log.warning("web state not swept: %s", exc.message)

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
    async def scan_qr(self, uin: int, uuid: str, confirm: bool) -> tuple[int, str, QrLogin | None]:
        """A logged-in mobile device of ``uin`` scanned / approved web login ``uuid``
        (made by any process: the login is in the store).

        Returns ``(ret, err_msg, login)`` for the ScanQrResponse."""
        try:
            q = await self.logins.scan(uuid, uin, self.clock(), confirm=confirm)
        except QrLoginUnknown:
            return MMRet.ERR_NOT_FOUND, "no such QR code (expired?)", None
        except QrLoginRefused as exc:
            return MMRet.ERR_NOT_ALLOWED, str(exc), None
        self._wake_login(q.key)
        return 0, "", q

    async def handle_scanqrcode(self, uin: int, request: pb.ScanQrRequest) -> pb.ScanQrResponse:
        """The ``scanqrcode`` CGI for an authenticated mobile session of ``uin``; with
        ``push`` and no uuid, the account's newest pending push login. The reply names
        who asked (user agent, address), for the phone to show."""
        uuid = request.uuid
        resp = pb.ScanQrResponse()
        if not uuid and request.push:
            uuid = await self.logins.push_pending(uin, self.clock())
            if not uuid:
                resp.base.ret = MMRet.ERR_NOT_FOUND
                resp.base.err_msg = "no web login of this account waits for approval"
                return resp
        ret, msg, q = await self.scan_qr(uin, uuid, request.confirm)
        resp.base.ret = ret
        resp.base.err_msg = msg
        if q is not None:
            resp.uuid, resp.user_agent, resp.address = q.uuid, q.user_agent, q.address
        return resp

    def _wake_login(self, key: str, *, remote: bool = True) -> None:
        """Wake the polls of login ``key`` here and (``remote``) in every other process."""
        self.wake_login_here(key)
        if remote and self.publish_login is not None:
            self.publish_login(key)

    def wake_login_here(self, key: str) -> None:
        """Login ``key`` changed (here, or in another process: the bus calls this)."""
        ev = self._login_waiters.pop(key, None)
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
            await self.spool.drop_session(s.uin, sid_key(s.wxsid))
            await self.sessions.save(s)
            raise SessionGone("the account's session ended")
        if ret != 0:
            raise WebError(int(ret), resp.base.err_msg or f"{name} failed")  # type: ignore[attr-defined]
        return resp

    async def _feed(
        self,
        s: WebSession,
        up: Upload,
        cgi: str,
        request: Callable[[int, bytes], Message],
        resp_type: type[pb.UploadMsgImgResponse] | type[pb.UploadMediaResponse],
        not_stored: str,
    ) -> int:
        """Send the spooled upload ``up`` through the mobile ``cgi`` (uploadmsgimg,
        uploadappattach, uploadvideo) chunk by chunk, as a phone would, so a web upload
        is stored, deduplicated and delivered as a phone's; returns the MsgId."""
        msg_id = 0
        pieces = up.read(FEED_CHUNK)
        pos = 0
        try:
            while data := await asyncio.to_thread(next, pieces, b""):
                resp = await self._cgi(s, cgi, request(pos, data), resp_type)
                pos += len(data)
                msg_id = int(resp.msg_id)
                if msg_id:
                    break  # stored (or a resend of a stored one: answered from dedup)
        except OSError:  # expired and deleted meanwhile
            raise WebError(int(MMRet.ERR_NOT_FOUND), "the upload is gone; upload again") from None
        finally:
            pieces.close()
        if not msg_id:
            raise WebError(-1, not_stored)
        await self.spool.mark_sent(up)
        return msg_id

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

    @staticmethod
    def _based(s: WebSession, req: T) -> T:
        req.base.session_key = s.session_key  # type: ignore[attr-defined]
        req.base.uin = s.uin  # type: ignore[attr-defined]
        return req

    # -- init, contacts --------------------------------------------------------------
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

    async def _commit(self, s: WebSession, key: bytes) -> None:
        """Commit ``key`` for the session's device (syncdone), unless nothing moved:
        what the client has seen up to ``key`` is then never offered again by a
        webwxinit, and what came after it always is."""
        newest = _newest(s.committed, key)
        if newest == s.committed:
            return
        await self._cgi(s, "syncdone", pb.SyncDoneRequest(key_buf=key), pb.SyncDoneResponse)
        s.committed = newest

    async def _resume_key(self, s: WebSession) -> bytes:
        """The session's committed key: the newer of the store's (another process, or
        before a restart) and this process's own (the store's write may still be queued);
        ``b""`` if it never committed one."""
        try:
            stored = await self.backend.committed_key(s.session_key, s.uin)
        except MMError as exc:
            if exc.code == MMRet.ERR_SESSIONTIMEOUT:
                raise SessionGone("the account's session ended") from None
            raise WebError(int(exc.code), exc.message) from None
        s.committed = _newest(s.committed, stored or b"")
        return s.committed

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


def _newest(a: bytes, b: bytes) -> bytes:
    """Two keys of one device merged by the newest value of each key type (values only
    grow), in binary form; ``a`` itself when ``b`` adds nothing."""
    if not b:
        return a
    if not a:
        return b
    mine = SyncKey.from_bytes(a).as_dict()
    merged = dict(mine)
    for k, v in SyncKey.from_bytes(b).pairs:
        merged[k] = max(v, merged.get(k, 0))
    return a if merged == mine else SyncKey.of(merged).to_bytes()
