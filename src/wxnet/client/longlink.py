"""The long link (8080): a thin asyncio adapter over the sans-IO
:class:`~wxnet.proto.longlink.LongLinkConnection` (client role).

One :class:`LongLink` is one TCP connection: the connection allocates seqs (identify on
0xFFFFFFFE, noop on 0xFFFFFFFF, docs/protocol.md) and turns bytes into events; this
adapter keeps a ``seq -> Future`` map, hands the server's notify (cmd 24) to a callback,
and a
:class:`~wxnet.client.heartbeat.HeartbeatTimer` decides when to send a noop and when the
link is dead (8 s without the noop reply). :func:`race_connect` opens it with the
staggered race of :class:`~wxnet.client.addresses.ConnectRace`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

from google.protobuf.message import DecodeError, Message

from wxnet._compat import wait_for
from wxnet.client.addresses import Address, AddressBook, ConnectRace, RaceStart
from wxnet.client.errors import LinkClosed, TransportError
from wxnet.client.heartbeat import HeartbeatAction, HeartbeatTimer, SmartHeartbeat
from wxnet.proto import commands as C
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import LocalProtocolError, MMError, RemoteProtocolError
from wxnet.proto.longlink import (
    CLIENT,
    LongLinkConnection,
    NoopReply,
    Notify,
    RemoteError,
    Reply,
    SyncPush,
)

__all__ = ["LongLink", "race_connect"]

Clock = Callable[[], float]
#: Seconds a closing link may take to flush before it is aborted.
CLOSE_GRACE = 1.0


_Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class _Attempts:
    """The connect tasks of one race: the asyncio side of a :class:`ConnectRace`."""

    def __init__(self, race: ConnectRace, book: AddressBook) -> None:
        self.race = race
        self.book = book
        self.tasks: dict[asyncio.Task[_Streams], Address] = {}
        self.errors: list[str] = []

    def launch(self, starts: Sequence[RaceStart]) -> None:
        for s in starts:
            addr = s.address
            self.tasks[asyncio.ensure_future(asyncio.open_connection(addr.host, addr.port))] = addr

    def finished(
        self, done: set[asyncio.Task[_Streams]], now: float
    ) -> tuple[Address, asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Settle the attempts that ended; the winner, if one of them is."""
        for t in done:
            addr = self.tasks.pop(t)
            exc = t.exception()
            if exc is None:
                if self.race.on_connected(addr):
                    # Success is the caller's to record, once the link proves usable.
                    reader, writer = t.result()
                    return addr, reader, writer
                t.result()[1].close()
            else:
                self.book.on_failure(addr, now)
                self.errors.append(f"{addr}: {exc}")
                self.launch(self.race.on_failed(addr, now))
        return None

    def handle_timer(self, now: float) -> None:
        """Give up the attempts past their deadline; start the next ones that are due."""
        expired, starts = self.race.handle_timer(now)
        for addr in expired:
            self.book.on_failure(addr, now)
            self.errors.append(f"{addr}: connect timeout")
            for t, a in list(self.tasks.items()):
                if a == addr:
                    t.cancel()
                    del self.tasks[t]
        self.launch(starts)

    async def cancel(self) -> None:
        """Cancel the attempts still running and close any that connected meanwhile."""
        for t in self.tasks:
            t.cancel()
        if self.tasks:
            # asyncio.wait raises neither the losers' errors nor their cancellation, yet
            # a cancel of the caller still gets through (suppress(BaseException) would
            # swallow it).
            done, _ = await asyncio.wait(self.tasks)
            for t in done:
                if not t.cancelled() and t.exception() is None:
                    t.result()[1].close()  # connected just as it was cancelled


