"""Contacts need consent (issue 12), against a real ``wxnet serve`` in its default
``contacts = "request"`` mode: a stranger can ask, and nothing more, until the other
side accepts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server.realserver import RealServer
from tests.server.wire import Device
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMRet

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    srv = RealServer(tmp_path_factory.mktemp("consent") / "var", '[sync]\ndurability = "NORMAL"\n')
    srv.user_add("alice", "bob", "carol", "mallory")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


async def add(dev: Device, name: str, opcode: int = 2, greeting: str = "") -> pb.AddContactResponse:
    return await dev.call(
        "verifyuser",
        pb.AddContactRequest(user_name=name, opcode=opcode, verify_content=greeting),
        pb.AddContactResponse,
    )


def kinds(items: list[pb.CmdItem]) -> list[str]:
    return [str(i.WhichOneof("body")) for i in items]


async def test_a_stranger_can_ask_and_nothing_more(real: RealServer) -> None:
    alice = await Device.login(real.long_port, "alice")
    mallory = await Device.login(real.long_port, "mallory")
    await alice.sync()
    await mallory.sync()
    # the request: pending, and one VERIFYMSG item in alice's message log, sent once
    r = await add(mallory, "alice", greeting="hi, it's mallory")
    assert r.base.ret == 0 and r.pending
    assert (await add(mallory, "alice", greeting="again")).pending
    got = await alice.sync()
    requests = [i.add_msg for i in got if i.WhichOneof("body") == "add_msg"]
    assert [(m.from_user, m.msg_type, m.content) for m in requests] == [
        ("mallory", 37, "hi, it's mallory")
    ]
    # until alice accepts: no message, no group, no read receipt reaches her
    sent = await mallory.send("alice", "buy now", "spam-1")
    assert sent.ret == MMRet.ERR_NOT_FRIEND
    room = await mallory.call(
        "createchatroom",
        pb.CreateChatRoomRequest(topic="deals", members=["alice"]),
        pb.CreateChatRoomResponse,
    )
    assert room.base.ret == MMRet.ERR_NOT_FRIEND
    receipt = await mallory.call(
        "statusnotify", pb.MarkReadRequest(talker="alice", last_msg_id=1), pb.MarkReadResponse
    )
    assert receipt.base.ret == 0  # her own devices hear of it; alice does not
    assert await alice.sync() == []
    assert "contact" not in kinds(await mallory.sync())
    # a request nobody sent cannot be "accepted"
    forged = await add(mallory, "bob", opcode=3)
    assert forged.base.ret == MMRet.ERR_NOT_FOUND
    # mallory cannot forge a request by sending herself a message with its id
    self_msg = await mallory.send("mallory", "x", "verify:bob")
    assert self_msg.ret == 0
    bob = await Device.login(real.long_port, "bob")
    assert (await add(bob, "mallory")).pending  # still only a request
    for d in (alice, mallory, bob):
        await d.close()


async def test_accepting_makes_contacts_both_ways(real: RealServer) -> None:
    carol = await Device.login(real.long_port, "carol")
    bob = await Device.login(real.long_port, "bob", device="tablet")
    await carol.sync()
    await bob.sync()
    assert (await add(carol, "bob", greeting="carol here")).pending
    accepted = await add(bob, "carol", opcode=3)
    assert accepted.base.ret == 0 and not accepted.pending
    assert accepted.contact.user_name == "carol"
    await carol.link.next_notify()
    assert "contact" in kinds(await carol.sync())
    assert "contact" in kinds(await bob.sync())
    sent = await carol.send("bob", "hello bob", "c-1")
    assert sent.ret == 0
    assert [m.content for m in await bob.messages()] == ["hello bob"]
    room = await bob.call(
        "createchatroom",
        pb.CreateChatRoomRequest(topic="pals", members=["carol"]),
        pb.CreateChatRoomResponse,
    )
    assert room.base.ret == 0
    for d in (carol, bob):
        await d.close()
