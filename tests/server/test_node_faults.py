"""Faults of a two-node deployment, as real ``wxnet serve`` processes on one PostgreSQL
and one Redis, with the exactly-once bar of the SQLite SIGKILL test
(``test_durability.py``):

* one node SIGKILLed under load: its clients move to the other node and resend what was
  not acknowledged (same ClientMsgId); every acknowledged message is delivered exactly
  once, with its acknowledged id, through the surviving node;
* Redis restarted under load: sends keep being acknowledged (the store has them), no
  acknowledged message is lost, and notifies across nodes resume;
* a message sent while the recipient's node restarts reaches its users when they
  reconnect;
* PostgreSQL restarted under load: while it is down every send is answered ERR_SYS with
  no message id (never an ack), the client's retries after it is back are stored once,
  every acknowledged message reaches the other node's user exactly once with its
  acknowledged id, and notifies across the nodes resume."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bench.spawn import ServerProcess
from tests.engines import PostgresServer, RedisServer
from tests.server.wire import Device
from wxnet._compat import wait_for
from wxnet.client.errors import TransportError
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMError, MMRet
from wxnet.server.app import make_store
from wxnet.server.config import load_config
from wxnet.sync.engine import Engine

WAIT = 60.0


@pytest.fixture
async def conf(tmp_path: Path, pg_dsn: str, redis: RedisServer) -> AsyncIterator[Path]:
    yield await node_config(tmp_path, pg_dsn, redis)


async def node_config(tmp_path: Path, pg_dsn: str, redis: RedisServer) -> Path:
    """The nodes' config on ``pg_dsn`` and ``redis``, with alice and bob in the store."""
    path = tmp_path / "node.toml"
    path.write_text(
        f'[store]\nkind = "postgres"\ndsn = "{pg_dsn}"\n'
        f'[bus]\nkind = "redis"\nurl = "{redis.url}"\nshards = 16\n'
        '[sync]\ncontacts = "open"\n'
    )
    cfg = load_config(path)
    engine = Engine(tmp_path / "var", cfg.sync, store=make_store(cfg))
    await engine.start()
    try:
        for name in ("alice", "bob"):
            await engine.add_user(name, "secret1")
    finally:
        await engine.aclose()
    return path


async def node(conf: Path, data: Path) -> ServerProcess:
    args = ["--config", str(conf), "--data", str(data), "--host", "127.0.0.1"]
    return await ServerProcess([*args, "--long-port", "0", "--http-port", "0"]).astart(WAIT)


async def until(pred: Callable[[], bool]) -> None:
    async def poll() -> None:
        while not pred():
            await asyncio.sleep(0.005)  # the senders' progress, checked (as test_durability)

    await wait_for(poll(), WAIT)


class Load:
    """Four concurrent senders from one device; acks and failures recorded."""

    def __init__(self, dev: Device) -> None:
        self.dev = dev
        self.acked: dict[str, int] = {}
        self.attempted: list[str] = []
        self.stop = asyncio.Event()
        self.tasks = [asyncio.ensure_future(self._sender(w)) for w in range(4)]

    async def _sender(self, w: int) -> None:
        i = 0
        while not self.stop.is_set():
            cid = f"w{w}-{i}"
            self.attempted.append(cid)
            try:
                r = await self.dev.send("bob", cid, cid)
            except TransportError:  # the link died under the kill
                return
            assert r.ret == 0
            assert self.acked.setdefault(cid, r.msg_id) == r.msg_id
            i += 1

    async def finish(self) -> None:
        self.stop.set()
        await wait_for(asyncio.gather(*self.tasks), WAIT)


async def test_sigkill_of_one_node_under_load_exactly_once_through_the_other(
    conf: Path, tmp_path: Path
) -> None:
    a = await node(conf, tmp_path / "var")
    b = await node(conf, tmp_path / "var")
    try:
        bob = await Device.login(b.long_port, "bob")
        alice = await Device.login(a.long_port, "alice")
        r = await alice.call(
            "verifyuser", pb.AddContactRequest(user_name="bob"), pb.AddContactResponse
        )
        assert r.base.ret == 0
        load = Load(alice)
        await until(lambda: len(load.acked) >= 200)
        os.kill(a.pid, signal.SIGKILL)  # while sends are in flight
        await load.finish()
        await alice.close()
        assert len(load.acked) < len(load.attempted)  # some were cut off unacknowledged
        # alice's client falls back to the other node, and resends what was in flight
        again = await Device.login(b.long_port, "alice")
        for cid in load.attempted:
            out = await again.send("bob", cid, cid)
            assert out.ret == 0 and load.acked.get(cid, out.msg_id) == out.msg_id
        msgs = await bob.messages()
        got = [m.client_msg_id for m in msgs]
        assert len(got) == len(set(got)), "a message was delivered twice"
        assert sorted(got) == sorted(load.attempted)
        assert {m.client_msg_id: m.msg_id for m in msgs if m.client_msg_id in load.acked} == (
            load.acked
        )
        await again.close()
        await bob.close()
    finally:
        a.kill()
        assert await b.astop(WAIT) == 0