async def race_connect(
    candidates: Sequence[Address],
    book: AddressBook,
    clock: Clock,
    stagger: float = 2.5,
    max_parallel: int = 3,
    attempt_timeout: float = 10.0,
) -> tuple[Address, asyncio.StreamReader, asyncio.StreamWriter]:
    """Race TCP connects over ``candidates`` (best first); the first to connect wins and
    the others are cancelled. Failed attempts are recorded in ``book``; the winner is
    not (the caller records success once the link is usable, e.g. identified).

    Raises:
        TransportError: every candidate failed.
    """
    race = ConnectRace(
        list(candidates),
        stagger=stagger,
        max_parallel=max_parallel,
        attempt_timeout=attempt_timeout,
    )
    if not candidates:
        raise TransportError("no long-link address to connect to")
    attempts = _Attempts(race, book)
    attempts.launch(race.start(clock()))
    try:
        while not race.done:
            deadline = race.get_timer()
            timeout = None if deadline is None else max(0.0, deadline - clock())
            if not attempts.tasks and timeout is None:
                break
            done: set[asyncio.Task[_Streams]] = set()
            if attempts.tasks:
                done, _ = await asyncio.wait(
                    attempts.tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            elif timeout:
                await asyncio.sleep(timeout)
            now = clock()
            won = attempts.finished(done, now)
            if won is not None:
                return won
            attempts.handle_timer(now)
    finally:
        await attempts.cancel()
    raise TransportError("cannot connect the long link: " + "; ".join(attempts.errors[-5:]))


class LongLink:
    """One connected long link. Call :meth:`start` once; :attr:`closed` is set when it ends."""

    def __init__(
        self,
        address: Address,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        heartbeat: SmartHeartbeat,
        network_label: str,
        on_notify: Callable[[int], None],
        request_timeout: float = 15.0,
        on_push: Callable[[bytes], None] | None = None,
        noop_timeout: float = 8.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.address = address
        self._reader = reader
        self._writer = writer
        self._conn = LongLinkConnection(CLIENT)
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._on_notify = on_notify
        self._on_push = on_push
        self.request_timeout = request_timeout
        self.clock = clock
        self.heartbeat = HeartbeatTimer(heartbeat, network_label, clock(), noop_timeout)
        self.last_heartbeat: float | None = None  # wall time of the last noop reply
        self.closed = asyncio.Event()
        self.close_reason = ""
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()

    def start(self) -> None:
        self._tasks = [
            asyncio.ensure_future(self._read_loop()),
            asyncio.ensure_future(self._heartbeat_loop()),
        ]

    @property
    def is_open(self) -> bool:
        return not self.closed.is_set()

    def _write(self, data: bytes) -> None:
        if self.closed.is_set():
            raise LinkClosed(f"long link to {self.address} is closed: {self.close_reason}")
        self._writer.write(data)
        self.heartbeat.on_write(self.clock())
        self._wake.set()

    async def request(self, cgi: C.CGI, req: Message, timeout: float | None = None) -> bytes:
        """Send ``req`` under the CGI's cmd and return the reply body.

        Raises:
            LinkClosed: the link closed before the reply.
            TransportError: no reply within the timeout (the link is then closed, as in
                Mars: a task timeout tears the link down).
        """
        if self.closed.is_set():
            raise LinkClosed(f"long link to {self.address} is closed: {self.close_reason}")
        try:
            seq, data = self._conn.send_request(cgi, req)
        except LocalProtocolError as exc:
            raise TransportError(f"{cgi.name}: {exc}") from None
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[seq] = fut
        try:
            self._write(data)
            body = await wait_for(fut, timeout or self.request_timeout)
        except TimeoutError:
            self.close(f"{cgi.name} got no reply in time")
            raise TransportError(f"{cgi.name}: no reply on the long link") from None
        finally:
            self._pending.pop(seq, None)
            if fut.cancelled() or not fut.done():  # a late reply is dropped, not an error
                self._conn.cancel(seq)
        return body

    async def identify(self, base: pb.BaseRequest, key_buf: bytes, push_data: bool = False) -> int:
        """Bind the link to the session; ``push_data``: ask for push with data (cmd 122)
        instead of notifies for small items. Returns the server's selector (non-zero:
        behind, sync now)."""
        req = pb.IdentifyRequest(base=base, key_buf=key_buf, push_data=int(push_data))
        body = await self.request(C.BY_NAME["identify"], req)
        resp = pb.IdentifyResponse()
        try:
            resp.ParseFromString(body)
        except DecodeError:
            raise TransportError("identify: undecodable reply") from None
        err = MMError.from_base(resp.base, "identify")
        if err is not None:
            raise err
        return int(resp.selector)

    def close(self, reason: str = "closed") -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        with contextlib.suppress(Exception):
            self._writer.close()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(LinkClosed(f"long link to {self.address} closed: {reason}"))
        self._pending.clear()
        current = asyncio.current_task()
        for t in self._tasks:
            if t is not current:
                t.cancel()

    async def wait_closed(self) -> None:
        await self.closed.wait()
        current = asyncio.current_task()
        others = [t for t in self._tasks if t is not current]
        for t in others:
            t.cancel()  # also a task started after close() (a close racing start())
        if others:
            # Bounded, and a cancel of the caller is not swallowed (asyncio.wait).
            await asyncio.wait(others, timeout=CLOSE_GRACE)
        # A graceful close waits for queued bytes to drain; a peer that stopped reading
        # would hold it forever, so give it a moment and then abort.
        try:
            await wait_for(self._writer.wait_closed(), CLOSE_GRACE)
        except (TimeoutError, OSError, ConnectionError):
            self._writer.transport.abort()

    async def _read_loop(self) -> None:
        try:
            while not self.closed.is_set():
                data = await self._reader.read(65536)
                if not data:
                    self.close("server closed the connection")
                    return
                self._dispatch(data)
        except RemoteProtocolError as exc:
            self.close(f"bad bytes from the server: {exc}")
        except (OSError, ConnectionError) as exc:
            self.close(f"connection error: {exc}")

    def _dispatch(self, data: bytes) -> None:
        for ev in self._conn.receive_data(data):
            if type(ev) is Reply:
                fut = self._pending.get(ev.seq)
                if fut is not None and not fut.done():
                    fut.set_result(ev.body)
            elif type(ev) is Notify:
                self._on_notify(ev.selector)
            elif type(ev) is SyncPush:
                if self._on_push is not None:
                    self._on_push(ev.body)
                else:
                    self._on_notify(0xFFFFFFFF)
            elif type(ev) is NoopReply:
                self.heartbeat.on_noop_reply(self.clock())
                self.last_heartbeat = time.time()
                self._wake.set()
            elif type(ev) is RemoteError:
                self.close(f"server reported a protocol error: {ev.message}")
                return

    async def _heartbeat_loop(self) -> None:
        while not self.closed.is_set():
            deadline = self.heartbeat.get_timer()
            if deadline is None:
                return
            self._wake.clear()
            delay = deadline - self.clock()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await wait_for(self._wake.wait(), delay)
                continue
            action = self.heartbeat.handle_timer(self.clock())
            if action is HeartbeatAction.SEND_NOOP:
                try:
                    self._write(self._conn.send_noop())
                except LinkClosed:
                    return
            elif action is HeartbeatAction.LINK_DEAD:
                self.close("no heartbeat reply within the noop timeout")
                return
