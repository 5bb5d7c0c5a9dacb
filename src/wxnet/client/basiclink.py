"""A minimal long-link client: an ``asyncio.Protocol`` over
:class:`~wxnet.proto.longlink.LongLinkConnection`, with no heartbeat, no reconnect and
no profile.

It is the client of the tools that need the wire and nothing else: the lab's probe
(:mod:`wxnet.lab.probe`), the server tests' wire client and the load generators. Apps
use the SDK (:mod:`wxnet.client.sdk`), whose :class:`~wxnet.client.longlink.LongLink`
adds the heartbeat and the connect race on the same connection object.

Replies are matched by seq (a ``seq -> Future`` map); notifies go to ``on_notify``;
other server events (a protocol error, a push) to ``on_event``. When the link ends,
every waiting request fails with :class:`~wxnet.client.errors.LinkClosed`.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections.abc import Callable
from typing import TypeVar, cast

from google.protobuf.message import DecodeError, Message

from wxnet._compat import wait_for
from wxnet.client.errors import LinkClosed, TransportError
from wxnet.proto import commands as C
from wxnet.proto.errors import LocalProtocolError, RemoteProtocolError, check_base
from wxnet.proto.longlink import (
    CLIENT,
    Event,
    LongLinkConnection,
    NoopReply,
    Notify,
    RemoteError,
    Reply,
    SyncPush,
)

__all__ = ["BasicLink"]

M = TypeVar("M", bound=Message)


class BasicLink(asyncio.Protocol):
    """One long link. Open it with :meth:`connect`; :attr:`closed` is set when it ends."""

    def __init__(
        self,
        on_notify: Callable[[int], None] | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.conn = LongLinkConnection(CLIENT)
        self.on_notify = on_notify
        self.on_event = on_event
        #: push with data (cmd 122, the NewSyncResponse body); unset, a push counts as
        #: a notify for every selector
        self.on_push: Callable[[bytes], None] | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.Event()
        self.close_reason = ""
        self._lost = asyncio.Event()
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._noops: list[asyncio.Future[int]] = []

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        timeout: float = 10.0,
        ssl: _ssl.SSLContext | None = None,
        on_notify: Callable[[int], None] | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> BasicLink:
        """Open a TCP (or TLS) connection.

        Raises:
            TransportError: it could not connect within ``timeout``.
        """
        loop = asyncio.get_running_loop()
        try:
            _, proto = await wait_for(
                loop.create_connection(lambda: cls(on_notify, on_event), host, port, ssl=ssl),
                timeout,
            )
        except (OSError, TimeoutError) as exc:
            raise TransportError(f"connect {host}:{port}: {exc or 'timed out'}") from exc
        return proto

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except (RemoteProtocolError, LocalProtocolError) as exc:
            self._end(f"bad bytes from the server: {exc}")
            return
        for ev in events:
            if type(ev) is Reply:
                fut = self._pending.pop(ev.seq, None)
                if fut is not None and not fut.done():
                    fut.set_result(ev.body)
            elif type(ev) is Notify:
                if self.on_notify is not None:
                    self.on_notify(ev.selector)
            elif type(ev) is SyncPush:
                if self.on_push is not None:
                    self.on_push(ev.body)
                elif self.on_notify is not None:
                    self.on_notify(0xFFFFFFFF)
            elif type(ev) is NoopReply:
                if self._noops:
                    waiter = self._noops.pop(0)
                    if not waiter.done():
                        waiter.set_result(ev.seq)
            else:
                if self.on_event is not None:
                    self.on_event(ev)
                if type(ev) is RemoteError:
                    self._end(f"the server reported a protocol error: {ev.message}")
                    return

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost.set()
        self._end(f"connection lost: {exc}" if exc else "the server closed the long link")

    def _end(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        err = LinkClosed(reason)
        waiting: list[asyncio.Future[bytes]] | list[asyncio.Future[int]]
        for waiting in (list(self._pending.values()), self._noops):
            for fut in waiting:
                if not fut.done():
                    fut.set_exception(err)
        self._pending.clear()
        self._noops.clear()
        if self.transport is not None:
            self.transport.close()

    # -- requests ------------------------------------------------------------------------
    def _check_open(self) -> asyncio.Transport:
        if self.closed.is_set() or self.transport is None:
            raise LinkClosed(self.close_reason or "the long link is not open")
        return self.transport

    def send(self, cgi: C.CGI, message: Message | bytes) -> tuple[int, asyncio.Future[bytes]]:
        """Send a CGI request; returns its seq and a future for the reply body (await it
        with :meth:`wait_reply`, or directly when no timeout is wanted).

        Raises:
            LinkClosed: the link is closed.
            LocalProtocolError: the connection refused the send (an identify in flight,
                a body over the packet limit).
        """
        transport = self._check_open()
        seq, data = self.conn.send_request(cgi, message)
        return seq, self._expect(transport, seq, data)

    def request_raw(self, cmd: int, seq: int, body: bytes = b"") -> asyncio.Future[bytes]:
        """Send a request the command table does not know, on a chosen seq (probing)."""
        transport = self._check_open()
        return self._expect(transport, seq, self.conn.send_raw(cmd, seq, body))

    def _expect(self, transport: asyncio.Transport, seq: int, data: bytes) -> asyncio.Future[bytes]:
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[seq] = fut
        transport.write(data)
        return fut

    async def wait_reply(self, seq: int, fut: asyncio.Future[bytes], timeout: float) -> bytes:
        """Await ``fut`` (the reply to ``seq``) for at most ``timeout`` seconds.

        Raises:
            TransportError: no reply in time (a late one is then dropped).
            LinkClosed: the link closed first.
        """
        try:
            return await wait_for(fut, timeout)
        except TimeoutError:
            raise TransportError(f"no reply to seq {seq} within {timeout} s") from None
        finally:
            if fut.cancelled() or not fut.done():
                self._pending.pop(seq, None)
                self.conn.cancel(seq)

    async def call(
        self,
        cgi: C.CGI | str,
        request: Message,
        response: type[M],
        timeout: float = 30.0,
        *,
        check: bool = True,
    ) -> M:
        """Send ``request``, decode the reply as ``response``.

        Raises:
            MMError: ``check`` and the reply's ``base.ret`` is not 0.
            TransportError: no reply in time, or a reply that does not decode.
            LinkClosed: the link closed first.
        """
        if isinstance(cgi, str):
            cgi = C.BY_NAME[cgi]
        seq, fut = self.send(cgi, request)
        body = await self.wait_reply(seq, fut, timeout)
        out = response()
        try:
            out.ParseFromString(body)
        except DecodeError as exc:
            raise TransportError(f"{cgi.name}: undecodable {response.__name__}: {exc}") from exc
        if check:
            check_base(out, cgi.name)
        return out

    async def noop(self, timeout: float = 10.0, seq: int | None = None) -> int:
        """Send a heartbeat (on 0xFFFFFFFF, or the older clients' form on an ordinary
        ``seq``) and await its reply; returns the reply's seq.

        Raises:
            TransportError: no reply in time.
            LinkClosed: the link closed first.
        """
        transport = self._check_open()
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._noops.append(fut)
        transport.write(self.conn.send_noop() if seq is None else self.conn.send_raw(6, seq))
        try:
            return await wait_for(fut, timeout)
        except TimeoutError:
            raise TransportError(f"no noop reply within {timeout} s") from None
        finally:
            if fut in self._noops:
                self._noops.remove(fut)

    def send_raw(self, data: bytes) -> None:
        """Write bytes past the connection object (tests that send garbage)."""
        self._check_open().write(data)

    def close(self, reason: str = "closed by the client") -> None:
        self._end(reason)

    async def wait_closed(self, timeout: float = 5.0) -> None:
        """Close and wait (at most ``timeout``) until the transport is gone; then abort."""
        self.close()
        if self.transport is None:
            return
        try:
            await wait_for(self._lost.wait(), timeout)
        except TimeoutError:
            self.transport.abort()