async def test_redis_restart_under_load_and_a_node_restart(
    conf: Path, tmp_path: Path, redis: RedisServer
) -> None:
    a = await node(conf, tmp_path / "var")
    b = await node(conf, tmp_path / "var")
    try:
        bob = await Device.login(b.long_port, "bob")
        alice = await Device.login(a.long_port, "alice")
        r = await alice.call(
            "verifyuser", pb.AddContactRequest(user_name="bob"), pb.AddContactResponse
        )
        assert r.base.ret == 0
        await bob.link.next_notify()
        await bob.sync()
        load = Load(alice)
        await until(lambda: len(load.acked) >= 100)
        await asyncio.to_thread(redis.stop)
        n = len(load.acked)
        await until(lambda: len(load.acked) >= n + 100)  # acks go on without the bus
        await asyncio.to_thread(redis.start)
        await load.finish()
        assert sorted(load.acked) == sorted(load.attempted)  # nothing failed
        got = [m.client_msg_id for m in await bob.messages()]
        assert sorted(got) == sorted(load.acked)  # exactly once, nothing lost
        while not bob.link.notifies.empty():  # notifies from before the restart
            bob.link.notifies.get_nowait()

        async def notified_after_the_restart() -> None:
            i = 0
            while True:  # both nodes resubscribe on their own time: send until one crosses
                await alice.send("bob", f"after {i}", f"after-{i}")
                i += 1
                try:
                    await wait_for(bob.link.next_notify(), 0.5)
                    return
                except TimeoutError:
                    continue

        await wait_for(notified_after_the_restart(), WAIT)
        assert (await bob.messages())[-1].content.startswith("after ")

        # bob's node restarts; a message sent meanwhile waits for him in the store
        await bob.close()
        assert await b.astop(WAIT) == 0
        assert (await alice.send("bob", "while B restarts", "r1")).msg_id
        b = await node(conf, tmp_path / "var")
        bob = await Device.login(b.long_port, "bob")
        assert "while B restarts" in [m.content for m in await bob.messages()]
        await alice.close()
        await bob.close()
    finally:
        assert await a.astop(WAIT) == 0
        b.kill()


async def test_postgres_restart_under_load_across_two_nodes(
    tmp_path: Path, redis: RedisServer
) -> None:
    pg = PostgresServer()  # of this test alone: it is stopped and started again
    pg.start()
    try:
        conf = await node_config(tmp_path, pg.new_database(), redis)
        a = await node(conf, tmp_path / "var")
        b = await node(conf, tmp_path / "var")
        try:
            await _postgres_restart(pg, a, b)
        finally:
            assert await a.astop(WAIT) == 0
            assert await b.astop(WAIT) == 0
    finally:
        pg.close()


async def _postgres_restart(pg: PostgresServer, a: ServerProcess, b: ServerProcess) -> None:
    bob = await Device.login(b.long_port, "bob")
    alice = await Device.login(a.long_port, "alice")
    r = await alice.call("verifyuser", pb.AddContactRequest(user_name="bob"), pb.AddContactResponse)
    assert r.base.ret == 0
    acked: dict[str, int] = {}
    failed: set[str] = set()
    stop = asyncio.Event()

    async def send(cid: str) -> bool:
        out = await alice.call(
            "newsendmsg",
            pb.SendMsgRequest(
                list=[pb.MicroMsg(to_user="bob", content=cid, msg_type=1, client_msg_id=cid)]
            ),
            pb.SendMsgResponse,
        )
        if out.base.ret == 0:
            assert out.list[0].ret == 0 and out.list[0].msg_id
            assert acked.setdefault(cid, out.list[0].msg_id) == out.list[0].msg_id
            failed.discard(cid)
            return True
        # a clean failure: the store's error, and nothing reported as sent
        assert out.base.ret == MMRet.ERR_SYS and "unavailable" in out.base.err_msg, out.base
        assert not any(x.msg_id for x in out.list)
        assert cid not in acked
        failed.add(cid)
        return False

    async def sender(w: int) -> None:
        i = 0
        while not stop.is_set():
            await send(f"w{w}-{i}")
            i += 1

    senders = [asyncio.ensure_future(sender(w)) for w in range(4)]
    try:
        await until(lambda: len(acked) >= 50)
        await asyncio.to_thread(pg.stop, "immediate")
        await until(lambda: len(failed) >= 8)  # sends fail, they do not hang
        await asyncio.to_thread(pg.start)
        n = len(acked)
        await until(lambda: len(acked) >= n + 50)  # node A's pool came back by itself
    finally:
        stop.set()
        await wait_for(asyncio.gather(*senders), WAIT)
    for cid in sorted(failed):  # the client's retries, same ClientMsgId
        for _ in range(10):  # each dead pooled connection fails once, then is replaced
            if await send(cid):
                break
    assert not failed
    msgs: list[pb.AddMsg] = []
    for _ in range(10):  # node B's pool also fails once per dead connection
        try:
            msgs += await bob.messages()
            break
        except MMError as exc:  # a dead pooled connection, replaced for the next try
            assert exc.code == MMRet.ERR_SYS, exc
            continue
    got = [m.client_msg_id for m in msgs]
    assert len(got) == len(set(got)), "a message was delivered twice"
    assert sorted(got) == sorted(acked)  # every ack kept, nothing unacked among them
    assert {m.client_msg_id: m.msg_id for m in msgs} == acked
    while not bob.link.notifies.empty():  # notifies from before and during the outage
        bob.link.notifies.get_nowait()
    assert (await alice.send("bob", "after", "after")).msg_id
    await wait_for(bob.link.next_notify(), WAIT)  # across the nodes, as before
    assert [m.content for m in await bob.messages()] == ["after"]
    await alice.close()
    await bob.close()
