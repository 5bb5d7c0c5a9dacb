"""``wxnet serve --workers N`` as a user runs it: a real supervisor process and its
workers on one PostgreSQL and one Redis. Connections spread over the workers
(SO_REUSEPORT), users on different workers exchange messages, a killed worker is
restarted, SIGTERM stops the whole group, a SIGKILLed supervisor leaves no orphan, and
without PostgreSQL and Redis it refuses to start, saying why."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.engines import RedisServer, free_port
from tests.server.wire import Device
from wxnet.proto import wxnet_pb2 as pb
from wxnet.server.app import make_store
from wxnet.server.config import load_config
from wxnet.sync.engine import Engine

WAIT = 60.0
BANNER = re.compile(r"long link 127\.0\.0\.1:(\d+).*HTTP http://127\.0\.0\.1:(\d+)/")
WORKERS = re.compile(r"^workers: (\d+) \(pids ([\d, ]+)\)")
BACK = re.compile(r"worker \d+ is back \(pid (\d+)\)")


def wxnet(*args: str) -> list[str]:
    return [sys.executable, "-m", "wxnet", *args]


@dataclass
class Group:
    proc: asyncio.subprocess.Process
    long_port: int = 0
    http_port: int = 0
    pids: list[int] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    async def line(self) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), WAIT)
        assert raw, f"supervisor ended: {self.lines}"
        text = raw.decode().rstrip("\n")
        self.lines.append(text)
        return text

    async def until(self, pattern: re.Pattern[str]) -> re.Match[str]:
        while True:
            m = pattern.search(await self.line())
            if m:
                return m


async def start_group(conf: Path, data: Path, workers: int = 2) -> Group:
    proc = await asyncio.create_subprocess_exec(
        *wxnet("serve", "--config", str(conf), "--data", str(data), "--host", "127.0.0.1",
               "--long-port", "0", "--http-port", "0", "--workers", str(workers)),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    g = Group(proc)
    m = BANNER.search(await g.line())
    assert m, g.lines
    g.long_port, g.http_port = int(m.group(1)), int(m.group(2))
    w = await g.until(WORKERS)
    g.pids = [int(p) for p in w.group(2).split(", ")]
    assert len(g.pids) == workers
    return g


def gone(pid: int) -> bool:
    """No such process any more (or only its zombie, waiting for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def until_gone(pids: list[int]) -> None:
    async def poll() -> None:
        while not all(gone(p) for p in pids):
            await asyncio.sleep(0.05)  # the kernel's bookkeeping, checked

    await asyncio.wait_for(poll(), WAIT)


def worker_of(pids: list[int], server_port: int, client_port: int) -> int:
    """Which worker holds the server end of the connection from ``client_port``."""
    inode = ""
    with open("/proc/net/tcp") as f:
        for row in f.readlines()[1:]:
            cols = row.split()
            local, remote = cols[1].split(":")[1], cols[2].split(":")[1]
            if int(local, 16) == server_port and int(remote, 16) == client_port:
                inode = cols[9]
    assert inode, "connection not found"
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except FileNotFoundError:
                continue
    raise AssertionError("no worker holds the connection")


def link_port(d: Device) -> int:
    assert d.link.link.transport is not None
    return int(d.link.link.transport.get_extra_info("sockname")[1])


async def healthz_pids(port: int, n: int = 40) -> set[int]:
    seen: set[int] = set()
    for _ in range(n):  # a new connection each: the kernel picks a worker per connection
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{port}/healthz") as r,
        ):
            seen.add(int((await r.json())["pid"]))
    return seen


@pytest.fixture
def conf(tmp_path: Path, pg_dsn: str, redis_server: RedisServer) -> Path:
    path = tmp_path / "wxnet.toml"
    path.write_text(
        f'[store]\nkind = "postgres"\ndsn = "{pg_dsn}"\n'
        f'[bus]\nkind = "redis"\nurl = "{redis_server.url}"\nshards = 16\n'
        '[sync]\ncontacts = "open"\n'
    )
    return path


