"""CPU per request of the server's long-link path alone, run by hand::

    .venv/bin/python -m bench.longlink_adapter [--requests 30000] [--rounds 5] [--suspend]
    PYTHONPATH=/tmp/base/src .venv/bin/python -m bench.longlink_adapter   # another build

The server adapter (``wxnet.server.longlink.LongLink``, with whatever connection object
the build has under it) on a fake transport, with a dispatcher that answers every request
at once (``--suspend``: that waits for a future a later loop turn resolves, as a send
waits for its commit): bytes in, request tasks, replies and notifies flushed out. No
store, no sockets, so it measures the code between the socket and the dispatcher and
little else; process CPU time, the best of ``--rounds``. Run two builds alternately and
compare the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from types import SimpleNamespace
from typing import Any

import uvloop

from wxnet.proto.framing import encode_packet
from wxnet.server import longlink
from wxnet.server.limits import ConnectionLimiter
from wxnet.server.longlink import LongLink
from wxnet.server.metrics import Metrics


class _Transport:
    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, key: str) -> Any:
        return ("127.0.0.1", 1) if key == "peername" else None

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class _Dispatcher:
    reply = bytes(60)

    def __init__(self, suspend: bool) -> None:
        self.suspend = suspend
        self.waiting: list[asyncio.Future[bytes]] = []

    async def handle(self, cgi: object, body: bytes, ctx: object) -> bytes:
        if not self.suspend:
            return self.reply
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.waiting.append(fut)
        return await fut

    def commit(self) -> None:
        """What a group commit's callback does: resolve every waiting request."""
        waiting, self.waiting = self.waiting, []
        for fut in waiting:
            fut.set_result(self.reply)


async def measure(requests: int, rounds: int, suspend: bool = False) -> float:
    """Best CPU microseconds per request over ``rounds``."""
    loop = asyncio.get_running_loop()
    config = SimpleNamespace(
        max_request_bytes=1 << 20, max_pending_per_link=1024, identify_timeout=60.0
    )
    server: Any = SimpleNamespace(
        config=config,
        loop=loop,
        rx_stamp=loop.time(),
        links=set(),
        tasks=set(),
        dispatcher=(dispatcher := _Dispatcher(suspend)),
        limiter=ConnectionLimiter(100, 100),
        metrics=Metrics(),
    )
    if hasattr(longlink, "Flusher"):  # a build that flushes every link in one callback
        server.flusher = longlink.Flusher(loop)
    link = LongLink(server)
    link.connection_made(_Transport())  # type: ignore[arg-type]
    packets = [encode_packet(522, i, bytes(120)) for i in range(1, requests + 1)]
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        for i in range(0, requests, 8):  # 8 requests per loop turn, then a notify
            for p in packets[i : i + 8]:
                link.data_received(p)
            await asyncio.sleep(0)
            dispatcher.commit()
            await asyncio.sleep(0)
            link.notify(2)
        while server.tasks:
            dispatcher.commit()
            await asyncio.sleep(0)
        best = min(best, (time.process_time() - t0) / requests * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=30000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--suspend", action="store_true", help="requests wait for a 'commit'")
    args = ap.parse_args()
    us = uvloop.run(measure(args.requests, args.rounds, args.suspend))
    print(f"{us:.2f} us CPU per request")


if __name__ == "__main__":
    main()
