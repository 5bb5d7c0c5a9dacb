"""The one way benches and tests start a throw-away ``wxnet serve`` and learn its ports.

The server prints where it really listens as the first line of its banner
(``wxnet serving: long link HOST:PORT, ..., HTTP http://HOST:PORT/ ...``, docs/server.md);
:func:`parse_banner` reads it. A thread keeps draining the child's output afterwards (a
full pipe would stall the server) and keeps the last lines for error messages.

    with ServerProcess.on_data(data).start() as srv:
        ... srv.long_port, srv.http_port, srv.cpu(), srv.metric("wxnet_db_commits") ...

``python_path`` runs another checkout's server (``PYTHONPATH=<it>/src``), for benchmarks
that compare two builds side by side with the same load generator.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["ServerProcess", "SpawnError", "parse_banner", "proc_cpu", "rss_kib"]

_BANNER = re.compile(
    r"wxnet serving: long link \[?[^\s\]]*?\]?:(\d+)\b.*?HTTP http://\[?[^\s\]/]*?\]?:(\d+)"
)


class SpawnError(RuntimeError):
    """The server did not start (or did not say where it listens) in time."""


def parse_banner(line: str) -> tuple[int, int] | None:
    """(long_port, http_port) from the serve banner's first line, or None."""
    m = _BANNER.search(line)
    return (int(m.group(1)), int(m.group(2))) if m else None


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its live children (``serve --workers N``: the
    supervisor and its workers; a single server has none)."""
    total = proc_cpu(pid)
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and d.name != str(pid):
            try:
                stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                total += (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB, from /proc."""
    m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    if m is None:
        raise SpawnError(f"no VmRSS for process {pid}")
    return int(m.group(1))


class ServerProcess:
    """``python -m wxnet serve ARGS`` as a child process."""

    def __init__(self, args: Sequence[str], *, python_path: str | None = None) -> None:
        self.args = list(args)
        self.python_path = python_path
        self.proc: subprocess.Popen[str] | None = None
        self.long_port = 0
        self.http_port = 0
        self.output: collections.deque[str] = collections.deque(maxlen=40)
        self._ready = threading.Event()
        self._drainer: threading.Thread | None = None

    @classmethod
    def on_data(cls, data: Path, *extra: str, python_path: str | None = None) -> ServerProcess:
        """A server on loopback, any free ports, store in ``data``."""
        args = ["--data", str(data), "--host", "127.0.0.1", "--long-port", "0"]
        return cls([*args, "--http-port", "0", *extra], python_path=python_path)

    @classmethod
    def on_config(cls, config: Path, python_path: str | None = None) -> ServerProcess:
        return cls(["--config", str(config)], python_path=python_path)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise SpawnError("the server is not started")
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> ServerProcess:
        """Start it and wait (at most ``timeout``) for the banner.

        Raises:
            SpawnError: it exited or stayed silent; the message holds its last output.
        """
        env = dict(os.environ)
        if self.python_path:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (self.python_path, env.get("PYTHONPATH")) if p
            )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wxnet", "serve", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self._drainer = threading.Thread(target=self._drain, args=(self.proc,), daemon=True)
        self._drainer.start()
        if not self._ready.wait(timeout) or not self.long_port:
            self.kill()
            tail = "".join(self.output)[-2000:]
            raise SpawnError(f"the server did not report its ports in {timeout} s:\n{tail}")
        return self

    def _drain(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                self.output.append(line)
                if not self._ready.is_set() and (ports := parse_banner(line)) is not None:
                    self.long_port, self.http_port = ports
                    self._ready.set()
        self._ready.set()  # it exited: start() stops waiting

    def _reaped(self) -> None:
        # The child is gone: its output ends, and the drain thread closes the pipe.
        if self._drainer is not None:
            self._drainer.join(10)

    async def astart(self, timeout: float = 30.0) -> ServerProcess:
        """:meth:`start` without blocking the event loop."""
        return await asyncio.to_thread(self.start, timeout)

    def cpu(self) -> float:
        return proc_cpu(self.pid)

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def metric(self, name: str) -> float:
        """One unlabelled sample from the server's /metrics (NaN when absent)."""
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        return float(m.group(1)) if m else float("nan")

    def kill(self) -> None:
        """SIGKILL (a crash), and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reaped()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for a clean exit (SIGKILL after ``timeout``); the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reaped()
        return self.proc.returncode

    async def astop(self, timeout: float = 30.0) -> int:
        return await asyncio.to_thread(self.stop, timeout)

    async def wait(self) -> int:
        """Wait for the process to end by itself (after :meth:`kill`, say)."""
        proc = self.proc
        if proc is None:
            return 0
        code = await asyncio.to_thread(proc.wait)
        await asyncio.to_thread(self._reaped)
        return code

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
