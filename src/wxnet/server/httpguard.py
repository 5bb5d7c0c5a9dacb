"""Deadlines and connection caps in front of aiohttp's HTTP protocol.

aiohttp has no deadline on reading a request's headers or body, and keeps an idle
keep-alive socket for an hour, so a client that sends a header line every few seconds
(slowloris) or never finishes its body holds a descriptor for ever. :class:`GuardedSite`
listens like ``web.TCPSite`` but wraps every connection in a :class:`_Guard`:

* the connection is admitted by the shared :class:`ConnectionLimiter` (else a 503 and
  close, counted in ``wxnet_connections_refused_total``);
* from its first byte (and from the first byte after each response) a request must have
  its headers within ``header_timeout``;
* a request with a body must have received all of it within ``body_timeout`` of its
  headers; a handler may wait longer than that (a long poll) once the body is in.

A deadline that passes closes the connection and counts in
``wxnet_http_timeouts_total{phase}``. The middleware returned by :func:`guard_middleware`
tells the guard when a request's headers are complete and when it is answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.web_runner import BaseRunner, BaseSite

from wxnet.server.limits import ConnectionLimiter

__all__ = ["GuardedSite", "HttpGuards", "guard_middleware"]

log = logging.getLogger("wxnet.http")

_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 29\r\nConnection: close\r\n\r\ntoo many connections; retry\r\n"
)


class HttpGuards:
    """The shared state of every guarded HTTP connection of one server."""

    def __init__(
        self,
        limiter: ConnectionLimiter,
        header_timeout: float,
        body_timeout: float,
        on_timeout: Callable[[str], None],
        on_refused: Callable[[str], None],
    ) -> None:
        self.limiter = limiter
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.on_timeout = on_timeout
        self.on_refused = on_refused
        self.by_handler: dict[object, _Guard] = {}


class _Guard(asyncio.Protocol):
    """Forwards every protocol event to aiohttp's request handler, with deadlines."""

    def __init__(self, guards: HttpGuards, inner: asyncio.Protocol) -> None:
        self.g = guards
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.addr = ""
        self.admitted = False
        self.busy = 0  # requests whose headers are in and that are not answered yet
        self.timer: asyncio.TimerHandle | None = None
        self.request: web.BaseRequest | None = None

    # -- deadlines ---------------------------------------------------------------------
    def _arm(self, delay: float, phase: str) -> None:
        self._disarm()
        self.timer = asyncio.get_running_loop().call_later(delay, self._expired, phase)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self, phase: str) -> None:
        self.timer = None
        if phase == "body" and self.request is not None and self.request.content.is_eof():
            return  # the body is in; the handler may take as long as it needs
        self.g.on_timeout(phase)
        log.info("closing HTTP connection from %s: %s not received in time", self.addr, phase)
        if self.transport is not None:
            self.transport.abort()

    def request_started(self, request: web.BaseRequest) -> None:
        self.busy += 1
        if request.can_read_body and not request.content.is_eof():
            self.request = request
            self._arm(self.g.body_timeout, "body")
        else:
            self._disarm()

    def request_done(self) -> None:
        self.busy = max(0, self.busy - 1)
        self.request = None
        if self.busy == 0:
            self._disarm()  # idle keep-alive: aiohttp's keepalive_timeout applies

    # -- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.addr = str(peer[0]) if peer else ""
        refused = self.g.limiter.admit(self.addr)
        if refused is not None:
            self.g.on_refused(refused)
            self.transport.write(_REFUSED)
            self.transport.close()
            return
        self.admitted = True
        self.g.by_handler[self.inner] = self
        self._arm(self.g.header_timeout, "header")
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return
        if self.busy == 0 and self.timer is None:
            self._arm(self.g.header_timeout, "header")  # a new request begins
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if not self.admitted:
            return None
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if not self.admitted:
            return
        self.admitted = False
        self.g.limiter.release(self.addr)
        self.g.by_handler.pop(self.inner, None)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()


def guard_middleware(guards: HttpGuards) -> Any:
    """The aiohttp middleware that reports request starts and ends to the guards."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        guard = guards.by_handler.get(request.protocol)
        if guard is None:  # not behind a GuardedSite (a test's own runner)
            return await handler(request)
        guard.request_started(request)
        try:
            return await handler(request)
        finally:
            guard.request_done()

    return middleware


class GuardedSite(BaseSite):
    """``web.TCPSite`` with every connection behind a :class:`_Guard`."""

    __slots__ = ("_bound_port", "_guards", "_host", "_port", "_reuse_port")

    def __init__(
        self,
        runner: BaseRunner,
        host: str,
        port: int,
        guards: HttpGuards,
        backlog: int,
        *,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._guards = host, port, guards
        self._reuse_port = reuse_port
        self._bound_port = port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._bound_port}"

    @property
    def port(self) -> int:
        return self._bound_port

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        guards = self._guards
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Guard(guards, server()),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
            reuse_port=self._reuse_port or None,
        )
        self._bound_port = int(self._server.sockets[0].getsockname()[1])
