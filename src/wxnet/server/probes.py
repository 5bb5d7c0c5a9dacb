"""What holds a request up inside the process, measured where it happens: event-loop
lag and garbage-collector pauses (the writer's own timings are in ``sync/db.py``), and
the process-wide tuning of the collector and of the GIL hand-off.

A send's latency seen from a client mixes the server's work with the machine's
scheduling; these numbers are the server's share, and stay comparable on a loaded
machine (docs/benchmarks.md, "Latency")."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from wxnet.sync.db import Timings

__all__ = ["CpuWaits", "GcPauses", "LoopLag", "thread_cpu_waits", "tune_process"]


class LoopLag:
    """Every ``interval`` seconds, how late the event loop ran a timer that was due:
    a callback that holds the loop (a long request, a pause) shows up as lag, and so
    does a loop that waits for the GIL or for a CPU. ``interval`` 0: off."""

    __slots__ = ("_due", "_handle", "_loop", "interval", "timings")

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self._loop = loop
        self.interval = interval
        self.timings = Timings()
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        if self.interval > 0 and self._handle is None:
            self._arm()

    def _arm(self) -> None:
        self._due = self._loop.time() + self.interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        self.timings.observe(max(0.0, self._loop.time() - self._due))
        self._arm()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class GcPauses:
    """The collector's pauses, by generation, from ``gc.callbacks`` (a pause stops
    every thread that wants the GIL, so it delays the loop and the writer alike):
    ``timings`` by the clock, ``cpu`` by the collecting thread's CPU time (what the
    pause costs, whatever else the machine runs meanwhile).

    The callback runs twice per collection: it reads the two clocks at the start, and
    at the stop observes both histograms of the generation, found by index (no
    ``str`` of the generation, no dict lookup). A profiler's samples in
    ``_callback`` are mostly the collection itself, which runs between the two
    calls (docs/benchmarks.md, "Per-message cost")."""

    __slots__ = ("_c0", "_cpu", "_t0", "_wall", "cpu", "timings")

    def __init__(self) -> None:
        self._wall = tuple(Timings() for _ in range(3))
        self._cpu = tuple(Timings() for _ in range(3))
        #: the histograms by generation ("0", "1", "2"), as /metrics labels them
        self.timings = {str(g): t for g, t in enumerate(self._wall)}
        self.cpu = {str(g): t for g, t in enumerate(self._cpu)}
        self._t0 = self._c0 = 0.0

    def _callback(
        self,
        phase: str,
        info: dict[str, Any],
        _clock: Callable[[], float] = time.perf_counter,
        _cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        if phase == "start":
            self._t0 = _clock()
            self._c0 = _cpu_clock()
            return
        t0 = self._t0
        if t0:
            wall, cpu = _clock() - t0, _cpu_clock() - self._c0
            gen = info["generation"]
            self._wall[gen].observe(wall)
            self._cpu[gen].observe(cpu)
            self._t0 = 0.0

    def start(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)


def thread_cpu_waits(pid: int | str = "self") -> dict[int, float]:
    """Seconds each thread of process ``pid`` has waited for a CPU while ready to run
    (Linux's ``/proc/PID/task/TID/schedstat``, its second field), by thread id; empty
    where the kernel does not say."""
    out: dict[int, float] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as fh:
                    out[int(tid)] = int(fh.read().split()[1]) / 1e9
            except (OSError, IndexError, ValueError):
                continue  # the thread ended meanwhile
    return out


class CpuWaits:
    """How long this process's threads have waited for a CPU while ready to run
    (:func:`thread_cpu_waits`), read at each scrape: the event loop's thread (the one
    that made this object) apart from the others (the writer, the reader, the log-in
    workers). Loop lag that comes with as much of this wait is the machine's other
    work (or this process's other threads on the same CPU), not a long callback
    (docs/benchmarks.md, "Latency"). NaN where the kernel does not say."""

    __slots__ = ("_loop_tid",)

    def __init__(self) -> None:
        self._loop_tid = threading.get_native_id()

    def seconds(self) -> dict[str, float]:
        waits = thread_cpu_waits()
        if not waits:
            return {"loop": float("nan"), "other": float("nan")}
        loop = waits.pop(self._loop_tid, 0.0)
        return {"loop": loop, "other": sum(waits.values())}


def tune_process(gc_thresholds: tuple[int, ...], gc_freeze: bool, switch_interval: float) -> None:
    """Process-wide settings ``wxnet serve`` applies once it listens (not the tests'
    in-process servers: they share the test runner's process).

    ``gc_freeze``: move what start-up allocated (modules, the config, the listeners)
    out of the collector's sight, so that no full collection walks it again.
    ``gc_thresholds``: ``gc.set_threshold`` (empty: Python's own). ``switch_interval``:
    ``sys.setswitchinterval``, how long a thread that holds the GIL keeps it while
    another waits for it (the writer thread back from its fsync waits for the loop).
    """
    if gc_thresholds:
        gc.set_threshold(*gc_thresholds)
    if gc_freeze:
        gc.collect()
        gc.freeze()
    if switch_interval > 0:
        sys.setswitchinterval(switch_interval)
