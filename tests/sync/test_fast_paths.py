"""The engine's synchronous fast paths (answers from its caches, no coroutine) give
the same answers and the same errors as the paths that read the store: recipients of
a send, the session of a request."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import pytest

from tests.sync.test_engine import Clock, login, make_engine, text
from wxnet.proto.errors import MMError
from wxnet.sync.engine import Engine

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
