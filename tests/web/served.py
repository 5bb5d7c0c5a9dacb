"""A real ``wxnet serve`` process for the abuse tests: its own data directory, a TOML
config, users added with ``wxnet user add``, stderr (JSON logs) kept in a file so that a
test can check no request ended in a traceback, and its memory read from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.web.conftest import WAIT

USERS = ("alice", "bob", "carol")


def wxnet(*args: str) -> list[str]:
    return [sys.executable, "-m", "wxnet", *args]


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    base: str
    data: Path
    log: Path

    def rss(self) -> int:
        """The server's resident memory now, in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    async def metrics(self) -> dict[str, float]:
        """``/metrics`` as {"name{labels}": value}."""
        async with aiohttp.ClientSession() as h, h.get(self.base + "/metrics") as r:
            text = await r.text()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def tracebacks(self) -> list[str]:
        """Log lines that carry a traceback (there must be none)."""
        return [line for line in self.log.read_text().splitlines() if "Traceback" in line]


@contextlib.asynccontextmanager
async def served(
    tmp_path: Path, *, web: str = "", sync: str = "", users: tuple[str, ...] = USERS
) -> AsyncIterator[Served]:
    """Start ``wxnet serve`` on 127.0.0.1 with ``web`` and ``sync`` (TOML lines of the
    ``[web]`` and ``[sync]`` sections) and ``users`` (password ``secret1``); stop it with
    SIGTERM afterwards."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "served"
    cfg = tmp_path / "served.toml"
    cfg.write_text(f'[sync]\ndurability = "NORMAL"\ncontacts = "open"\n{sync}\n[web]\n{web}\n')
    init = await asyncio.create_subprocess_exec(
        *wxnet("store", "init", "--data", str(data)), stdout=asyncio.subprocess.DEVNULL
    )
    assert await init.wait() == 0
    adds = [
        await asyncio.create_subprocess_exec(
            *wxnet("user", "add", name, "--password", "secret1", "--nick", name.title()),
            "--data",
            str(data),
            stdout=asyncio.subprocess.DEVNULL,
        )
        for name in users
    ]
    assert [await p.wait() for p in adds] == [0] * len(adds)
    log = tmp_path / "served.log"
    with open(log, "wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *wxnet(
                "serve",
                "--config",
                str(cfg),
                "--data",
                str(data),
                "--host",
                "127.0.0.1",
                "--long-port",
                "0",
                "--http-port",
                "0",
            ),
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), WAIT)).decode()
        m = re.search(r"HTTP http://127\.0\.0\.1:(\d+)/", line)
        assert m, line + log.read_text()
        yield Served(proc, f"http://127.0.0.1:{m.group(1)}", data, log)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), WAIT)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def client_from(address: str) -> aiohttp.ClientSession:
    """An HTTP client whose connections come from ``address`` (any of 127.0.0.0/8), so
    that per-address limits see an attacker and a user as different peers."""
    conn = aiohttp.TCPConnector(local_addr=(address, 0), force_close=False)
    return aiohttp.ClientSession(connector=conn, cookie_jar=aiohttp.CookieJar(unsafe=True))
