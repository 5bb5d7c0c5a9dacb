"""The gateway's small web server: ``/`` dashboard, ``/metrics``, ``/api/summary``.

It listens on the admin address (``http``; a port alone means loopback) and, with
``http-token``, answers only requests carrying the token (``Authorization: Bearer
TOKEN`` or ``?token=TOKEN``); the ruleset keeps policed devices off its port.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

from aiohttp import web
from aiohttp.typedefs import Middleware

from wxnet.gate.dashboard import render_dashboard, summary

if TYPE_CHECKING:
    from wxnet.gate.service import GateService

__all__ = ["make_app", "start_web"]


def make_app(service: GateService) -> web.Application:
    async def index(_req: web.Request) -> web.Response:
        page = render_dashboard(service.sink.recent, service.clock(), service.policy.settings.table)
        return web.Response(text=page, content_type="text/html")

    service.metrics.gauge_fn("wxnet_gate_inspector_active", lambda: service.inspector.active)
    service.metrics.counter_fn(
        "wxnet_gate_newgetdns_addresses_total", lambda: service.inspector.newgetdns_learned
    )

    async def metrics(_req: web.Request) -> web.Response:
        return web.Response(
            text=service.metrics.render(), content_type="text/plain", charset="utf-8"
        )

    async def api_summary(_req: web.Request) -> web.Response:
        return web.Response(
            text=json.dumps(summary(service.sink.recent, service.clock())),
            content_type="application/json",
        )

    async def favicon(_req: web.Request) -> web.Response:
        return web.Response(status=204)  # no icon; keeps browsers from logging a 404

    token = service.policy.settings.http_token

    @web.middleware
    async def need_token(
        req: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if token is not None:
            auth = req.headers.get("Authorization", "")
            given = auth[7:] if auth.startswith("Bearer ") else req.query.get("token", "")
            if not hmac.compare_digest(given.encode(), token.encode()):
                service.metrics.inc("wxnet_gate_http_unauthorized_total")
                return web.Response(status=401, text="token required (http-token)\n")
        return await handler(req)

    app = web.Application(middlewares=[cast(Middleware, need_token)])
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/", index)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/summary", api_summary)
    return app


async def start_web(service: GateService, listen: str) -> tuple[web.AppRunner, int]:
    """Serve on ``HOST:PORT`` (port 0: any); returns the runner and the bound port."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    runner = web.AppRunner(make_app(service), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, int(port))
    await site.start()
    bound = int(port)
    sockets = getattr(site._server, "sockets", None)  # the bound port when 0 was asked for
    if sockets:
        bound = int(sockets[0].getsockname()[1])
    return runner, bound
