"""The long link (S12, S18, S32, S33): a thin asyncio adapter over the sans-IO
:class:`~wxnet.proto.longlink.LongLinkConnection` (server role).

Bytes in -> connection events -> the dispatcher's :meth:`~wxnet.server.dispatch.Dispatcher.begin`
per request: a reply known at once, a send the engine's caches can serve answered from
its write's done callback, anything else one task (replies matched by seq, in whatever
order they finish) -> packets queued per link and written by the server's
:class:`Flusher`, one write per link per loop turn, so every reply, push and notify
ready at the same moment leaves in one write (S20, S33). The
seq rules and every packet's shape are the connection's; this module owns the caps
(requests in flight per link, links per account, the write buffer, the connection cap
and the identify deadline) and the flushing.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, cast

from wxnet.proto import commands as C
from wxnet.proto.errors import LocalProtocolError, MMError, MMRet, RemoteProtocolError
from wxnet.proto.longlink import (
    SERVER,
    LongLinkConnection,
    Noop,
    Request,
    UnknownCommand,
    error_body,
    notify_packet,
    push_packet,
)
from wxnet.server.dispatch import BadRequest, Context
from wxnet.server.notify import Item
from wxnet.sync.engine import Session
from wxnet.sync.items import newsync_response
from wxnet.sync.store import session_key_hash

if TYPE_CHECKING:
    from wxnet.server.app import Server

__all__ = ["Flusher", "LongLink", "session_tag"]

log = logging.getLogger("wxnet.longlink")

#: A peer that stops reading gets its link closed once this much output is queued.
MAX_WRITE_BUFFER = 4 << 20


class Flusher:
    """Writes the queued output of every long link that has some, once per loop turn,
    for all links in one callback (not one scheduled callback per link), in the next
    turn.

    A commit's callback (``Database.after_commit_on``) first resolves the sender's
    request, which schedules its task (or its write's done callback: a send served from
    the caches), then pushes to the links: the flush is scheduled after them, so the
    push and the reply they write leave together, without
    the push waiting one more turn behind every request that arrived meanwhile.
    A link added twice in a turn is flushed once (the links are a dict's keys: no flag
    on every idle link)."""

    __slots__ = ("_dirty", "_loop", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: dict[LongLink, None] = {}
        self._scheduled = False

    def add(self, link: LongLink) -> None:
        self._dirty[link] = None
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush_all)

    def _flush_all(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, {}
        for link in dirty:
            link._flush()


def session_tag(key_hash: str) -> int:
    """What a long link keeps of its session: the first 64 bits of the session key's
    hash (``session_key_hash``), enough to tell which of an account's links a session
    that ended was on (two sessions of one account share it with odds of 2**-64)."""
    return int(key_hash[:16], 16)


def _queued(out: bytes | list[bytes] | None, data: bytes) -> bytes | list[bytes]:
    """A link's queued output ``out`` with the packet ``data`` after it: one packet
    alone (no list for the common case: a reply or a push per loop turn), else a
    list of them."""
    if out is None:
        return data
    if isinstance(out, bytes):
        return [out, data]
    out.append(data)
    return out


class _Origin(Context):
    """A long-link request's context and its ``done`` for
    :meth:`~wxnet.server.dispatch.Dispatcher.begin` (``done(response)`` queues the
    reply): one object per request, where a Context and a ``partial`` of
    :meth:`LongLink._answer` were four (the partial, its bound method, its tuple)."""

    __slots__ = ("seq",)

    def __init__(self, link: LongLink, seq: int) -> None:
        self.peer = link.peer
        self.link = link
        self.seq = seq

    def __call__(self, out: bytes) -> None:
        self.link._answer(self.seq, out)


class LongLink(asyncio.Protocol):
    """One long link: while it is idle (nothing in flight, nothing buffered, nothing
    queued), this object is all it holds beyond the transport: the sans-IO
    connection exists only while a request is in flight or a packet is part read,
    the queued output only while there is some (an idle identified link at N =
    10,000: docs/benchmarks.md, "Idle links")."""

    __slots__ = (
        "_conn",
        "_notify_pending",
        "_out",
        "_pending",
        "closed",
        "last_rx",
        "peer",
        "push_data",
        "server",
        "session_tag",
        "transport",
        "uin",
    )

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        #: the sans-IO connection, None while the link is idle (made by the next read)
        self._conn: LongLinkConnection | None = None
        #: the account this link is bound to (identify), 0 when unbound, and its
        #: session's :func:`session_tag` (0 when unbound). Not the Session, nor its
        #: key: an idle account's session then leaves the engine's cache (ActiveCache)
        #: and memory, and the next request reads it again; the tag is what the link
        #: needs to hear that its session ended (an int in a 48-byte block, where the
        #: key's string took 96)
        self.uin = 0
        self.session_tag = 0
        self.peer = ""
        #: when the link last read, to the idle sweep's granularity: the server's
        #: ``rx_stamp`` (one float for every link, not one per link and read)
        self.last_rx = server.rx_stamp
        self._pending = 0
        #: queued output: None when none, else as :func:`_queued` builds it
        self._out: bytes | list[bytes] | None = None
        self._notify_pending = 0
        self.closed = False
        #: identify asked for push with data (cmd 122)
        self.push_data = False

    # -- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        # one string per address, not one per link (phones behind a NAT share it)
        self.peer = sys.intern(str(peer[0])) if peer else ""
        refused = self.server.limiter.admit(self.peer)
        if refused is not None:
            self.server.metrics.connections_refused.inc(refused)
            self.closed = True
            self.transport.abort()
            return
        self.server.unbound[self] = None  # admitted: unbound or bound until connection_lost
        self._arm_identify()

    # -- the identify deadline (issue 12) ----------------------------------------------
    def _arm_identify(self) -> None:
        """A link must identify soon; noops before that do not keep it. The deadline
        is the server's ``unbound`` entry of the link, not a slot of every link."""
        unbound = self.server.unbound
        if unbound.get(self) is None and not self.closed:
            unbound[self] = self.server.loop.call_later(
                self.server.config.identify_timeout, self._identify_expired
            )

    def _identify_expired(self) -> None:
        unbound = self.server.unbound
        if self.uin or self.closed or self not in unbound:
            return
        unbound[self] = None  # (fired)
        if self._pending:  # a login is still hashing (its pool is bounded): wait for it
            self._arm_identify()
            return
        self.server.metrics.identify_timeouts.inc()
        log.info("closing long link from %s: no identify in time", self.peer)
        self.close()

    def data_received(self, data: bytes) -> None:
        self.last_rx = self.server.rx_stamp
        if self.closed:  # (a refused link is closed from the start)
            return
        conn = self._conn
        if conn is None:
            conn = self._conn = LongLinkConnection(SERVER, self.server.config.max_request_bytes)
        try:
            events = conn.receive_data(data)
        except RemoteProtocolError as exc:
            self.server.metrics.protocol_errors.inc()
            log.info("closing long link from %s: %s", self.peer, exc)
            self._write(conn.protocol_error(MMRet.ERR_BAD_REQUEST, str(exc)))
            self.close()
            return
        for ev in events:
            if type(ev) is Request:
                self._on_request(conn, ev.cgi, ev.seq, ev.body)
            elif type(ev) is Noop:
                self._write(conn.noop_reply(ev.seq))
            elif type(ev) is UnknownCommand:
                msg = f"unknown cmd {ev.cmd}"
                self._write(conn.reply_error(ev.seq, MMRet.ERR_UNKNOWN_CMD, msg))
            # SignalKeep needs no answer
        if conn.idle:  # noops only, or every request answered at once
            self._conn = None

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.unbind()
        unbound = self.server.unbound
        if self in unbound:  # admitted (unbind put a bound link back)
            timer = unbound.pop(self)
            if timer is not None:
                timer.cancel()
            self.server.limiter.release(self.peer)
        self._out = None

    # -- requests --------------------------------------------------------------------
    def _on_request(self, conn: LongLinkConnection, cgi: C.CGI, seq: int, body: bytes) -> None:
        if self._pending >= self.server.config.max_pending_per_link:
            self._write(conn.reply_error(seq, MMRet.ERR_BUSY, "too many requests in flight"))
            return
        self._pending += 1
        try:
            origin = _Origin(self, seq)
            out = self.server.dispatcher.begin(cgi, body, origin, origin)
        except BadRequest as exc:
            out = error_body(MMRet.ERR_BAD_REQUEST, str(exc))
        if out is None:  # the dispatcher calls _answer when the reply is ready
            return
        if isinstance(out, bytes):  # answered at once (data_received drops an idle conn)
            self._pending -= 1
            self._write(self._reply(conn, seq, out))
            return
        # the task leaves server.tasks itself when it ends (_run, told its task through
        # ``me``), not by a done callback, which costs one more scheduled callback per
        # request (and asyncio.current_task is Python code on 3.11)
        me: list[asyncio.Task[None]] = []
        task = self.server.loop.create_task(self._run(seq, out, me))
        me.append(task)
        self.server.tasks.add(task)

    async def _run(
        self, seq: int, rest: Coroutine[Any, Any, bytes], me: list[asyncio.Task[None]]
    ) -> None:
        try:
            out = await rest
        except BaseException:
            self._pending -= 1
            raise
        finally:
            self.server.tasks.discard(me[0])
        self._answer(seq, out)

    def _answer(self, seq: int, out: bytes) -> None:
        """The response ``out`` to request ``seq`` is ready: queue its reply."""
        self._pending -= 1
        conn = self._conn
        if self.closed or conn is None:
            return
        data = self._reply(conn, seq, out)
        if conn.idle:  # the link's last request: it holds no connection until its next read
            self._conn = None
        self._write(data)

    @staticmethod
    def _reply(conn: LongLinkConnection, seq: int, out: bytes) -> bytes:
        try:
            return conn.reply(seq, out)
        except LocalProtocolError as exc:  # a reply over the packet limit
            return conn.reply_error(seq, MMRet.ERR_TOO_LARGE, str(exc))

    # -- binding to a session (identify) ----------------------------------------------
    def bind(self, sess: Session) -> None:
        tag = session_tag(session_key_hash(sess.sid))
        if self.uin and self.uin == sess.uin:
            self.session_tag = tag
            return
        self.unbind()
        limit = self.server.config.max_links_per_account
        if self.server.notifier.links(sess.uin) >= limit:
            raise MMError(MMRet.ERR_BUSY, f"at most {limit} long links per account")
        self.uin, self.session_tag = sess.uin, tag
        timer = self.server.unbound.pop(self, None)  # the notifier holds it now
        if timer is not None:
            timer.cancel()
        self.server.notifier.add(sess.uin, self)

    def unbind(self) -> None:
        if self.uin:
            self.server.notifier.remove(self.uin, self)
            self.server.unbound[self] = None
            self.uin, self.session_tag = 0, 0
            self._arm_identify()  # unbound (logout): identify again, soon

    def notify(self, selector: int, items: Sequence[Item] | None = None) -> None:
        """Push ``items`` (cmd 122) when this link takes pushes and they fit in
        ``push_max_bytes``; else queue a cmd-24 "go sync" (several in one loop turn
        become one)."""
        if items and self.push_data and not self.closed:
            limit = self.server.config.push_max_bytes
            size = 0
            for _k, _s, body in items:
                size += len(body)
            if size <= limit:
                self._write(push_packet(newsync_response(items, b"", 0)))
                self.server.metrics.pushes.inc("data")
                return
        if self._notify_pending:
            self._notify_pending |= selector
            return
        self._notify_pending = selector
        self._schedule_flush()

    # -- output ----------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self.closed:
            return
        self._out = _queued(self._out, data)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self.closed:
            self.server.flusher.add(self)

    def _flush(self) -> None:
        if self.closed or self.transport is None:
            return
        out = self._out
        if self._notify_pending:
            sel, self._notify_pending = self._notify_pending, 0
            out = _queued(out, notify_packet(sel))
            self.server.metrics.pushes.inc("notify")
        if out is None:
            return
        self._out = None
        self.transport.write(out if isinstance(out, bytes) else b"".join(out))
        if self.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.info("closing long link from %s: peer does not read", self.peer)
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self._flush()  # what is queued goes first (a flush of nothing writes nothing)
            self.closed = True
            self.transport.close()
