"""The ``Store`` contract, on every store (SQLite and a real PostgreSQL).

Every write returns once durable (a reopened store still has it); seqs of one log are
contiguous and become visible in order; changes are published before the writer
resumes; (sender, client_msg_id) is unique; windows page by items and bytes.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from tests.sync.conftest import OpenStore, Published
from wxnet.proto.errors import MMError, MMRet
from wxnet.proto.synckey import SELECTOR_BITS, SyncKey
from wxnet.sync import pg_schema, schema
from wxnet.sync.engine import Engine, EngineConfig
from wxnet.sync.sqlite_store import FIRST_MSG_ID
from wxnet.sync.store import (
    Append,
    NewMessage,
    RoomRow,
    RoomSave,
    SessionRow,
    Store,
    WebSessionRow,
    session_key_hash,
)

T0 = 1_700_000_000


def body(tag: str) -> bytes:
    return tag.encode()


def new_msg(cid: str, to: str, rcpts: list[int], media: str | None = None) -> NewMessage:
    return NewMessage(cid, to, 1, media, rcpts, lambda mid, ct: f"{cid}:{mid}:{ct}".encode())


async def two(store: Store) -> tuple[int, int]:
    a = await store.create_account("alice", "hash-a", "Alice", T0)
    b = await store.create_account("bob", "hash-b", "Bob", T0)
    return a, b


async def test_accounts(store: Store) -> None:
    a, b = await two(store)
    assert a != b
    acc = await store.account_by_name("alice")
    assert acc is not None and (acc.uin, acc.nick_name, acc.pw_hash) == (a, "Alice", "hash-a")
    assert await store.account_by_uin(b) == await store.account_by_name("bob")
    assert await store.account_by_name("nobody") is None
    assert await store.account_by_uin(999_999) is None
    assert await store.message(1 << 63) is None and await store.message(-1) is None
    with pytest.raises(MMError) as ei:
        await store.create_account("alice", "x", "x", T0)
    assert ei.value.code == MMRet.ERR_ARG
    # a new account's profile log starts with its profile item
    assert await store.head(a, 1) == 1 and await store.head(a, 2) == 0
    items, more = await store.read_log(a, [(1, 0)], 10, 1 << 16)
    assert [(k, s) for k, s, _ in items] == [(1, 1)] and more == []
    assert b"alice" in items[0][2]


async def test_sessions(store: Store) -> None:
    a, _ = await two(store)
    row = SessionRow("sid-1", a, "alice", "dev-1", "Phone", "mobile", T0 + 100)
    await store.create_session(row, T0)
    assert await store.session("sid-1") == row
    assert await store.session("sid-2") is None
    await store.delete_session("sid-1")
    assert await store.session("sid-1") is None


async def test_schema_version(store: Store, kind: str) -> None:
    # each store has its own history of versions (PostgreSQL 3: S17 in wx_commit)
    want = pg_schema.SCHEMA_VERSION if kind == "postgres" else schema.SCHEMA_VERSION
    assert store.schema_version() == want


async def test_evict_sessions_oldest_first_by_hash(store: Store) -> None:
    a, b = await two(store)
    for i in range(4):
        await store.create_session(
            SessionRow(f"k{i}", a, "alice", "d", "D", "mobile", T0 + 99), T0 + i
        )
    await store.create_session(SessionRow("kb", b, "bob", "d", "D", "mobile", T0 + 99), T0)
    gone = await store.evict_sessions(a, 2)
    # what comes back is what the store keeps instead of the key: its hash
    assert gone == [session_key_hash("k0"), session_key_hash("k1")]
    assert [await store.session(f"k{i}") is None for i in range(4)] == [True, True, False, False]
    assert await store.evict_sessions(a, 2) == []
    assert await store.session("kb") is not None  # another account's sessions stay


async def test_append_seqs_windows_and_publish(
    store: Store, published: Published, kind: str
) -> None:
    a, b = await two(store)
    for i in range(5):
        await store.append([Append([a, b], 2, body(f"m{i}"))])
        # published before the writer resumed
        assert published.head(a, 2) == i + 1 == published.head(b, 2)
    assert published.changes[-1].news == {a: SELECTOR_BITS[2], b: SELECTOR_BITS[2]}
    assert await store.head(b, 2) == 5
    # the cached head, when there is one, is the head (PostgreSQL's: this loop turn's)
    assert store.head_now(b, 2) in (None, 5)
    assert store.head_now(b, 2) == 5 or kind == "postgres"
    items, more = await store.read_log(b, [(2, 0)], 3, 1 << 16)
    assert [(k, s, x) for k, s, x in items] == [(2, i + 1, body(f"m{i}")) for i in range(3)]
    assert more == [2]
    items, more = await store.read_log(b, [(2, 3)], 3, 1 << 16)
    assert [s for _, s, _ in items] == [4, 5] and more == []
    # bytes: the first item always comes, the next only if it fits
    items, more = await store.read_log(b, [(2, 0)], 100, 3)
    assert [s for _, s, _ in items] == [1] and more == [2]
    # several keys, in the order asked; a full window leaves the later keys for "more"
    await store.append([Append([b], 3, body("c1")), Append([b], 11, body("r1"))])
    items, more = await store.read_log(b, [(3, 0), (2, 4), (11, 0)], 2, 1 << 16)
    assert [(k, s) for k, s, _ in items] == [(3, 1), (2, 5)] and more == [11]
    assert await store.recent(b, 2, 4, 2) == [(2, 3, body("m2")), (2, 4, body("m3"))]
    # a repeated old key returns the same items (append-only, S19)
    again, _ = await store.read_log(b, [(2, 0)], 3, 1 << 16)
    assert again == (await store.read_log(b, [(2, 0)], 3, 1 << 16))[0]


async def test_concurrent_writes_contiguous_and_grouped(store: Store, published: Published) -> None:
    a, b = await two(store)
    await store.flush()
    before = store.statistics()
    await asyncio.gather(*(store.append([Append([a, b], 2, body(f"x{i}"))]) for i in range(200)))
    items, _ = await store.read_log(a, [(2, 0)], 1000, 1 << 20)
    assert [s for _, s, _ in items] == list(range(1, 201))
    assert sorted(x for _, _, x in items) == sorted(body(f"x{i}") for i in range(200))
    after = store.statistics()
    writes = after["writes"] - before["writes"]
    assert writes >= 200 and after["commits"] - before["commits"] < writes  # group commit
    assert published.head(b, 2) == 200


async def test_messages_dedup_and_fan_out(store: Store) -> None:
    a, b = await two(store)
    out = await store.store_messages(
        a, [new_msg("c1", "bob", [a, b]), new_msg("c2", "bob", [a, b])], T0
    )
    (m1, t1, d1), (m2, _, d2) = out
    assert m1 >= FIRST_MSG_ID and m2 != m1 and t1 == T0 and not d1 and not d2
    # the same ClientMsgId again (alone, and twice in one batch): the original, not stored
    out = await store.store_messages(
        a, [new_msg("c1", "bob", [a, b]), new_msg("c3", "bob", [a, b]),
            new_msg("c3", "bob", [a, b])], T0 + 5)  # fmt: skip
    assert out[0] == (m1, T0, True)
    assert out[2] == (out[1][0], T0 + 5, True) and not out[1][2]
    # concurrently from another sender, same ids: separate (per sender)
    res = await asyncio.gather(
        store.store_messages(b, [new_msg("c1", "alice", [a, b])], T0),
        store.store_messages(a, [new_msg("c9", "bob", [a, b])], T0),
    )
    assert not res[0][0][2] and not res[1][0][2]
    items, _ = await store.read_log(b, [(2, 0)], 100, 1 << 20)
    bodies = [x.decode() for _, _, x in items]
    assert bodies[0] == f"c1:{m1}:{T0}" and len(bodies) == 5  # c1 c2 c3, b's c1, c9
    row = await store.message(m1)
    assert row is not None and (row.sender, row.client_msg_id, row.to_user) == (a, "c1", "bob")
    assert not row.revoked and row.media is None and row.create_time == T0
    assert await store.message_by_client_id(a, "c2") == await store.message(m2)
    assert await store.message_by_client_id(b, "c2") is None
    assert await store.message(1) is None


async def test_media_metadata_and_revoke(store: Store) -> None:
    a, b = await two(store)
    [(mid, _, _)] = await store.store_messages(a, [new_msg("img", "bob", [a, b], "ab/cd")], T0)
    row = await store.message(mid)
    assert row is not None and row.media == "ab/cd"
    await store.revoke(mid, [Append([a, b], 2, body("revoked"))])
    row = await store.message(mid)
    assert row is not None and row.revoked
    assert (await store.recent(b, 2, await store.head(b, 2), 1))[0][2] == body("revoked")


async def test_contacts_and_rooms(store: Store, published: Published) -> None:
    a, b = await two(store)
    c = await store.create_account("carol", "h", "Carol", T0)
    pairs = [(a, "bob"), (b, "alice")]
    await store.add_contacts(pairs, T0, [Append([a], 3, body("bob")), Append([b], 3, body("al"))])
    await store.add_contacts(pairs, T0, [])  # idempotent
    assert await store.contacts_of(a) == {"bob"} and await store.contacts_of(c) == set()
    assert published.head(a, 3) == 1
    room = RoomRow("r1@chatroom", "Team", "alice", ["alice", "bob"])
    await store.save_room(
        RoomSave(room, room.members, (), T0, [Append([a, b], 11, b"r")], create=True)
    )
    got = await store.room("r1@chatroom")
    assert got is not None and (got.topic, got.owner, got.members) == (
        "Team",
        "alice",
        room.members,
    )
    assert await store.rooms_of("bob") == ["r1@chatroom"] and await store.rooms_of("carol") == []
    new = RoomRow("r1@chatroom", "Team 2", "alice", ["alice", "carol"])
    await store.save_room(
        RoomSave(new, ["carol"], ["bob"], T0, [Append([a, c], 11, b"r2")], create=False)
    )
    got = await store.room("r1@chatroom")
    assert got is not None and got.topic == "Team 2" and got.members == ["alice", "carol"]
    assert await store.rooms_of("bob") == [] and await store.rooms_of("carol") == ["r1@chatroom"]
    assert await store.room("nope@chatroom") is None
    assert await store.head(a, 11) == 2 and await store.head(c, 11) == 1


async def test_contact_marks(store: Store, published: Published) -> None:
    a, b = await two(store)
    assert await store.contact_marks(a) == {}
    await store.set_contact_mark(a, "bob", "Bobby", False, T0, [Append([a], 3, body("bob"))])
    await store.set_contact_mark(a, "bob", "Bobby", True, T0 + 1, [Append([a], 3, body("b2"))])
    await store.set_contact_mark(a, "r@chatroom", "", True, T0, [])
    assert await store.contact_marks(a) == {"bob": ("Bobby", True), "r@chatroom": ("", True)}
    assert await store.contact_marks(b) == {}  # marks are the owner's own
    assert published.head(a, 3) == 2


async def test_committed_keys(store: Store) -> None:
    a, _ = await two(store)
    store.set_committed_key(a, "dev", b"k1", T0)
    store.set_committed_key(a, "dev", b"k2", T0 + 1)
    store.set_committed_key(a, "dev2", b"k3", T0 + 1)
    await store.flush()
    assert await store.committed_key(a, "dev") == b"k2"
    assert await store.committed_key(a, "dev2") == b"k3"
    assert await store.committed_key(a, "nope") is None


async def test_uploads(store: Store) -> None:
    a, b = await two(store)
    assert await store.upload_begin(a, "u1", "img", "bob", 100, T0) == ("bob", 100, [])
    await store.upload_save(a, "u1", "img", [(0, 10), (20, 30)])
    # a resume keeps what was stored, whatever the new request says
    assert await store.upload_begin(a, "u1", "img", "carol", 5, T0) == (
        "bob",
        100,
        [(0, 10), (20, 30)],
    )
    assert await store.upload_begin(a, "u1", "voice", "bob", 7, T0) == ("bob", 7, [])
    await store.upload_drop(a, "u1", "img")
    assert await store.upload_begin(a, "u1", "img", "bob", 50, T0) == ("bob", 50, [])
    await store.upload_begin(b, "u2", "img", "alice", 3, T0 - 50)
    assert sorted(await store.uploads_of(a)) == [("u1", "img", 50), ("u1", "voice", 7)]
    assert await store.uploads_of(999_999) == []
    # the expiry sweep's list: begun before the cut-off, oldest first, at most limit
    assert await store.uploads_older(T0, 10) == [(b, "u2", "img")]
    assert len(await store.uploads_older(T0 + 1, 2)) == 2
    assert await store.uploads_older(T0 - 50, 10) == []


async def test_durable_across_reopen(open_store: OpenStore) -> None:
    st = await open_store()
    a, b = await two(st)
    [(mid, _, _)] = await st.store_messages(a, [new_msg("c1", "bob", [a, b])], T0)
    await st.create_session(SessionRow("s", a, "alice", "d", "D", "web", T0 + 9), T0)
    await st.upload_begin(a, "u", "img", "bob", 9, T0)
    await st.aclose()
    st2 = await open_store()
    assert await st2.head(b, 2) == 1
    assert (await st2.message(mid)) is not None
    assert await st2.session("s") is not None
    assert await st2.upload_begin(a, "u", "img", "x", 1, T0) == ("bob", 9, [])
    # the next ids and seqs continue after what is stored
    [(mid2, _, dup)] = await st2.store_messages(a, [new_msg("c1", "bob", [a, b])], T0)
    assert (mid2, dup) == (mid, True)
    [(mid3, _, _)] = await st2.store_messages(a, [new_msg("c2", "bob", [a, b])], T0)
    assert mid3 != mid
    assert await st2.head(b, 2) == 2


async def test_one_append_to_many_logs_not_cached_continues_each(open_store: OpenStore) -> None:
    # A reopened store has no log head cached: one write to 1, 5, 32, 33 and then all
    # 80 logs (9 of them still not cached) reads the heads it lacks in chunks (SQLite:
    # one statement for a power of two of logs, a shorter chunk padded with its last
    # log again) and continues every log's seqs.
    st = await open_store()
    uins = [await st.create_account(f"u{i:02d}", "h", "U", T0) for i in range(80)]
    for i, uin in enumerate(uins):  # heads 1..7, different per log
        await st.append([Append([uin], 2, body(f"{i}-{j}")) for j in range(i % 7 + 1)])
    await st.aclose()
    st = await open_store()
    want = {uin: i % 7 + 1 for i, uin in enumerate(uins)}
    for part in (uins[:1], uins[1:6], uins[6:38], uins[38:71], uins):
        await st.append([Append(part, 2, body(f"to {len(part)}"))])
        for uin in part:
            want[uin] += 1
    for uin in uins:
        assert await st.head(uin, 2, fresh=True) == want[uin]
        items, _ = await st.read_log(uin, [(2, want[uin] - 2)], 10, 1 << 16)
        assert [s for _, s, _ in items] == [want[uin] - 1, want[uin]]


async def test_engine_revoke_window_over_the_store(store: Store, tmp_path: object) -> None:
    """The domain rules on top of either store: send, dedup, revoke within the window."""
    from pathlib import Path

    from wxnet.proto import wxnet_pb2 as pb

    now = [float(T0)]
    cfg = EngineConfig(revoke_window=120, contacts="open")  # consent: test_consent.py
    eng = Engine(Path(str(tmp_path)) / "eng", cfg, clock=lambda: now[0], store=store)
    a = await eng.add_user("alice", "secret1")
    await eng.add_user("bob", "secret1")
    sa = await eng.create_session(a, "dev", "Dev")
    await eng.add_contact(sa, "bob")
    msgs = [pb.MicroMsg(to_user="bob", content="hi", msg_type=1, client_msg_id=f"c{i}")
            for i in range(2)]  # fmt: skip
    r1 = await eng.send(sa, msgs)
    r2 = await eng.send(sa, msgs[:1])
    assert r2[0].msg_id == r1[0].msg_id and eng.stats["duplicates"] == 1
    await eng.revoke(sa, r1[0].msg_id, "")
    now[0] += 121
    with pytest.raises(MMError) as ei:
        await eng.revoke(sa, r1[1].msg_id, "")
    assert ei.value.code == MMRet.ERR_REVOKE_EXPIRED
    res = await eng.newsync(sa, SyncKey.of({2: 0}))
    # alice's one device keeps its own copies (S17): her log holds only the revoke
    assert [k for k, _, _ in res.items].count(2) == 1
    bob = await eng.create_session(await eng.lookup("bob") or 0, "bdev", "Dev")
    res = await eng.newsync(bob, SyncKey.of({2: 0}))
    assert [k for k, _, _ in res.items].count(2) == 3  # two messages and one revoke


async def test_web_sessions(open_store: OpenStore) -> None:
    st = await open_store()
    a, _ = await two(st)
    row = WebSessionRow("k1", a, "alice", "Alice", "sid", "@crypt_x", "pt", "dt", T0 + 10.5, True)
    await st.save_web_session(row)
    await st.save_web_session(WebSessionRow("k2", a, "alice", "Alice", "s2", "", "", "", T0, True))
    assert await st.web_session("k1") == row and await st.web_session("nope") is None
    ended = dataclasses.replace(row, alive=False, expires=float(T0 + 1))
    await st.save_web_session(ended)  # replaces
    await st.aclose()
    st = await open_store()  # durable
    assert await st.web_session("k1") == ended
    assert await st.drop_web_sessions(T0 + 0.5) == 1  # k2 only
    assert await st.web_session("k2") is None and await st.web_session("k1") == ended
