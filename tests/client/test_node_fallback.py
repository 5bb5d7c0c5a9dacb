"""A client whose node dies moves to another node by the fallback it already has: two
nodes share one PostgreSQL and one Redis, newgetdns lists both, the SDK's long link is
on one of them; that node stops and the client goes on through the other (its cached
newgetdns list), sending and receiving."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.client.conftest import FAST, PASSWORD, Clients, history_ids, server_config, until
from tests.engines import RedisServer, free_port
from wxnet.client.sdk import Client, ClientConfig
from wxnet.server.app import Server, start_server
from wxnet.server.config import BusConfig, DnsConfig, StoreConfig


@pytest.fixture
async def nodes(
    tmp_path: Path, pg_dsn: str, redis_server: RedisServer
) -> AsyncIterator[list[Server]]:
    longs, https = (free_port(), free_port()), (free_port(), free_port())
    dns = DnsConfig(long_addresses=("127.0.0.1",), long_ports=longs,
                    short_addresses=("127.0.0.1",), short_ports=https)  # fmt: skip
    out: list[Server] = []
    try:
        for lp, hp in zip(longs, https, strict=True):
            cfg = dataclasses.replace(
                server_config(tmp_path, dns=dns),
                long_port=lp,
                http_port=hp,
                store=StoreConfig(kind="postgres", dsn=pg_dsn),
                bus=BusConfig(kind="redis", url=redis_server.url, shards=16),
            )
            out.append(await start_server(cfg))
        for name in ("alice", "bob"):
            await out[0].engine.add_user(name, PASSWORD, name.title())
        yield out
    finally:
        for srv in out:
            await srv.close()


def long_port(c: Client) -> int:
    lk = c.links.long
    return lk.address.port if lk is not None and lk.is_open else 0


async def test_a_client_whose_node_dies_moves_to_the_other(
    nodes: list[Server], clients: Clients
) -> None:
    a, b = nodes
    to_a = ClientConfig(server_url=f"http://127.0.0.1:{a.http_port}").replace(**FAST)
    alice = await clients.new("alice", config=to_a)
    bob = await clients.new("bob", config=to_a)
    await alice.add_contact("bob")
    ports = {srv.long_port: srv for srv in nodes}
    await until(alice, lambda: long_port(alice) in ports, "alice's long link")
    dead = ports[long_port(alice)]  # the node alice's long link is on
    alive = b if dead is a else a
    first = await alice.send_text("bob", "before")
    assert first.state == "sent"
    await until(bob, lambda: first.msg_id in history_ids(bob, "alice"), "bob to get it")
    await dead.close()  # that node goes away: its links close, it listens no more
    nodes.remove(dead)
    await until(alice, lambda: long_port(alice) == alive.long_port, "alice to move over")
    r = await bob.send_text("alice", "your node is gone")
    assert r.state == "sent"
    await until(alice, lambda: r.msg_id in history_ids(alice, "bob"), "alice, via the other")
    again = await alice.send_text("bob", "still here")
    assert again.state == "sent"
    await until(bob, lambda: again.msg_id in history_ids(bob, "alice"), "bob, from alice")
