"""The random-pairs driver shared by the wxnet, MQTT and XMPP generators
(:func:`bench.loadgen.run_random`, :func:`bench.mqtt_load.run_mqtt`,
:func:`bench.xmpp_load.run_xmpp`): one copy of the phases, the window, the pacing, the
drain and the exactly-once bookkeeping, so that the three servers are held to the same
load and the same checks.

A run is ``warmup`` untimed messages, then ``messages`` timed ones. Each message goes
from a random user ``i`` to a random *other* user ``j`` (one ``random.Random(seed)``, so
every protocol gets the same sequence of pairs). Closed loop: at most ``window``
messages are in flight in total, and a new send starts when one is delivered (or its
send fails); with ``rate`` > 0 the sends are paced at that many per second instead, the
window still a cap. A phase ends when every message it sent was delivered and every
send acknowledged, or after ``drain_timeout`` seconds. The protocol adapter gives the
driver a ``send(i, j, tag, now)`` (a plain function, or one that returns an awaitable:
the driver runs it as a task) and reports back through :meth:`PairsDriver.arrived`
(or :meth:`PairsDriver.first`, when it does its own de-duplication),
:meth:`PairsDriver.acked` and :meth:`PairsDriver.failed`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from wxnet._compat import wait_for

if TYPE_CHECKING:  # bench.loadgen imports this module
    from bench.loadgen import LoadResult

__all__ = [
    "PairsDriver",
    "Send",
    "add_load_arguments",
    "load_arguments_ok",
    "per_10k",
    "report",
    "run_generator",
    "summary",
]

#: ``send(i, j, tag, now)``: start sending message ``tag`` from user ``i`` to user ``j``
Send = Callable[[int, int, str, float], Awaitable[None] | None]


class PairsDriver:
    """The closed-loop / paced random-pairs load over ``result.pairs`` users and
    ``result.messages`` timed messages (see the module docstring); the counts and
    latencies of the timed phase go into ``result``."""

    def __init__(
        self,
        result: LoadResult,
        window: int = 1000,
        rate: float = 0.0,
        drain_timeout: float = 60.0,
        seed: int = 1,
    ) -> None:
        if result.pairs < 2:
            raise ValueError("random pairs need two users at least")
        self.users = result.pairs
        self.messages = result.messages
        self.window = window
        self.rate = rate
        self.drain_timeout = drain_timeout
        self.result = result
        self.counting = False  # the timed phase: count what is sent, acked, delivered
        self._rnd = random.Random(seed)
        self._slots = asyncio.Semaphore(window)
        self._sent_at: dict[str, float] = {}  # tag -> send time, until delivered
        self._seen: set[str] = set()
        self._unacked = 0  # sends of the current phase whose ack has not come
        self._settled = asyncio.Event()  # nothing in flight, nothing unacked

    # ---- what the protocol adapter reports ---------------------------------------------

    def arrived(self, tag: str, now: float) -> None:
        """A message reached its recipient; a second arrival of one tag is a duplicate."""
        if tag in self._seen:
            self.result.duplicates += 1
            return
        self._seen.add(tag)
        self.first(tag, now)

    def first(self, tag: str, now: float) -> None:
        """The first arrival of ``tag`` (the adapter de-duplicated it itself)."""
        t = self._sent_at.pop(tag, None)
        if t is None:
            return  # not one of ours (or a late one of a phase that timed out)
        self._slots.release()
        if self.counting and tag[:1] == "m":
            self.result.delivered += 1
            self.result.latencies.append(now - t)
        self._check()

    def acked(self, count: int = 1) -> None:
        """``count`` sends were acknowledged by the server."""
        self._unacked -= count
        if self.counting:
            self.result.acked += count
        self._check()

    def failed(self, tag: str) -> None:
        """The send of ``tag`` was refused: no ack and no delivery to wait for."""
        self._unacked -= 1
        if self.counting:
            self.result.send_errors += 1
        if self._sent_at.pop(tag, None) is not None:
            self._slots.release()
        self._check()

    def _check(self) -> None:
        if not self._sent_at and self._unacked <= 0:
            self._settled.set()

    # ---- the run -------------------------------------------------------------------------

    async def phase(self, count: int, kind: str, send: Send) -> None:
        """``count`` messages tagged ``<kind><n>``, then the drain."""
        tasks: set[asyncio.Future[None]] = set()
        rate, users, rnd = self.rate, self.users, self._rnd
        t0 = time.monotonic()
        for n in range(count):
            if rate > 0:
                delay = t0 + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await self._slots.acquire()
            i = rnd.randrange(users)
            j = rnd.randrange(users - 1)
            j += j >= i
            tag = f"{kind}{n}"
            now = time.monotonic()
            self._sent_at[tag] = now
            self._unacked += 1
            self._settled.clear()
            if self.counting:
                self.result.sent += 1
            pending = send(i, j, tag, now)
            if pending is not None:
                t = asyncio.ensure_future(pending)
                tasks.add(t)
                t.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        deadline = time.monotonic() + self.drain_timeout
        while (self._sent_at or self._unacked > 0) and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                await wait_for(self._settled.wait(), max(0.0, deadline - time.monotonic()))

    async def run(
        self, send: Send, warmup: int = 0, server_cpu: Callable[[], float] | None = None
    ) -> LoadResult:
        """The warm-up, then the timed phase: its span in ``elapsed``, this process's CPU
        in ``cpu_seconds``, and the server's (``server_cpu()`` before and after) in
        ``server_cpu_seconds``. Sends still unacked at the end count as send errors."""
        if warmup:
            await self.phase(warmup, "w", send)
        self._unacked = 0  # a warm-up ack that never came is not the timed phase's
        self.counting = True
        res = self.result
        start = time.monotonic()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        srv0 = server_cpu() if server_cpu is not None else 0.0
        await self.phase(self.messages, "m", send)
        res.elapsed = time.monotonic() - start
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        res.cpu_seconds = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        if server_cpu is not None:
            res.server_cpu_seconds = server_cpu() - srv0
        res.send_errors += max(0, self._unacked)
        self.counting = False
        return res


# ---- the command line the outside baselines share (bench.mqtt_load, bench.xmpp_load) ----


def per_10k(result: LoadResult) -> float | None:
    """Server (broker) CPU seconds per 10,000 deliveries, or None without a CPU figure."""
    if result.server_cpu_seconds is None or not result.delivered:
        return None
    return result.server_cpu_seconds / result.delivered * 10_000


def add_load_arguments(p: argparse.ArgumentParser, server: str) -> None:
    """The load-shape options of a baseline generator (``server``: what the pinning
    help calls the other side, e.g. "broker")."""
    p.add_argument("--users", type=int, default=200, help="clients C")
    p.add_argument("--warmup", type=int, default=2000, help="untimed messages first")
    p.add_argument("--messages", type=int, default=100_000, help="timed messages")
    p.add_argument("--window", type=int, default=1000, help="messages in flight in total")
    p.add_argument("--rate", type=float, default=0.0, help="messages/s; 0 = closed loop")
    p.add_argument("--no-pin", action="store_true", help=f"do not pin {server}/generator CPUs")
    p.add_argument("--uvloop", action="store_true", help="run the generator on uvloop")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def load_arguments_ok(args: argparse.Namespace, prog: str) -> bool:
    """False (and a message on stderr) when the load-shape options make no run."""
    if args.users < 2 or args.messages < 1 or args.window < 1 or args.rate < 0:
        print(f"{prog}: users >= 2, messages and window >= 1, rate >= 0", file=sys.stderr)
        return False
    return True


def run_generator(coro: Coroutine[Any, Any, LoadResult], use_uvloop: bool) -> LoadResult:
    """Run a generator's coroutine on asyncio's loop, or on uvloop's (``--uvloop``)."""
    if use_uvloop:
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def summary(result: LoadResult) -> dict[str, Any]:
    """``result.summary()`` with the server's CPU per 10k deliveries, the load average
    and the share of a core each side used (which one saturated)."""
    s = result.summary()
    s["server_cpu_s_per_10k"] = per_10k(result)
    s["load_average"] = os.getloadavg()[0]
    if result.elapsed and result.server_cpu_seconds is not None:
        s["server_cores"] = round(result.server_cpu_seconds / result.elapsed, 3)
    s["loadgen_cores"] = round(result.cpu_seconds / result.elapsed, 3) if result.elapsed else 0
    return s


