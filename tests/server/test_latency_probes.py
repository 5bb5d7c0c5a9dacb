"""Where a request waits inside the server (issue 11): the histograms on /metrics after
real sends over a long link, the loop-lag and GC probes on their own, the process
tuning ``wxnet serve`` applies, and the config keys that set them."""

from __future__ import annotations

import asyncio
import gc
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.server.wire import Device
from wxnet.proto import wxnet_pb2 as pb
from wxnet.server.app import Server
from wxnet.server.config import ConfigError, load_config
from wxnet.server.probes import CpuWaits, GcPauses, LoopLag, thread_cpu_waits, tune_process


async def test_metrics_say_where_a_send_waited(server: Server) -> None:
    alice = await Device.login(server.long_port, "alice")
    bob = await Device.login(server.long_port, "bob")
    try:
        r = await alice.call(
            "verifyuser", pb.AddContactRequest(user_name="bob"), pb.AddContactResponse
        )
        assert r.base.ret == 0
        for i in range(3):
            assert (await alice.send("bob", f"hi {i}", f"c{i}")).ret == 0
        got = [m.content for m in await bob.messages()]
        assert got == ["hi 0", "hi 1", "hi 2"]
    finally:
        await alice.close()
        await bob.close()
    url = f"http://127.0.0.1:{server.http_port}/metrics"
    async with aiohttp.ClientSession() as s, s.get(url) as page:
        text = await page.text()
    assert "wxnet_send_seconds_count 3.0" in text
    for name in (
        "wxnet_db_commit_seconds",
        "wxnet_db_write_wait_seconds",
        "wxnet_db_wake_seconds",
    ):
        count = float(text.split(f"\n{name}_count ")[1].split()[0])
        assert count >= 3, name  # the three sends' groups at least (logins write too)
        assert f'{name}_bucket{{le="0.001"}}' in text
    assert 'wxnet_gc_pause_seconds_bucket{generation="2",le="+Inf"}' in text
    assert 'wxnet_gc_cpu_seconds_total{generation="0"}' in text
    assert "wxnet_loop_lag_seconds_count" in text
    assert "wxnet_db_checkpoints " in text and "wxnet_db_wal_pages " in text
    assert 'wxnet_cpu_wait_seconds_total{thread="loop"}' in text
    assert 'wxnet_cpu_wait_seconds_total{thread="other"}' in text


def test_cpu_waits_split_the_loop_thread_from_the_others() -> None:
    import threading

    waits = CpuWaits().seconds()
    assert set(waits) == {"loop", "other"}
    per_thread = thread_cpu_waits()
    if not per_thread:  # a kernel without schedstat: the metric says it does not know
        assert all(v != v for v in waits.values())
        return
    assert threading.get_native_id() in per_thread
    assert all(v >= 0 for v in per_thread.values())
    assert all(v >= 0 for v in waits.values())
    assert thread_cpu_waits(2**22 + 12345) == {}  # no such process


async def test_loop_lag_measures_how_late_a_due_timer_ran() -> None:
    loop = asyncio.get_running_loop()
    lag = LoopLag(loop, 60.0)
    lag.start()
    try:
        assert lag._handle is not None
        lag._due = loop.time() - 0.2  # as if the loop had been held for 0.2 s
        lag._tick()
        assert lag.timings.count == 1 and lag.timings.sum >= 0.2
        assert lag._handle is not None  # armed again
    finally:
        lag.stop()
    assert lag._handle is None
    off = LoopLag(loop, 0.0)
    off.start()
    assert off._handle is None  # interval 0: off


def test_gc_pauses_are_timed_by_generation_until_stopped() -> None:
    pauses = GcPauses()
    pauses.start()
    try:
        gc.collect()
        gc.collect(0)
    finally:
        pauses.stop()
    assert pauses.timings["2"].count >= 1 and pauses.cpu["2"].count >= 1
    assert pauses.timings["0"].count >= 1
    before = pauses.timings["2"].count
    gc.collect()
    assert pauses.timings["2"].count == before  # stopped: no longer a gc callback
    assert pauses._callback not in gc.callbacks


def test_tune_process_sets_the_collector_and_the_switch_interval() -> None:
    thresholds, interval = gc.get_threshold(), sys.getswitchinterval()
    try:
        tune_process((12345, 11, 12), True, 0.002)
        assert gc.get_threshold() == (12345, 11, 12)
        assert gc.get_freeze_count() > 0
        assert sys.getswitchinterval() == pytest.approx(0.002)
        tune_process((), False, 0.005)  # empty: the collector's thresholds stay
        assert gc.get_threshold() == (12345, 11, 12)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        sys.setswitchinterval(interval)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\ngc_thresholds = [1, 2, 3, 4]\n", "gc_thresholds"),
        ("[server]\ngc_thresholds = [-1]\n", "gc_thresholds"),
        ("[server]\nswitch_interval = 0.0\n", "switch_interval"),
        ("[server]\nloop_lag_interval = -1.0\n", "loop_lag_interval"),
        ("[server]\ngc_freeze = 1\n", "expected bool"),
        ("[sync]\ncheckpoint_interval = -0.5\n", "checkpoint_interval"),
    ],
)
def test_bad_latency_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(p)


def test_latency_settings_load(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text(
        "[server]\ngc_thresholds = [5000, 10, 10]\ngc_freeze = false\n"
        "switch_interval = 0.0005\nloop_lag_interval = 0.0\n[sync]\ncheckpoint_interval = 0\n"
    )
    cfg = load_config(p)
    assert cfg.gc_thresholds == (5000, 10, 10) and not cfg.gc_freeze
    assert cfg.switch_interval == 0.0005 and cfg.loop_lag_interval == 0.0
    assert cfg.sync.checkpoint_interval == 0
