"""The sync engine driven directly (no links, no HTTP) over a real SQLite store in a
temporary directory, with a fake clock: sync windows, ContinueFlag, dedup, the revoke
window, rooms, receipts, login limits, the session cap and contact consent."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMError, MMRet
from wxnet.proto.synckey import KEY_CONTACT, KEY_MSG, SELECTOR_BITS, SyncKey
from wxnet.sync.engine import Engine, EngineConfig, Session
from wxnet.sync.items import item_bytes
from wxnet.sync.passwords import hash_password
from wxnet.sync.store import session_key_hash

PW_HASH = hash_password("secret1")


def parse_cmd_item(key: int, seq: int, body: bytes) -> pb.CmdItem:
    return pb.CmdItem.FromString(item_bytes(key, seq, body))


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def make_engine(tmp_path: Path, clock: Clock, **config: Any) -> Engine:
    cfg = dataclasses.replace(EngineConfig(durability="NORMAL"), **config)
    engine = Engine(tmp_path / "var", cfg, clock=clock)
    await engine.start()
    for name in ("alice", "bob", "carol"):  # one argon2 hash for all: tests stay fast
        await engine.store.create_account(name, PW_HASH, name, engine.now())
    return engine


@pytest.fixture
async def engine(tmp_path: Path, clock: Clock) -> AsyncIterator[Engine]:
    e = await make_engine(tmp_path, clock, contacts="open", sync_window_items=3)
    try:
        yield e
    finally:
        e.close()


async def login(e: Engine, name: str, device: str = "phone", peer: str = "10.0.0.1") -> Session:
    return await e.login(name, "secret1", f"{name}-{device}", device, peer)


def text(to: str, body: str, cid: str) -> pb.MicroMsg:
    return pb.MicroMsg(to_user=to, content=body, msg_type=1, client_msg_id=cid)


async def sync_all(e: Engine, s: Session, key: SyncKey) -> tuple[list[pb.CmdItem], SyncKey]:
    """newsync until ContinueFlag is clear; also checks every window's bound."""
    out: list[pb.CmdItem] = []
    while True:
        res = await e.newsync(s, key)
        assert len(res.items) <= e.config.sync_window_items
        out += [parse_cmd_item(k, seq, body) for k, seq, body in res.items]
        key = res.key
        if not res.continue_flag:
            return out, key


def adds(items: list[pb.CmdItem]) -> list[pb.AddMsg]:
    return [i.add_msg for i in items if i.WhichOneof("body") == "add_msg"]


async def test_windows_continue_flag_and_replayed_keys(engine: Engine) -> None:
    a, b = await login(engine, "alice"), await login(engine, "bob")
    await engine.add_contact(a, "bob")
    _, key = await sync_all(engine, b, SyncKey())
    for i in range(7):
        [r] = await engine.send(a, [text("bob", f"m{i}", f"c{i}")])
        assert r.ret == 0
    first = await engine.newsync(b, key)
    assert len(first.items) == 3 and first.continue_flag & SELECTOR_BITS[KEY_MSG]
    again = await engine.newsync(b, key)  # an old key returns the same items (S19)
    assert again.items == first.items
    rest, key = await sync_all(engine, b, first.key)
    got = [m.content for m in adds([parse_cmd_item(*i) for i in first.items]) + adds(rest)]
    assert got == [f"m{i}" for i in range(7)]
    assert (await engine.newsync(b, key)).items == []
    assert await engine.news(b.uin, key) == 0


async def test_a_repeated_client_msg_id_is_stored_once(engine: Engine) -> None:
    a, b = await login(engine, "alice"), await login(engine, "bob")
    await engine.add_contact(a, "bob")
    [first] = await engine.send(a, [text("bob", "once", "same")])
    [second] = await engine.send(a, [text("bob", "once", "same")])
    assert (second.msg_id, second.create_time) == (first.msg_id, first.create_time)
    items, _ = await sync_all(engine, b, SyncKey())
    assert [m.content for m in adds(items)] == ["once"]
    assert engine.stats["duplicates"] == 1


async def test_revoke_only_within_the_window_and_only_your_own(
    engine: Engine, clock: Clock
) -> None:
    a, b = await login(engine, "alice"), await login(engine, "bob")
    await engine.add_contact(a, "bob")
    [m1, m2] = await engine.send(a, [text("bob", "oops", "r1"), text("bob", "fine", "r2")])
    with pytest.raises(MMError) as theirs:
        await engine.revoke(b, m1.msg_id, "")
    assert theirs.value.code == MMRet.ERR_NOT_FOUND
    await engine.revoke(a, m1.msg_id, "")
    clock.now += engine.config.revoke_window + 1
    with pytest.raises(MMError) as late:
        await engine.revoke(a, 0, "r2")
    assert late.value.code == MMRet.ERR_REVOKE_EXPIRED
    items, _ = await sync_all(engine, b, SyncKey())
    assert [i.revoke.msg_id for i in items if i.WhichOneof("body") == "revoke"] == [m1.msg_id]
    assert m2.ret == 0


