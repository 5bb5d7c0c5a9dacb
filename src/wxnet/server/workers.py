"""``wxnet serve --workers N``: N serving processes on the same ports, supervised.

Every worker is a whole ``wxnet serve`` (long link, HTTP, engine) binding the same
ports with ``SO_REUSEPORT``, so the kernel spreads new connections over them. They share
nothing in memory: accounts, sessions and logs are in PostgreSQL, notifies cross over
Redis (``docs/scaling.md``). The supervisor (this module, the process the user started):

* picks the ports once (a port 0 becomes a free port, reserved by a bound socket it
  holds), so every worker listens on the same ones;
* is ready (prints its banner, tells systemd ``READY=1``) only when every worker has
  printed its ``wxnet serving:`` line, i.e. listens; a worker that exits before that
  stops the group with a non-zero status (the worker has said why on stderr);
* restarts a worker that dies later, after a back-off (0.5 s, doubled per quick death
  up to 30 s, reset once a worker lived a minute);
* on SIGTERM or SIGINT sends SIGTERM to every worker, waits up to ``grace`` seconds,
  then SIGKILLs what is left, and exits once all are gone. Workers die with the
  supervisor even when it is SIGKILLed (``PR_SET_PDEATHSIG``, :func:`die_with_parent`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from wxnet._compat import wait_for
from wxnet.cli.common import IO, ExitStatus

__all__ = ["READY_PREFIX", "Supervisor", "die_with_parent", "reserve_port"]

#: The first line a worker prints once it listens (``wxnet serve``'s banner line).
READY_PREFIX = "wxnet serving:"

_PR_SET_PDEATHSIG = 1
_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 30.0
_LIVED = 60.0  # a worker that ran this long died of something new: restart at once


def reserve_port(host: str) -> tuple[int, socket.socket]:
    """A free TCP port on ``host`` and a bound (not listening) ``SO_REUSEPORT`` socket
    that keeps it ours while the workers bind it too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host or "0.0.0.0", 0))
    return int(sock.getsockname()[1]), sock


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGTERM this process when its parent (the supervisor) dies, and
    exit now if that already happened (the parent changed before the call)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        raise SystemExit(ExitStatus.ERROR)


@dataclass(slots=True)
class _Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    quick_deaths: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    serving: str = ""  # its banner line
    relay: asyncio.Task[None] | None = None


def _describe(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


class Supervisor:
    """Runs ``count`` workers made by ``argv(index)``; :meth:`run` until stopped."""

    def __init__(
        self,
        argv: Callable[[int], Sequence[str]],
        count: int,
        io: IO,
        *,
        grace: float = 30.0,
        env: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.argv = argv
        self.io = io
        self.grace = grace
        self.clock = clock
        self.env = dict(os.environ if env is None else env)
        self.env.pop("NOTIFY_SOCKET", None)  # readiness is the supervisor's to tell
        self.workers = [_Worker(i) for i in range(count)]
        self.stop = asyncio.Event()
        self.restarts = 0

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers if w.proc is not None]

    async def _spawn(self, w: _Worker) -> None:
        w.ready = asyncio.Event()
        w.proc = await asyncio.create_subprocess_exec(
            *self.argv(w.index),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            env=self.env,
        )
        w.started = self.clock()
        w.relay = asyncio.ensure_future(self._relay(w, w.proc))

    async def _relay(self, w: _Worker, proc: asyncio.subprocess.Process) -> None:
        """A worker's stdout: its banner line marks it ready; anything else is passed on."""
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith(READY_PREFIX) and not w.ready.is_set():
                w.serving = line
                w.ready.set()
            elif line:
                self.io.print(f"[worker {w.index + 1}] {line}")

    async def start(self) -> bool:
        """Start every worker; True once all listen, False if one exited before."""
        for w in self.workers:
            await self._spawn(w)
        for w in self.workers:
            assert w.proc is not None
            ready = asyncio.ensure_future(w.ready.wait())
            died = asyncio.ensure_future(w.proc.wait())
            stop = asyncio.ensure_future(self.stop.wait())
            await asyncio.wait((ready, died, stop), return_when=asyncio.FIRST_COMPLETED)
            for t in (ready, died, stop):
                t.cancel()
            if not w.ready.is_set():
                if w.proc.returncode is not None:
                    self.io.error(
                        f"worker {w.index + 1} exited before it listened "
                        f"({_describe(w.proc.returncode)}); stopping the others"
                    )
                return False
        return True

    async def supervise(self) -> None:
        """Restart workers that die, until :attr:`stop` is set."""
        waits: dict[asyncio.Future[Any], _Worker] = {}
        stop: asyncio.Future[Any] = asyncio.ensure_future(self.stop.wait())
        try:
            while not self.stop.is_set():
                for w in self.workers:
                    if w.proc is not None and all(x is not w for x in waits.values()):
                        waits[asyncio.ensure_future(w.proc.wait())] = w
                done, _ = await asyncio.wait((*waits, stop), return_when=asyncio.FIRST_COMPLETED)
                for fut in done:
                    if fut is not stop:
                        w = waits.pop(fut)
                        if not self.stop.is_set():
                            await self._restart(w, int(fut.result()))
        finally:
            stop.cancel()
            for fut in waits:
                fut.cancel()

    async def _restart(self, w: _Worker, rc: int) -> None:
        lived = self.clock() - w.started
        w.quick_deaths = 0 if lived >= _LIVED else w.quick_deaths + 1
        delay = (
            0.0
            if w.quick_deaths == 0
            else min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** (w.quick_deaths - 1))
        )
        pid = w.proc.pid if w.proc is not None else 0
        self.io.print(
            f"wxnet: worker {w.index + 1} (pid {pid}) died ({_describe(rc)}); "
            f"restarting it in {delay:g} s"
        )
        with contextlib.suppress(TimeoutError):
            await wait_for(self.stop.wait(), delay)  # no restart once stopping
        if self.stop.is_set():
            return
        self.restarts += 1
        await self._spawn(w)
        assert w.proc is not None
        waits = [
            asyncio.ensure_future(w.ready.wait()),
            asyncio.ensure_future(w.proc.wait()),
            asyncio.ensure_future(self.stop.wait()),
        ]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for t in waits:
            t.cancel()
        if w.ready.is_set():
            self.io.print(f"wxnet: worker {w.index + 1} is back (pid {w.proc.pid})")

    async def shutdown(self) -> None:
        """SIGTERM every worker, SIGKILL those still there after ``grace``; wait for all."""
        procs = [w.proc for w in self.workers if w.proc is not None]
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        waiting = [asyncio.ensure_future(p.wait()) for p in procs]
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=self.grace)
            if late:
                for p in procs:
                    if p.returncode is None:
                        self.io.error(f"worker (pid {p.pid}) did not stop in {self.grace:g} s")
                        with contextlib.suppress(ProcessLookupError):
                            p.kill()
                await asyncio.wait(waiting)
        for w in self.workers:
            if w.relay is not None:
                await w.relay  # their output ends with them
