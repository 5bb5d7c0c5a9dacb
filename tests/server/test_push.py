"""Push with data (cmd 122) from the real server: a link that asks for it in identify gets
small new items in the push itself (no newsync), big ones and links that did not ask
get the notify (cmd 24). The SDK's side: tests/client/test_push.py."""

from __future__ import annotations

import asyncio
import dataclasses

from tests.server.wire import WAIT, Device
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.syncdriver import Committed, Held, Page, PushInbox, SyncDriver, apply_push
from wxnet.proto.synckey import SyncKey
from wxnet.server.app import Server, start_server
from wxnet.server.config import ServerConfig


async def _pushing(dev: Device, sender: Device) -> asyncio.Queue[bytes]:
    """Make ``sender`` a contact, sync ``dev`` to the head, then identify it again asking
    for pushes; returns their queue."""
    r = await sender.call(
        "verifyuser", pb.AddContactRequest(user_name=dev.acc.user_name), pb.AddContactResponse
    )
    assert r.base.ret == 0, r.base.err_msg
    await dev.sync()
    pushes: asyncio.Queue[bytes] = asyncio.Queue()
    dev.link.link.on_push = pushes.put_nowait
    ident = await dev.call(
        "identify",
        pb.IdentifyRequest(key_buf=dev.acc.key.to_bytes(), push_data=1),
        pb.IdentifyResponse,
    )
    assert ident.base.ret == 0, ident.base.err_msg
    return pushes


async def test_a_pushing_link_gets_the_message_itself_and_needs_no_newsync(
    server: Server,
) -> None:
    alice = await Device.login(server.long_port, "alice")
    bob = await Device.login(server.long_port, "bob")
    pushes = await _pushing(bob, alice)
    syncs = server.engine.stats["syncs"]
    await alice.send("bob", "hello by push", "p1")
    body = await asyncio.wait_for(pushes.get(), WAIT)
    got = apply_push(bob.acc.key.to_bytes(), pb.NewSyncResponse.FromString(body))
    assert isinstance(got, Page)
    msgs = [i.add_msg for i in got.items if i.WhichOneof("body") == "add_msg"]
    assert [(m.from_user, m.content) for m in msgs] == [("alice", "hello by push")]
    assert server.engine.stats["syncs"] == syncs  # nobody pulled
    # the key the push gave is one the server takes: newsync from it has nothing new
    bob.acc.key = type(bob.acc.key).from_bytes(got.key)
    assert await bob.messages() == []
    # alice did not ask for pushes: with a second device of hers logged in, her own
    # copy goes into her log for it (S17, S31) and her link is told to sync, as before
    alice2 = await Device.login(server.long_port, "alice", device="pad")
    while not alice.link.notifies.empty():
        alice.link.notifies.get_nowait()  # the contact's news
    await alice.send("bob", "again", "p2")
    assert await alice.link.next_notify()
    for d in (alice, alice2, bob):
        await d.close()


async def test_a_big_item_goes_by_notify_and_the_pull_brings_it(
    config: ServerConfig,
) -> None:
    srv = await start_server(dataclasses.replace(config, push_max_bytes=64))
    try:
        for name in ("alice", "bob"):
            await srv.engine.add_user(name, "secret1", name.title())
        alice = await Device.login(srv.long_port, "alice")
        bob = await Device.login(srv.long_port, "bob")
        pushes = await _pushing(bob, alice)
        await alice.send("bob", "x" * 200, "big")
        assert await bob.link.next_notify()
        assert pushes.empty()
        assert [m.content for m in await bob.messages()] == ["x" * 200]
        await alice.send("bob", "small", "s1")
        body = await asyncio.wait_for(pushes.get(), WAIT)
        page = apply_push(bob.acc.key.to_bytes(), pb.NewSyncResponse.FromString(body))
        assert isinstance(page, Page) and page.items[0].add_msg.content == "small"
        for d in (alice, bob):
            await d.close()
    finally:
        await srv.close()


async def test_a_push_during_the_pull_is_taken_when_it_ends_with_no_more_newsync(
    server: Server,
) -> None:
    """The rule every client follows (PushInbox): bob's own pull (newsync, then syncdone)
    is under way when alice sends twice: the first push comes before the newsync is
    served (the pull brings that message too), the second between its reply and the
    syncdone. Held and applied against the key the pull reached, the first is already
    had and the second is taken: each message once, and one newsync in all."""
    alice = await Device.login(server.long_port, "alice")
    bob = await Device.login(server.long_port, "bob")
    pushes = await _pushing(bob, alice)
    inbox = PushInbox()
    syncs = server.engine.stats["syncs"]
    inbox.begin()
    driver = SyncDriver(bob.acc.key.to_bytes(), base=bob.acc.base())
    newsync = driver.next_request()
    assert newsync is not None and newsync.cgi.name == "newsync"
    await alice.send("bob", "first", "h1")
    first = await asyncio.wait_for(pushes.get(), WAIT)
    assert inbox.push(driver.key, pb.NewSyncResponse.FromString(first)) == Held(1)
    page = driver.receive(await bob.link.call("newsync", newsync.request, pb.NewSyncResponse))
    assert isinstance(page, Page)
    assert [i.add_msg.content for i in page.items if i.WhichOneof("body") == "add_msg"] == ["first"]
    syncdone = driver.next_request()
    assert syncdone is not None and syncdone.cgi.name == "syncdone"
    await alice.send("bob", "second", "h2")
    second = await asyncio.wait_for(pushes.get(), WAIT)
    assert inbox.push(page.key, pb.NewSyncResponse.FromString(second)) == Held(2)
    done = driver.receive(await bob.link.call("syncdone", syncdone.request, pb.SyncDoneResponse))
    assert isinstance(done, Committed)
    (took,) = inbox.end(driver.key)
    assert isinstance(took, Page)
    assert [i.add_msg.content for i in took.items if i.WhichOneof("body") == "add_msg"] == [
        "second"
    ]
    assert server.engine.stats["syncs"] == syncs + 1  # the pull's own newsync only
    # the key the held push gave is the server's head: a newsync from it has nothing new
    bob.acc.key = SyncKey.from_bytes(took.key)
    assert await bob.messages() == []
    for d in (alice, bob):
        await d.close()
