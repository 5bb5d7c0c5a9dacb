from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.loadgen import main, pair_send_time, percentile, run_load
from tests.client.conftest import server_config
from wxnet.server.app import start_server


@given(st.lists(st.floats(0, 1e6), min_size=1), st.floats(0, 100))
def test_percentile_is_a_member_and_monotonic(values: list[float], p: float) -> None:
    v = sorted(values)
    got = percentile(v, p)
    assert got in v
    assert percentile(v, 0) <= got <= percentile(v, 100) == v[-1]


@pytest.mark.parametrize("push", [False, True])
async def test_loadgen_delivers_everything_once_against_the_server(
    tmp_path: Path, push: bool
) -> None:
    srv = await start_server(server_config(tmp_path))
    try:
        for i in range(3):
            for k in "sr":
                await srv.engine.add_user(f"t{k}{i}", "loadgen-pw")
        res = await run_load(
            "127.0.0.1",
            srv.long_port,
            pairs=3,
            messages=61,
            window=4,
            prefix="t",
            server_pid=os.getpid(),
            push=push,
        )
    finally:
        await srv.close()
    s = res.summary()
    assert s["sent"] == s["acked"] == s["delivered"] == 61
    assert s["duplicates"] == 0 and s["lost"] == 0 and s["send_errors"] == 0
    assert len(res.latencies) == 61 and all(x >= 0 for x in res.latencies)
    assert s["latency_ms"]["p50"] <= s["latency_ms"]["p99"] <= s["latency_ms"]["max"]
    assert s["loadgen_cpu_s"] >= 0 and "server_cpu_s" in s
    # a link that did not ask for push gets none. With push, each receiver pulls once
    # (the contact items before timing starts) and never again: a push during that pull
    # is held and taken when it ends (PushInbox), so every message after it comes by
    # push (how many the one pull brings depends on timing; tests/server/test_push.py
    # checks the push path itself, deterministically)
    if not push:
        assert s["pushes"] == 0
    else:
        assert res.requests["newsync"] == 3, s
        assert res.taken == 61 and 0 <= res.taken_by_push <= 61
    assert s["push_gaps"] == 0


@given(st.integers(1, 50), st.integers(1, 20), st.floats(10, 10_000))
def test_paced_pairs_take_turns_evenly(pairs: int, each: int, rate: float) -> None:
    # every pair's sends, together, one every 1 / rate s from the start: no burst of
    # all pairs at once
    times = sorted(
        pair_send_time(5.0, i, n, pairs, rate) for i in range(pairs) for n in range(each)
    )
    assert times[0] == 5.0
    assert all(abs((b - a) - 1 / rate) < 1e-9 for a, b in itertools.pairwise(times))
    # and each pair at rate / pairs
    mine = [pair_send_time(5.0, 1 % pairs, n, pairs, rate) for n in range(each)]
    assert all(abs((b - a) - pairs / rate) < 1e-9 for a, b in itertools.pairwise(mine))


def test_loadgen_rejects_bad_arguments() -> None:
    assert main(["--pairs", "0"]) == 2


def test_loadgen_reports_an_unreachable_server(capsys: object) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["--long-port", str(port), "--pairs", "1", "--messages", "1"]) == 1


def test_gc_pauses_records_each_collection_of_the_block_only() -> None:
    import gc

    from bench.loadgen import gc_pauses

    got: list[float] = []
    with gc_pauses(got):
        gc.collect()
        gc.collect(0)
    assert len(got) >= 2 and all(p >= 0 for p in got)
    n = len(got)
    gc.collect()
    assert len(got) == n
