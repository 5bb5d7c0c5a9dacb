"""The long link's output: one write per link per loop turn, and a commit's push leaves
with the reply its request's task (or its write's done callback) writes in the next
turn."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from types import SimpleNamespace
from typing import Any

import pytest

from wxnet.proto import commands as C
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.framing import PacketDecoder, encode_packet
from wxnet.server.limits import ConnectionLimiter
from wxnet.server.longlink import Flusher, LongLink
from wxnet.server.metrics import Metrics


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, key: str) -> Any:
        return ("127.0.0.1", 1) if key == "peername" else None

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


class Dispatcher:
    """Answers a request when the test resolves its future (as a commit would): from
    the request's task (``now`` False) or from the future's done callback, as a send
    the engine's caches serve is answered (``now`` True)."""

    def __init__(self, now: bool) -> None:
        self.now = now
        self.waiting: list[asyncio.Future[bytes]] = []

    def begin(
        self, cgi: object, body: bytes, ctx: object, done: Callable[[bytes], None]
    ) -> Coroutine[Any, Any, bytes] | None:
        if not self.now:
            return self.handle()
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.waiting.append(fut)
        fut.add_done_callback(lambda f: done(f.result()))
        return None

    async def handle(self) -> bytes:
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.waiting.append(fut)
        return await fut


def make_link(
    loop: asyncio.AbstractEventLoop, now: bool = False
) -> tuple[LongLink, Transport, Any]:
    server: Any = SimpleNamespace(
        config=SimpleNamespace(
            max_request_bytes=1 << 20,
            max_pending_per_link=64,
            identify_timeout=60.0,
            push_max_bytes=4096,
        ),
        loop=loop,
        rx_stamp=loop.time(),
        unbound={},
        tasks=set(),
        dispatcher=Dispatcher(now),
        limiter=ConnectionLimiter(10, 10),
        metrics=Metrics(),
        flusher=Flusher(loop),
    )
    link = LongLink(server)
    tr = Transport()
    link.connection_made(tr)  # type: ignore[arg-type]
    link.push_data = True
    return link, tr, server


def packets(tr: Transport) -> list[tuple[int, int]]:
    dec = PacketDecoder()
    return [(p.cmd, p.seq) for w in tr.writes for p in dec.packets(w)]


async def until(cond: Any) -> None:
    for _ in range(100):  # loop turns, not time
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("not within 100 loop turns")


@pytest.mark.parametrize("now", [False, True], ids=["task", "done-callback"])
async def test_a_push_and_the_reply_it_wakes_leave_in_one_write(now: bool) -> None:
    loop = asyncio.get_running_loop()
    link, tr, server = make_link(loop, now)
    send = C.BY_NAME["newsendmsg"]
    link.data_received(encode_packet(send.cmd, 7, pb.SendMsgRequest().SerializeToString()))
    await until(lambda: server.dispatcher.waiting)

    def commit() -> None:  # what a commit's callback does: wake the request, then push
        server.dispatcher.waiting[0].set_result(b"")
        link.notify(2, [(2, 1, pb.CmdItem().SerializeToString())])

    loop.call_soon(commit)
    await until(lambda: not server.tasks and tr.writes)
    await until(lambda: len(packets(tr)) == 2)
    assert len(tr.writes) == 1
    assert packets(tr) == [(122, 0), (send.cmd + 1_000_000_000, 7)]


async def test_links_written_in_one_turn_each_get_one_write() -> None:
    loop = asyncio.get_running_loop()
    links = [make_link(loop) for _ in range(3)]
    for link, _tr, _s in links:
        link.notify(2)  # a cmd-24 notify, coalesced
        link.notify(4)
        link.notify(2, [(2, 1, b"")])  # and a push
    await until(lambda: all(tr.writes for _l, tr, _s in links))
    for _link, tr, _s in links:
        assert len(tr.writes) == 1
        assert packets(tr) == [(122, 0), (24, 0)]


async def test_close_writes_what_is_queued_first() -> None:
    loop = asyncio.get_running_loop()
    link, tr, _server = make_link(loop)
    link.notify(2, [(2, 1, b"")])
    link.close()
    assert packets(tr) == [(122, 0)] and tr.closed
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(tr.writes) == 1  # the flusher's turn finds the link closed


@pytest.mark.parametrize("now", [False, True], ids=["task", "done-callback"])
async def test_an_idle_link_holds_no_connection_and_no_output_list(now: bool) -> None:
    loop = asyncio.get_running_loop()
    link, tr, server = make_link(loop, now)
    assert link._conn is None and link._out is None
    send = C.BY_NAME["newsendmsg"]
    req = encode_packet(send.cmd, 7, pb.SendMsgRequest().SerializeToString())
    link.data_received(req[:10])  # part of a packet: kept until the rest comes
    assert link._conn is not None and link._conn.buffered == 10
    link.data_received(req[10:])
    await until(lambda: server.dispatcher.waiting)
    assert link._conn is not None and link._conn.in_flight == 1
    server.dispatcher.waiting[0].set_result(b"")
    await until(lambda: tr.writes)
    assert packets(tr) == [(send.cmd + 1_000_000_000, 7)]
    assert link._conn is None and link._out is None  # answered and written: idle again
    link.data_received(encode_packet(6, 0xFFFFFFFF))  # a noop: answered at once
    assert link._conn is None
    await until(lambda: len(tr.writes) == 2)
    assert packets(tr)[-1] == (1_000_000_006, 0xFFFFFFFF) and link._out is None
