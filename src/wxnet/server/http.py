"""The HTTP side: short link (S12, S30), newgetdns (S10), /healthz, /metrics.

The web API (issue 4) registers its own routes on the same application.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from aiohttp import web

from wxnet import __version__
from wxnet.proto import commands as C
from wxnet.proto.newgetdns import BuiltinIP, DnsDomain, NewDns, build_newgetdns
from wxnet.server.dispatch import BadRequest, Context
from wxnet.server.httpguard import guard_middleware
from wxnet.server.limits import client_address
from wxnet.server.web.engine_backend import setup_server_web

if TYPE_CHECKING:
    from wxnet.server.app import Server

__all__ = ["SERVER_KEY", "make_app"]

SERVER_KEY: web.AppKey[Server] = web.AppKey("wxnet_server")


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", content_type="text/plain")


async def short_link(request: web.Request) -> web.StreamResponse:
    server = request.app[SERVER_KEY]
    name = request.match_info["name"]
    cgi = C.BY_NAME.get(name)
    if cgi is None or cgi.name == "identify":
        return _text(404, f"unknown CGI {name!r}")
    body = await request.read()
    peer = client_address(
        request.remote or "", request.headers.getall("X-Forwarded-For", []), server.trusted_proxies
    )
    try:
        out = await server.dispatcher.handle(cgi, body, Context(peer))
    except BadRequest as exc:
        return _text(400, str(exc))
    return web.Response(body=out, content_type="application/octet-stream")


async def newgetdns(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    cfg = server.config.dns
    local = request.transport.get_extra_info("sockname") if request.transport else None
    here = str(local[0]) if local else "127.0.0.1"

    def addrs(configured: tuple[str, ...]) -> tuple[str, ...]:
        if configured:
            return configured
        host = server.config.host
        return (here if host in ("0.0.0.0", "::", "") else host,)

    long_ports = cfg.long_ports or (server.long_port, *server.extra_long_ports)
    short_ports = cfg.short_ports or (server.http_port,)
    domains = (
        DnsDomain(cfg.long_name, cfg.ttl, long_ports, addrs(cfg.long_addresses)),
        DnsDomain(cfg.short_name, cfg.ttl, short_ports, addrs(cfg.short_addresses)),
    )
    builtin = tuple(
        BuiltinIP(name, ports, ip)
        for name, ports in ((cfg.long_name, long_ports), (cfg.short_name, short_ports))
        for ip in cfg.builtin_addresses
    )
    doc = NewDns(0, domains, builtin, request.remote or "", int(time.time()))
    return web.Response(body=build_newgetdns(doc), content_type="text/xml")


async def healthz(request: web.Request) -> web.Response:
    """``{"status": "ok", "version": ..., "schema": ..., "pid": ...}``: the server
    answers, which wxnet it is, the schema version of its store (after the start's
    migrations) and which process answered (one of ``--workers N``)."""
    server = request.app[SERVER_KEY]
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "schema": server.engine.store.schema_version(),
            "pid": os.getpid(),
        }
    )


async def metrics(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    return web.Response(text=server.metrics.render(), content_type="text/plain", charset="utf-8")


def make_app(server: Server) -> web.Application:
    app = web.Application(
        client_max_size=server.config.max_request_bytes,
        middlewares=[guard_middleware(server.http_guards)],
    )
    app[SERVER_KEY] = server
    app.router.add_post("/cgi-bin/micromsg-bin/{name}", short_link)
    app.router.add_get("/cgi-bin/micromsg-bin/newgetdns", newgetdns)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    setup_server_web(app, server)  # the Web WeChat API and page (wxnet.server.web)
    return app
