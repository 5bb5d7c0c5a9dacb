"""Messaging over the long link against the real server on loopback (S16-S19, S22, S31)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from tests.server.wire import Device, LongClient
from wxnet.clock import FakeClock
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMRet
from wxnet.proto.synckey import SyncKey
from wxnet.server.app import Server


async def befriend(a: Device, b_name: str) -> None:
    r = await a.call("verifyuser", pb.AddContactRequest(user_name=b_name), pb.AddContactResponse)
    assert r.base.ret == 0, r.base.err_msg


async def test_login_errors(server: Server) -> None:
    link = await LongClient.connect(server.long_port)
    try:
        bad = await link.call(
            "manualauth",
            pb.ManualAuthRequest(
                base=pb.BaseRequest(device_id="d"), user_name="alice", password="nope!!"
            ),
            pb.ManualAuthResponse,
        )
        assert bad.base.ret == MMRet.ERR_PASSWORD
        none = await link.call(
            "manualauth",
            pb.ManualAuthRequest(
                base=pb.BaseRequest(device_id="d"), user_name="zed", password="secret1"
            ),
            pb.ManualAuthResponse,
        )
        assert none.base.ret == MMRet.ERR_NOUSER
        wrong = await link.call(
            "newsync",
            pb.NewSyncRequest(base=pb.BaseRequest(session_key="forged", uin=1)),
            pb.NewSyncResponse,
        )
        assert wrong.base.ret == MMRet.ERR_SESSIONTIMEOUT
    finally:
        await link.close()


async def test_login_rate_limited(server: Server) -> None:
    link = await LongClient.connect(server.long_port)
    codes = []
    for _ in range(7):
        r = await link.call(
            "manualauth",
            pb.ManualAuthRequest(
                base=pb.BaseRequest(device_id="d"), user_name="bob", password="wrong!"
            ),
            pb.ManualAuthResponse,
        )
        codes.append(r.base.ret)
    await link.close()
    assert codes[:5] == [MMRet.ERR_PASSWORD] * 5
    assert codes[5:] == [MMRet.ERR_FREQ_LIMITED] * 2


async def test_session_expires(server: Server, clock: FakeClock) -> None:
    a = await Device.login(server.long_port, "alice")
    clock.advance(server.config.sync.session_ttl + 1)
    r = await a.call("getprofile", pb.GetProfileRequest(), pb.GetProfileResponse)
    assert r.base.ret == MMRet.ERR_SESSIONTIMEOUT
    await a.close()


async def test_one_to_one_send_notify_sync_and_other_devices(server: Server) -> None:
    a = await Device.login(server.long_port, "alice")
    a2 = await Device.login(server.long_port, "alice", device="tablet")
    b = await Device.login(server.long_port, "bob")
    for d in (a, a2, b):
        await d.sync()
    await befriend(a, "bob")
    for d in (a, a2, b):
        await d.sync()
    # drain the notifies the contact change caused
    for d in (a, a2, b):
        while not d.link.notifies.empty():
            d.link.notifies.get_nowait()

    res = await a.send("bob", "hello", "cm-1")
    assert res.ret == 0 and res.msg_id > 0
    assert await b.link.next_notify() & 0x2  # S22: the receiver is notified
    assert await a2.link.next_notify() & 0x2  # S31: every device of the account
    got_b = await b.messages()
    got_a2 = await a2.messages()
    assert [(m.from_user, m.to_user, m.content, m.msg_id) for m in got_b] == [
        ("alice", "bob", "hello", res.msg_id)
    ]
    assert [m.client_msg_id for m in got_a2] == ["cm-1"]
    for d in (a, a2, b):
        await d.close()


async def test_duplicate_send_returns_original_and_is_delivered_once(server: Server) -> None:
    a = await Device.login(server.long_port, "alice")
    b = await Device.login(server.long_port, "bob")
    await befriend(a, "bob")
    await b.sync()
    first = await a.send("bob", "hi", "same-id")
    again = await a.send("bob", "hi (resent)", "same-id")  # S23: resend after a lost ack
    assert (again.ret, again.msg_id, again.create_time) == (0, first.msg_id, first.create_time)
    msgs = await b.messages()
    assert [m.content for m in msgs] == ["hi"]
    await a.close()
    await b.close()


async def test_send_rules_per_item(server: Server) -> None:
    a = await Device.login(server.long_port, "alice")
    r = await a.call(
        "newsendmsg",
        pb.SendMsgRequest(
            list=[
                pb.MicroMsg(
                    to_user="bob", content="x", msg_type=1, client_msg_id="1"
                ),  # not a friend
                pb.MicroMsg(to_user="nobody", content="x", msg_type=1, client_msg_id="2"),
                pb.MicroMsg(to_user="alice", content="note to self", msg_type=1, client_msg_id="3"),
                pb.MicroMsg(to_user="alice", content="x", msg_type=3, client_msg_id="4"),
                pb.MicroMsg(to_user="alice", content="x", msg_type=1, client_msg_id=""),
            ]
        ),
        pb.SendMsgResponse,
    )
    assert [x.ret for x in r.list] == [
        MMRet.ERR_NOT_FRIEND,
        MMRet.ERR_NOUSER,
        0,
        MMRet.ERR_ARG,
        MMRet.ERR_ARG,
    ]
    too_many = await a.call(
        "newsendmsg",
        pb.SendMsgRequest(
            list=[
                pb.MicroMsg(to_user="alice", content="x", msg_type=1, client_msg_id=str(i))
                for i in range(11)
            ]
        ),
        pb.SendMsgResponse,
    )
    assert too_many.base.ret == MMRet.ERR_TOO_LARGE
    await a.close()


async def test_window_continue_flag_repeat_and_commit(server: Server) -> None:
    server.engine.config = dataclasses.replace(server.engine.config, sync_window_items=4)
    a = await Device.login(server.long_port, "alice")
    b = await Device.login(server.long_port, "bob")
    await befriend(a, "bob")
    await b.sync()
    base_key = b.acc.key
    for i in range(10):
        await a.send("bob", f"m{i}", f"c{i}")
    r1 = await b.call("newsync", pb.NewSyncRequest(key_buf=base_key.to_bytes()), pb.NewSyncResponse)
    assert len(r1.cmd_list) == 4 and r1.continue_flag & 0x2
    # S19: not acknowledged yet, so the same key returns the same items
    again = await b.call(
        "newsync", pb.NewSyncRequest(key_buf=base_key.to_bytes()), pb.NewSyncResponse
    )
    assert [i.seq for i in again.cmd_list] == [i.seq for i in r1.cmd_list]
    assert again.key_buf == r1.key_buf
    b.acc.key = base_key
    msgs = await b.messages()
    assert [m.content for m in msgs] == [f"m{i}" for i in range(10)]
    # the device's committed key follows what it presented (S31)
    done = await b.call(
        "syncdone", pb.SyncDoneRequest(key_buf=b.acc.key.to_bytes()), pb.SyncDoneResponse
    )
    assert done.base.ret == 0
    await server.engine.store.flush()  # commit marks are written in the background
    assert await server.engine.committed_key(b.acc.uin, b.acc.device_id) == b.acc.key
    await a.close()
    await b.close()


async def test_key_the_server_cannot_serve(server: Server) -> None:
    a = await Device.login(server.long_port, "alice")
    future = SyncKey(((2, 10**9),))
    r = await a.call("newsync", pb.NewSyncRequest(key_buf=future.to_bytes()), pb.NewSyncResponse)
    assert r.base.ret == MMRet.ERR_SYNCKEY_INVALID
    r = await a.call("newsync", pb.NewSyncRequest(key_buf=b"\xff\xff"), pb.NewSyncResponse)
    assert r.base.ret == MMRet.ERR_SYNCKEY_INVALID
    init = await a.call("newinit", pb.NewInitRequest(), pb.NewInitResponse)
    assert init.base.ret == 0 and init.user.user_name == "alice"
    assert init.cmd_list[0].user_info.nick_name == "Alice"
    a.acc.key = SyncKey.from_bytes(init.current_synckey)
    assert await a.sync() == []
    # syncdone, served from the cached heads when they vouch for the key, gives the
    # store's errors for the others
    for bad in (future.to_bytes(), b"\xff\xff"):
        r2 = await a.call("syncdone", pb.SyncDoneRequest(key_buf=bad), pb.SyncDoneResponse)
        assert r2.base.ret == MMRet.ERR_SYNCKEY_INVALID
    ok = await a.call(
        "syncdone", pb.SyncDoneRequest(key_buf=a.acc.key.to_bytes()), pb.SyncDoneResponse
    )
    assert ok.base.ret == 0
    await a.close()


async def test_newinit_snapshot_for_a_new_device(server: Server) -> None:
    a = await Device.login(server.long_port, "alice")
    await befriend(a, "bob")
    await a.send("bob", "before the new device", "x1")
    a2 = await Device.login(server.long_port, "alice", device="new")
    init = await a2.call("newinit", pb.NewInitRequest(), pb.NewInitResponse)
    kinds = [i.WhichOneof("body") for i in init.cmd_list]
    assert kinds == ["user_info", "contact", "add_msg"]
    assert init.cmd_list[2].add_msg.content == "before the new device"
    await a.close()
    await a2.close()


async def test_own_messages_only_for_the_accounts_other_devices(server: Server) -> None:
    """S17: one device's send leaves its SyncKey where it was; with a second device both
    get the message once; a device that comes later gets all of it from newinit (both
    stores; tests/server/test_pg.py runs it on PostgreSQL)."""
    a = await Device.login(server.long_port, "alice")
    b = await Device.login(server.long_port, "bob")
    await befriend(a, "bob")
    await a.sync()
    key = a.acc.key
    assert (await a.send("bob", "one device", "s1")).ret == 0
    assert await a.messages() == [] and a.acc.key == key  # no new SyncKey for the sender
    a2 = await Device.login(server.long_port, "alice", device="pad")
    await a2.sync()
    assert (await a.send("bob", "two devices", "s2")).ret == 0
    for d in (a, a2):
        assert [m.content for m in await d.messages()] == ["two devices"]
    assert [m.content for m in await b.messages()] == ["one device", "two devices"]
    a3 = await Device.login(server.long_port, "alice", device="later")
    init = await a3.call("newinit", pb.NewInitRequest(), pb.NewInitResponse)
    sent = [i.add_msg.content for i in init.cmd_list if i.WhichOneof("body") == "add_msg"]
    assert sent == ["one device", "two devices"]
    for d in (a, a2, a3, b):
        await d.close()


async def test_group_lifecycle_and_fan_out(server: Server) -> None:
    a = await Device.login(server.long_port, "alice")
    b = await Device.login(server.long_port, "bob")
    c = await Device.login(server.long_port, "carol")
    await befriend(a, "bob")
    await befriend(a, "carol")
    bad = await a.call(
        "createchatroom",
        pb.CreateChatRoomRequest(topic="t", members=["zed"]),
        pb.CreateChatRoomResponse,
    )
    assert bad.base.ret == MMRet.ERR_NOT_FRIEND
    r = await a.call(
        "createchatroom",
        pb.CreateChatRoomRequest(topic="team", members=["bob"]),
        pb.CreateChatRoomResponse,
    )
    room = r.chatroom.user_name
    assert room.endswith("@chatroom") and list(r.chatroom.members) == ["alice", "bob"]
    await b.sync()
    await c.sync()
    assert any(i.contact.user_name == room for i in b.seen)
    assert not any(i.contact.user_name == room for i in c.seen)
    add = await a.call(
        "modchatroom",
        pb.ModChatRoomRequest(chatroom=room, op=1, members=["carol"]),
        pb.ModChatRoomResponse,
    )
    assert list(add.chatroom.members) == ["alice", "bob", "carol"]
    ren = await b.call(
        "modchatroom",
        pb.ModChatRoomRequest(chatroom=room, op=3, topic="team 2"),
        pb.ModChatRoomResponse,
    )
    assert ren.chatroom.nick_name == "team 2"
    kick = await b.call(
        "modchatroom",
        pb.ModChatRoomRequest(chatroom=room, op=2, members=["carol"]),
        pb.ModChatRoomResponse,
    )
    assert kick.base.ret == MMRet.ERR_NOT_ALLOWED  # only the owner removes others
    res = await c.send(room, "hi all", "g1")
    assert res.ret == 0
    for d in (a, b):
        msgs = await d.messages()
        assert [(m.content, m.real_from, m.to_user) for m in msgs] == [("hi all", "carol", room)]
    # carol's one device keeps its own copy (S17)
    assert [m.content for m in await c.messages()] == []
    leave = await c.call(
        "modchatroom",
        pb.ModChatRoomRequest(chatroom=room, op=2, members=["carol"]),
        pb.ModChatRoomResponse,
    )
    assert leave.base.ret == 0
    gone = await c.sync()
    assert gone[-1].del_contact.user_name == room
    assert (await c.send(room, "still here?", "g2")).ret == MMRet.ERR_NOT_FOUND
    for d in (a, b, c):
        await d.close()


async def test_read_receipt_and_revoke(server: Server, clock: FakeClock) -> None:
    a = await Device.login(server.long_port, "alice")
    b = await Device.login(server.long_port, "bob")
    await befriend(a, "bob")
    await a.sync()
    m = await a.send("bob", "oops", "r1")
    await b.messages()
    rr = await b.call(
        "statusnotify",
        pb.MarkReadRequest(talker="alice", last_msg_id=m.msg_id),
        pb.MarkReadResponse,
    )
    assert rr.base.ret == 0
    items = await a.sync()
    statuses = [i.msg_status for i in items if i.WhichOneof("body") == "msg_status"]
    assert [(s.reader, s.msg_id, s.status) for s in statuses] == [("bob", m.msg_id, 4)]
    rv = await a.call("revokemsg", pb.RevokeMsgRequest(msg_id=m.msg_id), pb.RevokeMsgResponse)
    assert rv.base.ret == 0
    revokes = [i.revoke for i in await b.sync() if i.WhichOneof("body") == "revoke"]
    assert [r.msg_id for r in revokes] == [m.msg_id]
    late = await a.send("bob", "too late", "r2")
    clock.advance(121)
    rv2 = await a.call("revokemsg", pb.RevokeMsgRequest(client_msg_id="r2"), pb.RevokeMsgResponse)
    assert rv2.base.ret == MMRet.ERR_REVOKE_EXPIRED and late.ret == 0
    notmine = await b.call("revokemsg", pb.RevokeMsgRequest(msg_id=m.msg_id), pb.RevokeMsgResponse)
    assert notmine.base.ret == MMRet.ERR_NOT_FOUND
    await a.close()
    await b.close()


async def test_no_account_sees_another_accounts_data(server: Server) -> None:
    a = await Device.login(server.long_port, "alice")
    b = await Device.login(server.long_port, "bob")
    c = await Device.login(server.long_port, "carol")
    await befriend(a, "bob")
    await a.send("bob", "private", "p1")
    # carol presents bob's key and session pieces: she only ever gets her own logs
    await b.sync()
    r = await c.call("newsync", pb.NewSyncRequest(key_buf=SyncKey().to_bytes()), pb.NewSyncResponse)
    assert all(i.WhichOneof("body") != "add_msg" for i in r.cmd_list)
    stolen = await c.link.call(
        "newsync",
        pb.NewSyncRequest(base=pb.BaseRequest(session_key=b.acc.sid, uin=c.acc.uin)),
        pb.NewSyncResponse,
    )
    assert stolen.base.ret == MMRet.ERR_SESSIONTIMEOUT
    for d in (a, b, c):
        await d.close()


async def test_notifies_coalesce_and_reach_every_identified_link(server: Server) -> None:
    a = await Device.login(server.long_port, "alice")
    b = await Device.login(server.long_port, "bob")
    await befriend(a, "bob")
    while not b.link.notifies.empty():
        b.link.notifies.get_nowait()
    await asyncio.gather(*(a.send("bob", str(i), f"n{i}") for i in range(20)))
    assert await b.link.next_notify() & 2
    assert b.link.notifies.qsize() < 20  # several commits in one loop turn -> one notify
    assert len(await b.messages()) == 20
    await a.close()
    await b.close()


@pytest.mark.parametrize("cmd", [6])
async def test_noop_answered_with_same_seq(server: Server, cmd: int) -> None:
    link = await LongClient.connect(server.long_port)
    p = await link.request(cmd, b"", seq=0xFFFFFFFF)
    assert (p.cmd, p.seq, p.body) == (1_000_000_006, 0xFFFFFFFF, b"")
    await link.close()


async def test_key_newer_than_the_cached_head_is_not_invalid(server: Server) -> None:
    """A read may return rows committed just before the head cache hears of them (the
    cache is updated on the event loop after the commit); such a key is valid."""
    import sqlite3

    a = await Device.login(server.long_port, "alice")
    await a.sync()
    head = await server.engine.store.head(a.acc.uin, 2)  # now cached
    conn = sqlite3.connect(server.config.data / "wxnet.db")
    with conn:
        item = conn.execute("INSERT INTO items (body) VALUES (x'2805')").lastrowid
        conn.execute("INSERT INTO sync_log VALUES (?,?,?,?)", (a.acc.uin, 2, head + 1, item))
    conn.close()
    newer = a.acc.key.merged(SyncKey(((2, head + 1),)))
    r = await a.call("newsync", pb.NewSyncRequest(key_buf=newer.to_bytes()), pb.NewSyncResponse)
    assert r.base.ret == 0, r.base.err_msg
    await a.close()