async def add_users(conf: Path, *names: str) -> None:
    """Accounts in the group's PostgreSQL (what ``wxnet user add --config`` does)."""
    cfg = load_config(conf)
    engine = Engine(cfg.data, cfg.sync, store=make_store(cfg))
    await engine.start()
    try:
        for name in names:
            await engine.add_user(name, "secret1")
    finally:
        await engine.aclose()


async def test_workers_share_the_ports_restart_and_stop_together(
    conf: Path, tmp_path: Path
) -> None:
    await add_users(conf, "alice", "bob")
    g = await start_group(conf, tmp_path / "var")
    try:
        assert await healthz_pids(g.http_port) == set(g.pids)  # both answer on one port
        bob = await Device.login(g.long_port, "bob")
        bob_at = worker_of(g.pids, g.long_port, link_port(bob))
        for _ in range(20):  # log alice in until the kernel puts her on the other worker
            alice = await Device.login(g.long_port, "alice")
            if worker_of(g.pids, g.long_port, link_port(alice)) != bob_at:
                break
            await alice.close()
        assert worker_of(g.pids, g.long_port, link_port(alice)) != bob_at
        r = await alice.call(
            "verifyuser", pb.AddContactRequest(user_name="bob"), pb.AddContactResponse
        )
        assert r.base.ret == 0, r.base.err_msg
        await bob.link.next_notify()
        await bob.sync()
        assert (await alice.send("bob", "across workers", "w1")).msg_id
        await asyncio.wait_for(bob.link.next_notify(), WAIT)  # over Redis
        assert [m.content for m in await bob.messages()] == ["across workers"]
        await alice.close()
        await bob.close()

        os.kill(bob_at, signal.SIGKILL)
        back = int((await g.until(BACK)).group(1))
        assert back not in g.pids
        pids = [back if p == bob_at else p for p in g.pids]
        assert await healthz_pids(g.http_port) == set(pids)

        g.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(g.proc.wait(), WAIT) == 0
        await until_gone(pids)  # the whole group, nothing left behind
    finally:
        if g.proc.returncode is None:
            g.proc.kill()
            await g.proc.wait()


async def test_a_killed_supervisor_leaves_no_orphan(conf: Path, tmp_path: Path) -> None:
    g = await start_group(conf, tmp_path / "var")
    g.proc.kill()
    await g.proc.wait()
    await until_gone(g.pids)  # PR_SET_PDEATHSIG: the workers went with it


def test_workers_need_postgres_and_redis(tmp_path: Path) -> None:
    res = subprocess.run(
        wxnet("serve", "--data", str(tmp_path / "var"), "--workers", "2"),
        capture_output=True, text=True, timeout=WAIT,
    )  # fmt: skip
    assert res.returncode == 2
    assert "workers = 2 needs the PostgreSQL store" in res.stderr
    assert "and the Redis bus" in res.stderr
    assert "Traceback" not in res.stderr


def test_workers_that_cannot_start_stop_the_group(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    conf = tmp_path / "wxnet.toml"
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    conf.write_text(
        f'[store]\nkind = "postgres"\ndsn = "{dead}"\ntimeout = 1.0\n'
        f'[bus]\nkind = "redis"\nurl = "{redis_server.url}"\n'
    )
    res = subprocess.run(
        wxnet("serve", "--config", str(conf), "--data", str(tmp_path / "var"),
              "--long-port", "0", "--http-port", "0", "--workers", "2"),
        capture_output=True, text=True, timeout=WAIT,
    )  # fmt: skip
    assert res.returncode == 1
    assert "cannot start: the store is unavailable (cannot connect to PostgreSQL" in res.stderr
    assert "exited before it listened" in res.stderr
    assert "wxnet serving" not in res.stdout
