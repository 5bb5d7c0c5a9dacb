"""The web API on the messaging server's own dispatcher and engine (in process).

Every web request becomes one or more mobile CGIs run through the same
:class:`~wxnet.server.dispatch.Dispatcher` the long and short links use, so sessions,
dedup, fan-out and notifies behave exactly as for a phone.
"""

from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from google.protobuf.message import Message

from wxnet.proto import commands as C
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMError
from wxnet.proto.synckey import KEY_MSG
from wxnet.server.web.api import WebApi, WebConfig, setup_web
from wxnet.server.web.backend import DeviceSession

if TYPE_CHECKING:
    from wxnet.server.dispatch import Dispatcher
    from wxnet.sync.engine import Engine, Session

__all__ = ["DispatcherBackend", "setup_server_web"]


class DispatcherBackend:
    """:class:`~wxnet.server.web.backend.Backend` over a dispatcher and its engine."""

    def __init__(self, dispatcher: Dispatcher, engine: Engine) -> None:
        self.dispatcher = dispatcher
        self.engine = engine

    async def call(self, name: str, request: Message) -> Message:
        from wxnet.server.dispatch import Context

        cgi = C.BY_NAME[name]
        out = await self.dispatcher.handle(cgi, request.SerializeToString(), Context("web"))
        resp = cgi.response()
        resp.ParseFromString(out)
        return resp

    async def open_device(self, uin: int, device_name: str) -> DeviceSession | None:
        try:
            user_name, nick = await self.engine.account(uin)
        except MMError:
            return None
        sess = await self.engine.create_session(
            uin, f"web-{secrets.token_hex(8)}", device_name, kind="web"
        )
        return DeviceSession(sess.sid, uin, user_name, nick)

    async def committed_key(self, session_key: str, uin: int) -> bytes | None:
        sess = await self.engine.session(session_key, uin)
        key = await self.engine.committed_key(uin, sess.device_id)
        return None if key is None else key.to_bytes()

    async def prompt_login(self, uin: int, prompt: pb.WebLoginPrompt) -> None:
        await self.engine.prompt_web_login(uin, prompt)

    async def media_file(self, session_key: str, uin: int, msg_id: int, kind: str) -> Path:
        sess = await self.engine.session(session_key, uin)
        return await self.dispatcher.uploads.media_file(sess, msg_id, kind)

    async def message_log(
        self, session_key: str, uin: int, before: int, limit: int
    ) -> list[tuple[int, bytes]]:
        sess = await self.engine.session(session_key, uin)  # the account's own log only
        store = self.engine.store
        head = await store.head(sess.uin, KEY_MSG)
        upto = head if before <= 0 else min(before - 1, head)
        if upto <= 0:
            return []
        items = await store.recent(sess.uin, KEY_MSG, upto, limit)
        return [(seq, body) for _, seq, body in reversed(items)]


def setup_server_web(app: web.Application, server: Any, config: WebConfig | None = None) -> WebApi:
    """Add the web API to ``server``'s app and serve ``scanqrcode`` from it.

    ``server`` is a :class:`wxnet.server.app.Server` (its ``dispatcher`` and ``engine``)."""
    dispatcher: Dispatcher = server.dispatcher
    if config is None:
        hold = float(getattr(server.config, "synccheck_max_wait", 25.0))
        base: WebConfig = getattr(server.config, "web", WebConfig())
        config = dataclasses.replace(
            base, synccheck_hold=hold, login_hold=min(hold, base.login_hold)
        )
    spool = Path(server.config.data) / "web-spool"  # shared, as the media files are
    # web sessions, QR logins and uploads' metadata in the store: any process serves them
    store = server.engine.store
    api = setup_web(app, DispatcherBackend(dispatcher, server.engine), store, config, spool)
    bus = getattr(server, "bus", None)
    counters = getattr(server, "shared_counters", None)
    if bus is not None:  # a login changed here wakes its polls in every process
        api.publish_login = bus.publish_login
        bus.login_changed = api.wake_login_here
    if counters is not None:  # the web's rate limits count in Redis, for every process
        for lim in (api.jslogin_limit, api.qrcode_limit, api.push_limit):
            lim.counters = counters

    async def scanqrcode(req: Any, sess: Session | None, _ctx: Any) -> pb.ScanQrResponse:
        assert sess is not None  # scanqrcode needs a session (commands table)
        return await api.handle_scanqrcode(sess.uin, req)

    dispatcher.register("scanqrcode", scanqrcode)
    api.spool.min_free = int(getattr(server.config.sync, "min_free_disk_bytes", 0))
    metrics = getattr(server, "metrics", None)
    if metrics is not None:
        metrics.counter_fn(
            "wxnet_web_limited_total",
            "Web requests refused (or QR logins evicted) by a limit, by limit.",
            "limit",
            lambda: api.limited,
        )
        metrics.gauge(
            "wxnet_qr_pending",
            "QR logins in the store (every process's; as of this process's last create or sweep).",
            lambda: len(api.logins),
        )
        metrics.gauge(
            "wxnet_web_spool_bytes",
            "Web upload bytes on disk (every process's; exact at each sweep).",
            lambda: api.spool.total_bytes,
        )
        metrics.gauge(
            "wxnet_web_uploads", "Web uploads held (every process's).", lambda: len(api.spool)
        )
    return api
