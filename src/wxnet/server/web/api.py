"""The Web WeChat API on aiohttp (docs/web.md).

``setup_web(app, backend)`` adds ``/jslogin``, ``/qrcode/<uuid>``, ``/`` (our web page),
``/webwx/*`` (its assets) and ``/cgi-bin/mmwebwx-bin/*`` to the server's app. Each web
session is a device of its account and talks to the sync engine through the same CGIs
as a phone (:mod:`wxnet.server.web.backend`).

Errors never leak a traceback: a request that cannot be understood gets the error form
of its endpoint (``BaseResponse.Ret``, ``window.synccheck={retcode:"1101"...}``, a 4xx
with a short text for media).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from wxnet.server.web.backend import Backend
from wxnet.server.web.common import _CGI, SessionGone, WebError
from wxnet.server.web.config import WebConfig
from wxnet.server.web.handlers.contacts import ContactHandlers
from wxnet.server.web.handlers.fallback import unserved_as_json
from wxnet.server.web.handlers.files import FileHandlers
from wxnet.server.web.handlers.login import LoginHandlers
from wxnet.server.web.handlers.media import MediaHandlers
from wxnet.server.web.handlers.messages import MessageHandlers
from wxnet.server.web.handlers.page import PageHandlers
from wxnet.server.web.handlers.pushlogin import PushLoginHandlers
from wxnet.server.web.handlers.rooms import RoomHandlers
from wxnet.server.web.handlers.sync import SyncHandlers
from wxnet.server.web.handlers.upload import UploadHandlers
from wxnet.server.web.history import HistoryEndpoint
from wxnet.server.web.login import WebStore

__all__ = ["WEB_API_KEY", "SessionGone", "WebApi", "WebConfig", "WebError", "setup_web"]


class WebApi(
    PushLoginHandlers,
    LoginHandlers,
    ContactHandlers,
    SyncHandlers,
    MessageHandlers,
    UploadHandlers,
    FileHandlers,
    MediaHandlers,
    RoomHandlers,
    PageHandlers,
):
    """State and handlers of the web API; one per server."""


WEB_API_KEY: web.AppKey[WebApi] = web.AppKey("wxnet_web_api")


def setup_web(
    app: web.Application,
    backend: Backend,
    store: WebStore,
    config: WebConfig | None = None,
    spool_dir: Path | None = None,
) -> WebApi:
    """Register the web API, the QR login and the web page on ``app``; returns the
    :class:`WebApi`, whose :meth:`WebApi.handle_scanqrcode` serves the ``scanqrcode`` CGI.
    Web sessions, QR logins and uploads' metadata are kept in ``store``; uploads' chunks
    under ``spool_dir`` (default: a new temporary directory), shared by every process
    of that store."""
    api = WebApi(backend, store, config, spool_dir=spool_dir)
    app[WEB_API_KEY] = api
    app.on_startup.append(api.on_startup)
    app.on_shutdown.append(api.on_shutdown)
    app.middlewares.append(unserved_as_json)  # unknown endpoints: JSON BaseResponse
    j = api.json_endpoint
    r = app.router
    r.add_get("/", api.index)
    r.add_get("/webwx/{name}", api.asset)
    r.add_route("*", "/jslogin", api.jslogin)
    r.add_get("/qrcode/{uuid}", api.qrcode)
    r.add_get(f"{_CGI}/login", api.login_poll)
    r.add_get(f"{_CGI}/webwxnewloginpage", api.newloginpage)
    r.add_get(f"{_CGI}/webwxpushloginurl", api.pushloginurl)
    r.add_route("*", f"{_CGI}/webwxlogout", api.logout)
    r.add_post(f"{_CGI}/webwxinit", j(api.init))
    r.add_post(f"{_CGI}/webwxstatusnotify", j(api.statusnotify))
    r.add_get(f"{_CGI}/webwxgetcontact", api.getcontact)
    r.add_post(f"{_CGI}/webwxbatchgetcontact", j(api.batchgetcontact))
    r.add_post(f"{_CGI}/webwxoplog", j(api.oplog))
    r.add_get(f"{_CGI}/synccheck", api.synccheck)
    r.add_post(f"{_CGI}/webwxsync", j(api.sync))
    r.add_post(f"{_CGI}/webwxsendmsg", j(api.sendmsg))
    r.add_post(f"{_CGI}/webwxuploadmedia", api.uploadmedia)
    r.add_post(f"{_CGI}/webwxsendmsgimg", j(api.sendmsgimg))
    r.add_post(f"{_CGI}/webwxsendemoticon", j(api.sendmsgimg))
    r.add_post(f"{_CGI}/webwxsendappmsg", j(api.sendappmsg))
    r.add_post(f"{_CGI}/webwxsendvideomsg", j(api.sendvideomsg))
    r.add_post(f"{_CGI}/webwxrevokemsg", j(api.revokemsg))
    r.add_get(f"{_CGI}/webwxgetmsgimg", api.getmsgimg)
    r.add_get(f"{_CGI}/webwxgetvoice", api.getvoice)
    r.add_get(f"{_CGI}/webwxgetvideo", api.getvideo)
    r.add_get(f"{_CGI}/webwxgetmedia", api.getmedia)
    r.add_get(f"{_CGI}/webwxgeticon", api.geticon)
    r.add_get(f"{_CGI}/webwxgetheadimg", api.geticon)
    r.add_post(f"{_CGI}/webwxcreatechatroom", j(api.createchatroom))
    r.add_post(f"{_CGI}/webwxupdatechatroom", j(api.updatechatroom))
    r.add_post(f"{_CGI}/webwxverifyuser", j(api.verifyuser))
    r.add_post(f"{_CGI}/webwxhistory", j(HistoryEndpoint(api)))
    return api
