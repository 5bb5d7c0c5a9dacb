"""The web side through ``wxnet serve --workers 2`` on PostgreSQL and Redis, as a user
runs it: an unmodified itchat logs in with a QR code that the phone approves through
the *other* worker (the login is in the store; the wake-up crosses over Redis), then
chats; and the per-address ``/jslogin`` limit holds for both workers together."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.engines import RedisServer
from tests.server.test_workers import Group, add_users, start_group, worker_of
from tests.web.clients import HARNESS, Harness, python_client
from tests.web.conftest import WAIT, Mobile
from wxnet.proto import web as wp
from wxnet.proto import wxnet_pb2 as pb


class Conn:
    """One HTTP/1.1 keep-alive connection, on the worker that accepted it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.pid = 0

    @classmethod
    async def on(cls, port: int, pid: int, source: str = "127.0.0.1") -> Conn:
        """A connection that the kernel gave to worker ``pid`` (new ones until it does)."""
        for _ in range(200):
            c = cls(*await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)))
            _, body = await c.request("GET", "/healthz")
            c.pid = int(json.loads(body)["pid"])
            if c.pid == pid:
                return c
            c.close()
        raise AssertionError(f"no connection reached worker {pid}")

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def peer_ports(pid: int, server_port: int) -> set[int]:
    """Local ports of process ``pid``'s TCP connections to ``server_port``."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    with open("/proc/net/tcp") as f:
        for row in f.readlines()[1:]:
            cols = row.split()
            if int(cols[2].split(":")[1], 16) == server_port and cols[9] in inodes:
                ports.add(int(cols[1].split(":")[1], 16))
    return ports


@pytest.fixture
async def group(tmp_path: Path, pg_dsn: str, redis_server: RedisServer) -> AsyncIterator[Group]:
    conf = tmp_path / "wxnet.toml"
    conf.write_text(
        f'[store]\nkind = "postgres"\ndsn = "{pg_dsn}"\n'
        f'[bus]\nkind = "redis"\nurl = "{redis_server.url}"\nshards = 16\n'
        '[sync]\ncontacts = "open"\n[web]\njslogin_burst = 6\njslogin_rate = 0.001\n'
    )
    await add_users(conf, "alice", "bob")
    g = await start_group(conf, tmp_path / "var")
    try:
        yield g
    finally:
        if g.proc.returncode is None:
            g.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(g.proc.wait(), WAIT)
            except TimeoutError:
                g.proc.kill()
                await g.proc.wait()


async def scan_on(conn: Conn, phone: Mobile, uuid: str) -> int:
    req = pb.ScanQrRequest(uuid=uuid, confirm=True)
    req.base.session_key, req.base.uin = phone.session_key, phone.uin
    status, body = await conn.request(
        "POST", "/cgi-bin/micromsg-bin/scanqrcode", req.SerializeToString()
    )
    assert status == 200
    return int(pb.ScanQrResponse.FromString(body).base.ret)


@pytest.mark.slow
async def test_itchat_logs_in_and_chats_through_two_workers(group: Group, tmp_path: Path) -> None:
    import aiohttp

    base = f"http://127.0.0.1:{group.http_port}"
    py = await asyncio.to_thread(python_client, "itchat")
    argv = [str(py), str(HARNESS / "itchat_harness.py"), base, str(tmp_path)]
    async with aiohttp.ClientSession() as http:
        alice = await Mobile(http, base, "alice").login()
        await alice.add("bob")
        bob = await Mobile(http, base, "bob").login()
        bot = await Harness.start("itchat", argv, tmp_path)
        try:
            qr = await bot.expect("qr")
            assert bot.proc.pid is not None
            itchat_at = {
                worker_of(group.pids, group.http_port, p)
                for p in peer_ports(bot.proc.pid, group.http_port)
            }
            assert itchat_at, "itchat holds no connection"
            other = [p for p in group.pids if p not in itchat_at]
            conn = await Conn.on(group.http_port, other[0] if other else group.pids[0])
            try:
                assert await scan_on(conn, alice, qr["uuid"]) == 0
            finally:
                conn.close()
            if other:  # the approval went through a worker itchat was not polling
                assert conn.pid not in itchat_at
            await bot.expect("login")
            await bob.send("alice", "hello through two workers")
            m = await bot.expect("message", lambda e: e.get("text") == "hello through two workers")
            assert m["from"] == wp.web_user_name("bob")
            await bot.send(op="send", to="bob", text="and back")  # add_users: nick = name
            assert (await bot.expect("sent"))["ret"] == 0
            got = await bob.wait_msg(lambda x: x.content == "and back")
            assert got.from_user == "alice"
        finally:
            await bot.close()


async def test_jslogin_limit_counts_both_workers(group: Group) -> None:
    """Six /jslogin per address in a burst, for the whole group: alternating between the
    workers does not double it (each worker alone would allow six)."""
    conns = [await Conn.on(group.http_port, pid, "127.0.7.1") for pid in group.pids]
    try:
        codes = [
            (await conns[i % 2].request("GET", "/jslogin?appid=x&fun=new"))[0] for i in range(8)
        ]
    finally:
        for c in conns:
            c.close()
    assert codes == [200] * 6 + [429] * 2