def report(result: LoadResult, as_json: bool, server: str) -> int:
    """Print a run's summary (JSON, or lines for people; ``server``: "broker",
    "server"); 0 if every acked message was delivered exactly once, else 1."""
    s = summary(result)
    if as_json:
        print(json.dumps(s, sort_keys=True))
    else:
        lat = s["latency_ms"]
        print(
            f"{s['delivered']}/{s['acked']} delivered ({s['duplicates']} duplicates, "
            f"{s['lost']} lost, {s['send_errors']} unacked) in {s['elapsed_s']} s: "
            f"{s['delivered_per_s']} msg/s"
        )
        print(f"send->deliver latency ms: p50 {lat['p50']}  p99 {lat['p99']}  max {lat['max']}")
        cpu = s["server_cpu_s_per_10k"]
        print(
            f"generator CPU {s['loadgen_cpu_s']} s"
            + (f"; {server} CPU {s['server_cpu_s']} s = {cpu:.3f} s per 10k" if cpu else "")
            + f"; load average {s['load_average']:.2f}"
        )
        if "server_cores" in s:  # which side saturated: the share of a core each used
            print(f"{server} / generator cores: {s['server_cores']} / {s['loadgen_cores']}")
    ok = result.delivered == result.messages == result.acked and not result.duplicates
    return 0 if ok else 1
