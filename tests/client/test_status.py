"""``Client.status()`` reports what is true: the last heartbeat reply is kept in the
profile (a short-lived ``wxnet status`` reads what a long-running ``listen`` saw)."""

from __future__ import annotations

import asyncio

from tests.client.conftest import FAST, WAIT, Clients
from wxnet._compat import wait_for
from wxnet.client.sdk import Client, ClientConfig
from wxnet.server.app import Server


async def test_the_last_heartbeat_outlives_the_process(server: Server, clients: Clients) -> None:
    cfg = ClientConfig(server_url=f"http://127.0.0.1:{server.http_port}").replace(
        **FAST, noop_interval=0.2
    )
    alice = await clients.new("alice", config=cfg)
    assert await alice.wait_long_link(WAIT)
    link = alice.long
    assert link is not None
    if link.last_heartbeat is None:
        assert alice.status()["last_heartbeat"] is None  # none yet: true, not a made-up one
        # Told when the real noop reply arrives (the link records its time in that step).
        replied = asyncio.Event()
        timer = link.heartbeat
        on_reply = timer.on_noop_reply

        def spy(now: float) -> None:
            on_reply(now)
            replied.set()

        timer.on_noop_reply = spy  # type: ignore[method-assign]
        await wait_for(replied.wait(), WAIT)
    assert link.last_heartbeat is not None
    seen = alice.status()["last_heartbeat"]
    assert seen == link.last_heartbeat
    await alice.close()
    clients.all.remove(alice)
    # Another process, offline: the saved heartbeat is still there.
    later = Client(alice.store)
    st = later.status()
    assert st["last_heartbeat"] is not None and st["last_heartbeat"] >= seen
