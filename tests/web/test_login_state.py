"""QR logins (in the real stores, as every process sees them) and web sessions, on a
fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wxnet.proto.web import is_token
from wxnet.server.web.api import WebApi
from wxnet.server.web.backend import Backend
from wxnet.server.web.login import (
    LoginState,
    QrLogin,
    QrLoginRefused,
    QrLogins,
    QrLoginUnknown,
    WebSessions,
)
from wxnet.sync.engine import profile_item
from wxnet.sync.sqlite_store import SQLiteStore
from wxnet.sync.store import Store

T = TypeVar("T")

T0 = 1_700_000_000.0


async def test_qr_login_states(web_store: Store) -> None:
    logins = QrLogins(web_store, ttl=300)
    q, _ = await logins.create(T0, "h")
    assert q is not None and is_token(q.uuid) and len(q.uuid) >= 22
    assert q.poll_code(T0) == 408
    q = await logins.scan(q.uuid, 7, T0 + 1, confirm=False)
    assert q.state is LoginState.SCANNED and q.poll_code(T0 + 1) == 201
    with pytest.raises(QrLoginRefused):
        await logins.scan(q.uuid, 8, T0 + 2, confirm=True)  # another account
    q = await logins.scan(q.uuid, 7, T0 + 2, confirm=True)
    assert q.poll_code(T0 + 2) == 200 and is_token(q.ticket)
    again = await logins.get(q.uuid, T0 + 2)  # as another process reads it
    assert again is not None and again.ticket == q.ticket and again.version == 2
    assert await logins.redeem(q.ticket, "other-uuid", T0 + 3) is None
    assert await logins.redeem("x" * 22, q.uuid, T0 + 3) is None  # a wrong ticket
    assert await logins.redeem(q.ticket, q.uuid, T0 + 3) == 7
    assert await logins.redeem(q.ticket, q.uuid, T0 + 3) is None  # once


async def test_stored_logins_hold_no_uuid_or_ticket(web_store: Store) -> None:
    logins = QrLogins(web_store, ttl=300)
    q, _ = await logins.create(T0, "h")
    assert q is not None
    q = await logins.scan(q.uuid, 7, T0, confirm=True)
    row = await web_store.qr_login(q.key)
    assert row is not None and q.uuid not in repr(row) and q.ticket not in repr(row)


async def test_ticket_is_single_use_and_expires(web_store: Store) -> None:
    logins = QrLogins(web_store, ttl=300)
    q, _ = await logins.create(T0, "h")
    assert q is not None
    q = await logins.scan(q.uuid, 7, T0, confirm=True)
    assert await logins.redeem(q.ticket, q.uuid, T0 + 1) == 7
    assert await logins.redeem(q.ticket, q.uuid, T0 + 2) is None
    with pytest.raises(QrLoginRefused):
        await logins.scan(q.uuid, 7, T0 + 3, confirm=True)
    late, _ = await logins.create(T0, "h")
    assert late is not None
    late = await logins.scan(late.uuid, 7, T0, confirm=True)
    assert await logins.redeem(late.ticket, late.uuid, T0 + 301) is None


async def test_expiry_and_bound(web_store: Store) -> None:
    logins = QrLogins(web_store, ttl=10, max_pending=1)  # 2 logins in all
    a, _ = await logins.create(T0, "h1")
    assert a is not None
    await logins.scan(a.uuid, 1, T0, confirm=False)  # scanned: leaves the pending cap
    b, gone = await logins.create(T0, "h2")
    assert b is not None and gone == []
    await logins.scan(b.uuid, 2, T0, confirm=False)
    full, _ = await logins.create(T0 + 1, "h3")
    assert full is None  # only scanned logins, all in use
    got = await logins.get(a.uuid, T0 + 10)
    assert got is not None and got.poll_code(T0 + 10) == 400
    with pytest.raises(QrLoginUnknown):
        await logins.scan(a.uuid, 1, T0 + 10, confirm=True)
    c, _ = await logins.create(T0 + 11, "h3")  # the expired ones made room
    assert c is not None and await logins.expire(T0 + 11) == 1
    assert await logins.get(a.uuid, T0 + 11) is None


async def test_fair_caps_evict_the_heaviest_holder_first(web_store: Store) -> None:
    """An address holds at most ``per_address`` waiting logins (its own oldest go first);
    at the global cap the oldest login of the address holding the most goes, so a flood
    pushes out only its own logins and a newcomer always gets one."""
    logins = QrLogins(web_store, ttl=300, max_pending=6, per_address=3)
    flood: list[QrLogin] = []
    for i in range(5):
        q, gone = await logins.create(T0 + i, "flood")
        assert q is not None
        assert gone == ([flood[i - 3].key] if i >= 3 else [])
        flood.append(q)
    user, gone = await logins.create(T0 + 5, "user")
    assert user is not None and gone == []
    for i in range(3):  # a second flooder: room comes from the heaviest holders first
        q, gone = await logins.create(T0 + 6 + i, f"other{i}")
        assert q is not None and user.key not in gone
    for i in range(10):  # when every address holds one, one of them goes
        q, gone = await logins.create(T0 + 10 + i, f"late{i}")
        assert q is not None and len(gone) == 1
    assert await logins.expire(T0 + 20) == 6


async def test_a_push_login_is_found_by_its_account(web_store: Store) -> None:
    logins = QrLogins(web_store, ttl=300)
    q, _ = await logins.create(T0, "h", push_uin=7)
    assert q is not None and await logins.push_pending(8, T0) == ""
    assert await logins.push_pending(7, T0) == q.uuid
    with pytest.raises(QrLoginRefused):
        await logins.scan(q.uuid, 8, T0, confirm=True)  # it asks account 7
    await logins.scan(q.uuid, 7, T0, confirm=True)
    assert await logins.push_pending(7, T0) == ""  # approved: nothing waits


def test_sessions_bound_to_uin_and_expire() -> None:
    sessions = WebSessions(ttl=100, per_account=2)
    s = sessions.add(7, "alice", "Alice", "key", T0)
    for token in (s.wxsid, s.skey, s.pass_ticket, s.data_ticket):
        assert is_token(token)
    assert sessions.find(7, s.wxsid, T0 + 1) is s
    assert sessions.find(8, s.wxsid, T0 + 1) is None  # wxsid of another account
    assert sessions.find(7, s.wxsid + "x", T0 + 1) is None
    found = sessions.find(7, s.wxsid, T0 + 100)
    assert found is not None and not found.alive
    assert sessions.sweep(T0 + 100 + 3600) == 1 and len(sessions) == 0


def test_oldest_session_makes_room() -> None:
    sessions = WebSessions(ttl=100, per_account=2)
    a = sessions.add(7, "alice", "Alice", "k1", T0)
    sessions.add(7, "alice", "Alice", "k2", T0 + 1)
    sessions.add(7, "alice", "Alice", "k3", T0 + 2)
    assert not a.alive and len(sessions.of_account(7)) == 2
    a2 = sessions.add(9, "bob", "Bob", "k4", T0)
    assert sessions.end(a2.wxsid) is a2 and not a2.alive
    a2.remember_sent("1", keep=2)
    a2.remember_sent("2", keep=2)
    a2.remember_sent("3", keep=2)
    assert list(a2.sent) == ["2", "3"]


async def test_api_sweep_forgets_expired_state(tmp_path: Path) -> None:
    now = [T0]
    store = SQLiteStore(tmp_path / "wxnet.db", "NORMAL", profile_item=profile_item)
    await store.start(lambda _ch: None)
    try:
        api = WebApi(cast(Backend, object()), store, clock=lambda: now[0],
                     spool_dir=tmp_path / "spool")  # fmt: skip
        q, _ = await api.logins.create(T0, "h")
        assert q is not None
        api._reported[q.uuid] = 0
        s = api.sessions.add(7, "alice", "Alice", "key", T0)
        live = api.sessions.add(8, "bob", "Bob", "key2", T0)
        api.sessions.end(s.wxsid, T0)
        now[0] = T0 + 3601
        await api.sweep()
        assert len(api.logins) == 0 and await api.logins.get(q.uuid, now[0]) is None
        assert api.sessions.find(7, s.wxsid, now[0]) is None
        assert api.sessions.find(8, live.wxsid, now[0]) is live
    finally:
        await store.aclose()


ops = st.lists(
    st.tuples(
        st.sampled_from(["scan", "confirm", "redeem", "redeem_wrong", "wait"]),
        st.integers(1, 3),  # which account acts
        st.integers(0, 200),  # seconds that pass first
    ),
    max_size=12,
)


async def test_qr_login_invariants(tmp_path: Path) -> None:
    """Any sequence of phone actions and clock steps: only the first scanning account
    can approve, a login yields at most one session, and only after approval in time
    (on the real store, as every process sees it)."""
    store = SQLiteStore(tmp_path / "wxnet.db", "NORMAL", profile_item=profile_item)
    await store.start(lambda _ch: None)
    loop = asyncio.get_running_loop()

    def run(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(20)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(ops)
    def check(steps: list[tuple[str, int, int]]) -> None:
        logins = QrLogins(store, ttl=300)
        now = T0
        q, _ = run(logins.create(now, "h"))
        assert q is not None
        owner: int | None = None
        approved = False
        redeemed = 0
        for op, uin, dt in steps:
            now += dt
            expired = now >= q.expires
            if op in ("scan", "confirm"):
                try:
                    q = run(logins.scan(q.uuid, uin, now, confirm=op == "confirm"))
                except QrLoginUnknown:
                    assert expired
                    continue
                except QrLoginRefused:
                    assert (owner is not None and owner != uin) or approved
                    continue
                assert not expired and (owner is None or owner == uin) and not approved
                owner = uin
                approved = approved or op == "confirm"
            elif op == "redeem" and q.ticket:
                got = run(logins.redeem(q.ticket, q.uuid, now))
                if got is not None:
                    redeemed += 1
                    assert got == owner and approved and not expired
            elif op == "redeem_wrong":
                assert run(logins.redeem("not-a-ticket", q.uuid, now)) is None
            seen = run(logins.get(q.uuid, now))
            code = 400 if seen is None else seen.poll_code(now)
            if code == 200:
                assert approved
            if code == 201:
                assert owner is not None and not approved
        assert redeemed <= 1

    try:
        await asyncio.to_thread(check)
    finally:
        await store.aclose()