async def test_rooms_members_and_receipts(engine: Engine) -> None:
    a, b, c = [await login(engine, n) for n in ("alice", "bob", "carol")]
    await engine.add_contact(a, "bob")
    room = await engine.create_room(a, "team", ["bob"])
    [r] = await engine.send(b, [text(room.user_name, "hi team", "g1")])
    assert r.ret == 0
    with pytest.raises(MMError) as outsider:
        await engine.recipients(c, room.user_name)
    assert outsider.value.code == MMRet.ERR_NOT_FOUND
    with pytest.raises(MMError) as not_in:
        await engine.mark_read(c, room.user_name, r.msg_id)  # not a member: no receipt
    assert not_in.value.code == MMRet.ERR_NOT_FOUND
    with pytest.raises(MMError) as stranger:
        await engine.mod_room(a, room.user_name, 1, ["carol"], "")  # not alice's contact
    assert stranger.value.code == MMRet.ERR_NOT_FRIEND
    await engine.mark_read(a, "bob", r.msg_id)
    items, _ = await sync_all(engine, b, SyncKey())
    receipts = [i.msg_status for i in items if i.WhichOneof("body") == "msg_status"]
    assert [(x.reader, x.talker) for x in receipts] == [("alice", "bob")]


async def test_login_backoff_is_per_account_and_address(engine: Engine, clock: Clock) -> None:
    for _ in range(5):
        with pytest.raises(MMError) as wrong:
            await engine.login("bob", "nope!!", "d", "d", "6.6.6.6")
        assert wrong.value.code == MMRet.ERR_PASSWORD
    with pytest.raises(MMError) as limited:
        await engine.login("bob", "secret1", "d", "d", "6.6.6.6")
    assert limited.value.code == MMRet.ERR_FREQ_LIMITED
    owner = await engine.login("bob", "secret1", "bob-phone", "phone", "10.1.1.1")
    # the device holding a session gets in even from the throttled address
    again = await engine.login(
        "bob", "secret1", "bob-phone", "phone", "6.6.6.6", session_key=owner.sid
    )
    assert again.uin == owner.uin
    clock.now += 1.5  # the first backoff step has passed
    await engine.login("bob", "secret1", "d", "d", "6.6.6.6")


async def test_oversized_login_fields_are_refused(engine: Engine) -> None:
    for args in (
        ("alice", "secret1", "d", "x" * 65),
        ("alice", "p" * 1025, "d", "d"),
        ("alice", "secret1", "d" * 65, "d"),
    ):
        with pytest.raises(MMError) as exc:
            await engine.login(*args)
        assert exc.value.code == MMRet.ERR_ARG


async def test_the_oldest_sessions_are_evicted(tmp_path: Path, clock: Clock) -> None:
    e = await make_engine(tmp_path, clock, max_sessions_per_account=2)
    ended: list[tuple[int, str]] = []
    e.on_session_end.append(lambda uin, h: ended.append((uin, h)))
    try:
        s1 = await login(e, "alice", "one")
        clock.now += 1
        s2 = await login(e, "alice", "two")
        clock.now += 1
        s3 = await login(e, "alice", "three")
        assert ended == [(s1.uin, session_key_hash(s1.sid))]
        with pytest.raises(MMError) as gone:
            await e.session(s1.sid, s1.uin)
        assert gone.value.code == MMRet.ERR_SESSIONTIMEOUT
        assert (await e.session(s2.sid, s2.uin)) and (await e.session(s3.sid, s3.uin))
        assert e.stats["sessions_evicted"] == 1
        await e.logout(s2)
        assert ended[-1] == (s2.uin, session_key_hash(s2.sid))
    finally:
        e.close()


async def test_contacts_need_consent(tmp_path: Path, clock: Clock) -> None:
    e = await make_engine(tmp_path, clock)  # the default: contacts = "request"
    try:
        a, b = await login(e, "alice"), await login(e, "bob")
        card, pending = await e.add_contact(a, "bob", 2, "hello")
        assert pending and card.user_name == "bob"
        assert not await e.is_contact(a.uin, "bob") and not await e.is_contact(b.uin, "alice")
        [r] = await e.send(a, [text("bob", "hi", "x")])
        assert r.ret == MMRet.ERR_NOT_FRIEND
        with pytest.raises(MMError) as invite:
            await e.create_room(a, "g", ["bob"])
        assert invite.value.code == MMRet.ERR_NOT_FRIEND
        await e.mark_read(a, "bob", 1)  # a stranger's log gets no receipt
        items, key = await sync_all(e, b, SyncKey())
        assert [(m.from_user, m.msg_type, m.content) for m in adds(items)] == [
            ("alice", 37, "hello")
        ]
        assert not [i for i in items if i.WhichOneof("body") == "msg_status"]
        await e.add_contact(a, "bob", 2, "hello again")  # once per pair
        assert adds((await sync_all(e, b, key))[0]) == []
        with pytest.raises(MMError) as nobody:
            await e.add_contact(a, "bob", 3)  # bob never asked alice
        assert nobody.value.code == MMRet.ERR_NOT_FOUND
        _, pending = await e.add_contact(b, "alice", 3)
        assert not pending
        assert await e.is_contact(a.uin, "bob") and await e.is_contact(b.uin, "alice")
        items, _ = await sync_all(e, a, SyncKey())
        assert [i.contact.user_name for i in items if i.key == KEY_CONTACT] == ["bob"]
        [ok] = await e.send(a, [text("bob", "hi", "y")])
        assert ok.ret == 0
    finally:
        e.close()


async def test_asking_back_accepts_and_open_mode_adds_at_once(tmp_path: Path, clock: Clock) -> None:
    e = await make_engine(tmp_path, clock)
    try:
        a, b = await login(e, "alice"), await login(e, "bob")
        assert (await e.add_contact(a, "bob"))[1]
        assert not (await e.add_contact(b, "alice"))[1]  # bob asks back: that accepts
        assert await e.is_contact(a.uin, "bob")
    finally:
        e.close()
    e = await make_engine(tmp_path / "open", clock, contacts="open")
    try:
        a = await login(e, "alice")
        assert not (await e.add_contact(a, "carol"))[1]
        assert await e.is_contact(a.uin, "carol")
    finally:
        e.close()
