"""bench/server_bench.py: the compare run's probe columns cover its timed span only."""

from __future__ import annotations

import asyncio
import gc
import os
import re
from pathlib import Path
from typing import cast

from bench.server_bench import TimedSpan, metrics_text, read_probes, runq_wait
from bench.spawn import ServerProcess
from tests.client.conftest import server_config
from wxnet.server.app import start_server


class _Here:
    """The in-process server as :class:`TimedSpan` sees a spawned one."""

    def __init__(self, http_port: int) -> None:
        self.http_port = http_port
        self.pid = os.getpid()


async def test_probes_since_a_scrape_leave_out_what_came_before(tmp_path: Path) -> None:
    srv = await start_server(server_config(tmp_path))
    here = cast(ServerProcess, _Here(srv.http_port))
    span = TimedSpan(here)
    was_enabled = gc.isenabled()
    gc.disable()  # no collection but ours between the two scrapes
    try:
        gc.collect()  # before the span: a full collection, as at start-up
        await asyncio.to_thread(span.mark)
        gc.collect()
        gc.collect()
        await asyncio.to_thread(span.mark)
        after = await asyncio.to_thread(metrics_text, here)
    finally:
        if was_enabled:
            gc.enable()
        await srv.close()
    assert span.before is not None
    whole, timed = read_probes(after)["gc"], read_probes(after, span.before)["gc"]
    gen2 = re.compile(r"\b2:(\d+)/")
    m_whole, m_timed = gen2.search(whole), gen2.search(timed)
    assert m_whole is not None and m_timed is not None
    assert int(m_timed.group(1)) == 2 and int(m_whole.group(1)) >= 3
    assert timed.startswith("0:0/0/0 1:0/0/0 ")
    assert read_probes(after, span.before)["loop_lag"] != "-"
    assert re.fullmatch(r"\d+ / \d+", span.runq_ms_per_s())


def test_run_queue_wait_is_read_for_every_thread() -> None:
    assert runq_wait(os.getpid()) >= 0.0
    assert TimedSpan(cast(ServerProcess, _Here(0))).runq_ms_per_s() == "-"
