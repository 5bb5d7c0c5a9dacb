"""bench/pairs.py: the random-pairs driver that the wxnet, MQTT and XMPP generators share,
against an in-process "server" that delivers on the next loop turns."""

from __future__ import annotations

import asyncio
import gc
import os
from pathlib import Path

import pytest

from bench.loadgen import LoadResult, create_users, run_random
from bench.pairs import PairsDriver
from tests.client.conftest import server_config
from wxnet.server.app import start_server


async def _run(
    users: int, messages: int, window: int, warmup: int, dup_every: int = 0, refuse: str = ""
) -> tuple[LoadResult, list[tuple[int, int]], int]:
    res = LoadResult(users, messages)
    drv = PairsDriver(res, window=window, drain_timeout=5.0)
    loop = asyncio.get_running_loop()
    pairs: list[tuple[int, int]] = []
    in_flight = peak = 0

    def deliver(tag: str) -> None:
        nonlocal in_flight
        in_flight -= 1
        drv.arrived(tag, loop.time())
        if dup_every and int(tag[1:]) % dup_every == 0:
            drv.arrived(tag, loop.time())  # the server delivered it twice

    def send(i: int, j: int, tag: str, _now: float) -> None:
        nonlocal in_flight, peak
        pairs.append((i, j))
        if tag == refuse:
            loop.call_soon(drv.failed, tag)
            return
        in_flight += 1
        peak = max(peak, in_flight)
        loop.call_soon(drv.acked)
        loop.call_soon(loop.call_soon, deliver, tag)

    await drv.run(send, warmup=warmup)
    return res, pairs, peak


async def test_every_message_is_delivered_once_within_the_window() -> None:
    res, pairs, peak = await _run(users=3, messages=200, window=7, warmup=30)
    s = res.summary()
    assert s["sent"] == s["acked"] == s["delivered"] == 200  # the warm-up not counted
    assert s["duplicates"] == 0 and s["send_errors"] == 0 and len(res.latencies) == 200
    assert len(pairs) == 230 and all(i != j and 0 <= i < 3 and 0 <= j < 3 for i, j in pairs)
    assert {j for _, j in pairs} == {0, 1, 2}
    assert peak <= 7


async def test_duplicates_and_refused_sends_are_counted() -> None:
    res, _, _ = await _run(users=4, messages=50, window=5, warmup=0, dup_every=10, refuse="m3")
    s = res.summary()
    assert s["sent"] == 50 and s["acked"] == 49 and s["send_errors"] == 1
    assert s["delivered"] == 49 and s["lost"] == 0 and s["duplicates"] == 5


def test_one_user_is_no_pairs() -> None:
    with pytest.raises(ValueError):
        PairsDriver(LoadResult(1, 10))


@pytest.mark.parametrize("push", [False, True])
async def test_the_wxnet_generator_runs_on_the_driver(tmp_path: Path, push: bool) -> None:
    cfg = server_config(tmp_path)
    create_users(cfg.data, [f"tu{i}" for i in range(4)], "loadgen-pw", mesh=True)
    srv = await start_server(cfg)
    marks: list[int] = []
    try:
        res = await run_random(
            "127.0.0.1", srv.long_port, 4, 80, window=6, warmup=10, prefix="t",
            server_pid=os.getpid(), push=push,
            on_span=lambda: marks.append(len(marks)),
        )  # fmt: skip
    finally:
        await srv.close()
    s = res.summary()
    assert s["sent"] == s["acked"] == s["delivered"] == 80
    assert s["duplicates"] == 0 and s["lost"] == 0 and s["send_errors"] == 0
    assert len(res.latencies) == 80 and "server_cpu_s" in s
    assert marks == [0, 1]  # the timed phase's start and end
    # frozen and not collecting for the run only (freeze_gc)
    assert res.gc_pauses == [] and gc.isenabled() and gc.get_freeze_count() == 0
