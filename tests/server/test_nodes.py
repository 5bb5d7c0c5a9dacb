"""Two nodes sharing one PostgreSQL and one Redis, in one test process: users on
different nodes exchange texts and group messages, notifies cross over the bus, and a
lost bus message (Redis restarted) loses no message: the next sync finds it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.engines import RedisServer
from tests.server.wire import Device
from wxnet.proto import wxnet_pb2 as pb
from wxnet.server.app import Server, start_server
from wxnet.server.bus import RedisBus
from wxnet.server.config import BusConfig, ServerConfig, StoreConfig
from wxnet.sync.engine import EngineConfig

WAIT = 20.0


@pytest.fixture
async def nodes(tmp_path: Path, pg_dsn: str, redis: RedisServer) -> AsyncIterator[list[Server]]:
    out: list[Server] = []
    try:
        for name in ("a", "b"):
            cfg = ServerConfig(
                host="127.0.0.1",
                long_port=0,
                http_port=0,
                data=tmp_path / "shared",  # media: a directory both nodes see
                store=StoreConfig(kind="postgres", dsn=pg_dsn),
                bus=BusConfig(kind="redis", url=redis.url, shards=16),
                sync=EngineConfig(contacts="open"),  # consent: test_consent.py
            )
            out.append(await start_server(cfg))
            assert name
        for user in ("alice", "bob", "carol"):
            await out[0].engine.add_user(user, "secret1", user.title())
        yield out
    finally:
        for srv in out:
            await srv.close()


def bus(srv: Server) -> RedisBus:
    assert srv.bus is not None
    return srv.bus


async def on(srv: Server, user: str) -> Device:
    d = await Device.login(srv.long_port, user)
    await asyncio.wait_for(bus(srv).until_subscribed(d.acc.uin), WAIT)
    return d


async def befriend(d: Device, name: str) -> None:
    r = await d.call("verifyuser", pb.AddContactRequest(user_name=name), pb.AddContactResponse)
    assert r.base.ret == 0, r.base.err_msg


async def test_texts_and_groups_across_nodes(nodes: list[Server]) -> None:
    a, b = nodes
    alice = await on(a, "alice")
    bob = await on(b, "bob")
    carol = await on(b, "carol")
    await befriend(alice, "bob")
    await befriend(alice, "carol")
    await bob.link.next_notify()  # the contact, committed on A, notified on B
    await bob.sync()
    await alice.sync()
    # bob's contacts were cached on B before; the bus made B forget them
    r = await bob.send("alice", "hi from B", "b1")
    assert r.msg_id
    await alice.link.next_notify()
    assert [m.content for m in await alice.messages()] == ["hi from B"]
    await alice.send("bob", "hi from A", "a1")
    await bob.link.next_notify()
    assert "hi from A" in [m.content for m in await bob.messages()]
    room = await alice.call(
        "createchatroom",
        pb.CreateChatRoomRequest(topic="team", members=["bob", "carol"]),
        pb.CreateChatRoomResponse,
    )
    assert room.base.ret == 0, room.base.err_msg
    name = room.chatroom.user_name
    await carol.sync()
    r = await carol.send(name, "group hello from B", "c1")
    assert r.msg_id
    await alice.link.next_notify()
    got = await alice.messages()
    assert [(m.content, m.real_from) for m in got if m.to_user == name] == [
        ("group hello from B", "carol")
    ]
    for d in (alice, bob, carol):
        await d.close()
    assert bus(a).stats["received"] > 0 and bus(b).stats["received"] > 0


async def test_lost_bus_message_loses_no_message(nodes: list[Server], redis: RedisServer) -> None:
    a, b = nodes
    alice = await on(a, "alice")
    bob = await on(b, "bob")
    await befriend(alice, "bob")
    await bob.link.next_notify()  # the contact
    await bob.sync()
    await asyncio.to_thread(redis.stop)
    await asyncio.wait_for(bus(b).down.wait(), WAIT)
    r = await alice.send("bob", "while the bus is down", "x1")
    assert r.msg_id  # the store took it: acknowledged
    assert bob.link.notifies.empty()  # no notify crossed...
    assert [m.content for m in await bob.messages()] == [
        "while the bus is down"
    ]  # ...sync finds it
    await asyncio.to_thread(redis.start)
    await asyncio.wait_for(bus(b).up.wait(), WAIT)
    await asyncio.wait_for(bus(b).until_subscribed(bob.acc.uin), WAIT)
    await asyncio.wait_for(bus(a).up.wait(), WAIT)
    await alice.send("bob", "bus is back", "x2")
    await bob.link.next_notify()
    assert [m.content for m in await bob.messages()] == ["bus is back"]
    await alice.close()
    await bob.close()


async def test_unreachable_redis_refuses_to_start(tmp_path: Path, pg_dsn: str) -> None:
    from tests.engines import free_port
    from wxnet.proto.errors import MMError

    cfg = ServerConfig(
        host="127.0.0.1",
        long_port=0,
        http_port=0,
        data=tmp_path / "var",
        store=StoreConfig(kind="postgres", dsn=pg_dsn),
        bus=BusConfig(kind="redis", url=f"redis://127.0.0.1:{free_port()}/0"),
    )
    with pytest.raises(MMError) as ei:
        await start_server(cfg)
    assert "cannot connect to Redis" in ei.value.message


async def test_logout_on_one_node_ends_the_session_on_the_other(nodes: list[Server]) -> None:
    from tests.server.wire import LongClient
    from wxnet.proto.errors import MMRet

    a, b = nodes
    alice = await on(a, "alice")
    other = await LongClient.connect(b.long_port)  # the same session, on node B
    ident = await other.call(
        "identify", pb.IdentifyRequest(base=alice.acc.base()), pb.IdentifyResponse
    )
    assert ident.base.ret == 0, ident.base.err_msg
    assert (await b.engine.session(alice.acc.sid, alice.acc.uin)).uin == alice.acc.uin  # cached
    out = await alice.call("logout", pb.LogoutRequest(), pb.LogoutResponse)
    assert out.base.ret == 0, out.base.err_msg
    await asyncio.wait_for(other.closed.wait(), WAIT)  # B heard it over the bus
    late = await LongClient.connect(b.long_port)
    again = await late.call(
        "identify", pb.IdentifyRequest(base=alice.acc.base()), pb.IdentifyResponse
    )
    assert again.base.ret == MMRet.ERR_SESSIONTIMEOUT
    for c in (late, other, alice.link):
        await c.close()
