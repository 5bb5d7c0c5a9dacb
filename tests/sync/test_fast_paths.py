"""The engine's synchronous fast paths (answers from its caches, no coroutine) give
the same answers and the same errors as the paths that read the store: recipients of
a send, the session of a request, a whole send (``Engine.send_now``), a sync key
(``Engine.check_key_now``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sync.test_engine import Clock, login, make_engine, text
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMError
from wxnet.proto.synckey import KEY_MSG, SyncKey
from wxnet.sync.engine import Engine, Session
from wxnet.sync.items import SendResult
from wxnet.sync.model import SERVED_KEYS
from wxnet.sync.store import KEY_SENT

Outcome = tuple[str, object]


async def outcome(aw: Awaitable[object]) -> Outcome:
    try:
        return ("ok", await aw)
    except MMError as exc:
        return ("error", (int(exc.code), exc.message))


def now_outcome(fn: object, *args: object) -> Outcome | None:
    try:
        got = fn(*args)  # type: ignore[operator]
    except MMError as exc:
        return ("error", (int(exc.code), exc.message))
    return None if got is None else ("ok", got)


def cold(e: Engine) -> None:
    """Forget every cached name, contact list and group (the next use reads the store)."""
    e._uin_by_name.clear()
    e._contacts.clear()
    e._rooms.clear()
    e._account.clear()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Engine, dict[str, str]]]:
    """alice and bob are contacts, carol is bob's only; a group of alice and bob, one of
    bob and carol."""
    e = await make_engine(tmp_path, Clock(), contacts="open")
    try:
        a, b = await login(e, "alice"), await login(e, "bob")
        await e.add_contact(a, "bob")
        await e.add_contact(b, "carol")
        mine = await e.create_room(a, "ours", ["bob"])
        theirs = await e.create_room(b, "theirs", ["carol"])
        yield e, {"in": mine.user_name, "out": theirs.user_name}
    finally:
        e.close()


TARGETS = ["alice", "bob", "carol", "nobody", "in", "out", "ghost@chatroom", ""]


async def test_recipients_from_the_caches_are_the_stores(
    world: tuple[Engine, dict[str, str]],
) -> None:
    e, rooms = world
    a = await login(e, "alice", "tablet")
    for target in TARGETS:
        to = rooms.get(target, target)
        cold(e)
        if to != "alice":  # only a message to yourself needs no cache
            assert e._recipients_now(a, to) is None, to
        from_store = await outcome(e.recipients(a, to))
        # the store's answer is now cached where it can be: the fast path gives it,
        # or (a name that does not exist is never cached) says it cannot
        fast = now_outcome(e._recipients_now, a, to)
        if target in ("nobody", "ghost@chatroom", ""):
            assert fast is None, to
        else:
            assert fast == from_store, to
        assert await outcome(e.recipients(a, to)) == from_store, to


async def test_a_send_gives_the_same_results_cold_and_warm(
    world: tuple[Engine, dict[str, str]],
) -> None:
    e, rooms = world
    a = await login(e, "alice", "tablet")
    results = {}
    for warm in (False, True):
        if not warm:
            cold(e)
        msgs = [text(rooms.get(t, t), f"to {t}", f"{warm}-{t}") for t in TARGETS]
        got = await e.send(a, msgs)
        results[warm] = [(r.ret, r.err_msg, r.to_user, bool(r.msg_id)) for r in got]
    assert results[False] == results[True]
    assert [ok for ret, _, _, ok in results[True] if ret == 0] == [True] * 3


async def test_the_cached_session_is_the_stores(tmp_path: Path) -> None:
    clock = Clock()
    e = await make_engine(tmp_path, clock, contacts="open")
    try:
        a = await login(e, "alice")
        assert e.session_now(a.sid, a.uin) is a
        assert await outcome(e.session(a.sid, a.uin)) == ("ok", a)
        # another account's uin: the same error both ways
        assert now_outcome(e.session_now, a.sid, a.uin + 1) == await outcome(
            e.session(a.sid, a.uin + 1)
        )
        # not cached: the fast path cannot say, the store can
        e._sessions.clear()
        assert e.session_now(a.sid, a.uin) is None
        assert await outcome(e.session(a.sid, a.uin)) == ("ok", a)
        assert e.session_now("no-such-session", a.uin) is None
        # expired: the same error, and the session leaves the cache
        clock.now += e.config.session_ttl + 1
        expired = now_outcome(e.session_now, a.sid, a.uin)
        assert expired is not None and expired[0] == "error"
        assert e.session_now(a.sid, a.uin) is None
        assert await outcome(e.session(a.sid, a.uin)) == expired
    finally:
        e.close()


# ---- a send without a coroutine (Engine.send_now) against Engine.send ------------------

#: who a message goes to (rooms by their key in ``world``), whether it passes the checks
#: or not, with cached and uncached names
SEND_TARGETS = st.sampled_from(TARGETS)
SEND_MSGS = st.lists(
    st.tuples(
        SEND_TARGETS,
        st.sampled_from(["a", "b", "c", "", "x" * 65]),  # client_msg_id: repeats, bad ones
        st.sampled_from([1, 1, 1, 0, 3, 37]),  # text, and types a text send refuses
        st.sampled_from(["hi", "é" * 20, "x" * 65]),  # 65 bytes: over max_content_bytes
    ),
    max_size=6,  # over max_send_batch (5) at times
)


def send_batch(rooms: dict[str, str], batch: list[tuple[str, str, int, str]], tag: str) -> Any:
    return [
        pb.MicroMsg(
            to_user=rooms.get(t, t),
            content=body,
            msg_type=mtype,
            client_msg_id=f"{tag}{cid}" if cid else "",
        )
        for t, cid, mtype, body in batch
    ]


async def stored_view(e: Engine, results: list[SendResult], tag: str, heads: Any) -> object:
    """The results of a send and what it stored, without its ids: per result its fields
    (the msg_id as the index of the first result that has it), per stored message its
    row and the logs that got it."""
    first: dict[int, int] = {}
    view: list[object] = []
    for i, r in enumerate(results):
        ref = first.setdefault(r.msg_id, i) if r.msg_id else None
        cid = r.client_msg_id.removeprefix(tag)
        view.append((r.ret, r.err_msg, r.to_user, cid, ref, r.duplicate, bool(r.create_time)))
        if r.msg_id and not r.duplicate:
            row = await e.store.message(r.msg_id)
            assert row is not None
            view.append((row.sender, row.to_user, row.msg_type, row.client_msg_id[len(tag) :]))
    logs = []
    for name in ("alice", "bob", "carol"):
        uin = await e.lookup(name)
        assert uin is not None
        for key in (KEY_MSG, KEY_SENT):
            items, _ = await e.store.read_log(uin, [(key, heads[uin, key])], 1000, 1 << 20)
            for _k, _seq, body in items:
                add = pb.CmdItem.FromString(body).add_msg
                logs.append((name, key, first.get(add.msg_id), add.content))
    return view, sorted(logs, key=repr)


async def heads_of(e: Engine) -> dict[tuple[int, int], int]:
    out = {}
    for name in ("alice", "bob", "carol"):
        uin = await e.lookup(name)
        assert uin is not None
        for key in (KEY_MSG, KEY_SENT):
            out[uin, key] = await e.store.head(uin, key, fresh=True)
    return out


async def send_outcome(
    e: Engine, a: Session, rooms: dict[str, str], batch: Any, tag: str, now: bool
) -> tuple[object, bool]:
    """What a send of ``batch`` answers and stores, by ``send_now`` (falling back to
    ``send`` when it cannot serve the batch, as the dispatcher does) or by ``send``;
    also whether ``send_now`` served it."""
    msgs = send_batch(rooms, batch, tag)
    heads = await heads_of(e)
    try:
        w = e.send_now(a, msgs) if now else None
        if w is None:
            results = await e.send(a, msgs)
        else:
            results = e.sent(w, [] if w.write is None else await w.write)
    except MMError as exc:
        return ("error", int(exc.code), exc.message), False
    await e.store.flush()
    return await stored_view(e, results, tag, heads), w is not None


def test_a_send_now_answers_and_stores_what_send_does(tmp_path: Path) -> None:
    """Over cached and uncached state (names, contact lists, groups): the same results,
    errors, stored rows and log entries by both paths; ``send_now`` declines (None)
    exactly when a recipient is not cached."""
    with asyncio.Runner() as runner:
        e = runner.run(
            make_engine(tmp_path, Clock(), contacts="open", max_send_batch=5, max_content_bytes=64)
        )
        a, rooms = runner.run(_world(e))
        seen = [0]

        @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(SEND_MSGS, st.booleans())
        def check(batch: list[tuple[str, str, int, str]], chill: bool) -> None:
            seen[0] += 1
            n = seen[0]
            if chill:
                cold(e)
            slow, _ = runner.run(send_outcome(e, a, rooms, batch, f"s{n}-", now=False))
            fast, served = runner.run(send_outcome(e, a, rooms, batch, f"f{n}-", now=True))
            assert fast == slow
            # the slow path cached what can be cached: only a name that does not exist
            # (never cached) sends the batch the slow way (unless the batch is refused)
            unknown = {"nobody", "ghost@chatroom", ""}
            passing = [t for t, cid, mt, body in batch if cid in "abc" and cid and mt == 1]
            if not served and len(batch) <= 5 and not any(b == "x" * 65 for *_, b in batch):
                assert set(passing) & unknown

        try:
            check()
        finally:
            e.close()


async def _world(e: Engine) -> tuple[Session, dict[str, str]]:
    a, b = await login(e, "alice"), await login(e, "bob")
    await e.add_contact(a, "bob")
    await e.add_contact(b, "carol")
    mine = await e.create_room(a, "ours", ["bob"])
    theirs = await e.create_room(b, "theirs", ["carol"])
    return await login(e, "alice", "tablet"), {"in": mine.user_name, "out": theirs.user_name}


# ---- a sync key checked against the cached log heads (Engine.check_key_now) ----------


async def key_outcome(e: Engine, uin: int, key: SyncKey) -> Outcome:
    return await outcome(e.check_key(uin, key))


async def test_a_key_the_cached_heads_vouch_for_is_one_the_store_takes(
    world: tuple[Engine, dict[str, str]],
) -> None:
    e, rooms = world
    a = await login(e, "alice", "tablet")
    await e.send(a, [text("bob", "hi", "k1"), text(rooms["in"], "all", "k2")])
    await e.store.flush()
    heads = {k: await e.store.head(a.uin, k, fresh=True) for k in SERVED_KEYS}
    assert heads[KEY_MSG] >= 2
    keys = [SyncKey()]
    for k, h in heads.items():
        for v in (0, 1, h - 1, h, h + 1, 10**9):
            if v >= 0:
                keys.append(SyncKey(((k, v),)))
    keys.append(SyncKey(tuple(heads.items())))
    keys.append(SyncKey(((KEY_MSG, heads[KEY_MSG]), (KEY_MSG, heads[KEY_MSG] + 1))))
    keys.append(SyncKey(((99, 10**9),)))  # a key type this server does not serve
    for key in keys:
        store_says = await key_outcome(e, a.uin, key)
        assert e.check_key_now(a.uin, key) == (store_says == ("ok", None)), key
    # heads not cached: the fast path cannot vouch for a key that needs one
    for key in keys:
        e.store._heads.clear()  # type: ignore[attr-defined]
        if any(v and k in SERVED_KEYS for k, v in key.pairs):
            assert not e.check_key_now(a.uin, key), key
        else:
            assert e.check_key_now(a.uin, key), key
        assert (await key_outcome(e, a.uin, key))[0] in ("ok", "error")
