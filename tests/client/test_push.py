"""The SDK over push with data (cmd 122): it asks for pushes in identify, takes the
pushed messages once, and commits their key in one batched syncdone."""

from __future__ import annotations

import pytest

from tests.client.conftest import FAST, Clients, history_ids, until
from wxnet.client import syncer
from wxnet.client.sdk import ClientConfig
from wxnet.server.app import Server


async def test_the_sdk_takes_pushes_once_and_commits_their_key(
    server: Server, clients: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(syncer, "COMMIT_DELAY", 0.05)
    cfg = ClientConfig(server_url=f"http://127.0.0.1:{server.http_port}").replace(**FAST)
    alice = await clients.new("alice", config=cfg)
    bob = await clients.new("bob", config=cfg)
    await alice.add_contact("bob")
    await until(bob, lambda: bob.links.long is not None, "bob's long link")
    await until(bob, lambda: "alice" in {c.user_name for c in bob.store.contacts()}, "the contact")
    want: list[int] = []
    for i in range(3):
        # bob idle (no sync of his own under way): the push is taken as it is
        await until(bob, lambda: not bob.syncer.busy, "bob's syncer to be idle")
        want.append((await alice.send_text("bob", f"m{i}")).msg_id)
        await until(bob, lambda: history_ids(bob, "alice") == want, f"bob to get m{i}")
    assert bob.syncer.pushes["applied"] >= 1, bob.syncer.pushes
    uin, device = bob.store.session().uin, bob.store.session().device_id  # type: ignore[union-attr]

    # the engine's record of the device's committed key (S31), set by its syncdone
    def committed() -> bool:
        return server.engine._committed.get((uin, device)) == bob.store.synckey()

    await until(bob, committed, "the pushed key to be committed")
