"""QR logins and web sessions as pure state, on a fake clock."""

from __future__ import annotations

from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wxnet.proto.web import is_token
from wxnet.server.web.api import WebApi
from wxnet.server.web.backend import Backend
from wxnet.server.web.login import (
    LoginState,
    QrLoginRefused,
    QrLogins,
    QrLoginsFull,
    QrLoginUnknown,
    WebSessions,
)

T0 = 1_700_000_000.0


def test_qr_login_states() -> None:
    logins = QrLogins(ttl=300)
    q = logins.create(T0)
    assert is_token(q.uuid) and len(q.uuid) >= 22
    assert q.poll_code(T0) == 408
    logins.scan(q.uuid, 7, T0 + 1, confirm=False)
    assert q.state is LoginState.SCANNED and q.poll_code(T0 + 1) == 201
    with pytest.raises(QrLoginRefused):
        logins.scan(q.uuid, 8, T0 + 2, confirm=True)  # another account
    logins.scan(q.uuid, 7, T0 + 2, confirm=True)
    assert q.poll_code(T0 + 2) == 200 and is_token(q.ticket)
    assert logins.redeem(q.ticket, "other-uuid", T0 + 3) is None
    assert logins.redeem(q.ticket, q.uuid, T0 + 3) is None  # a wrong guess burns the ticket


def test_ticket_is_single_use_and_expires() -> None:
    logins = QrLogins(ttl=300)
    q = logins.create(T0)
    logins.scan(q.uuid, 7, T0, confirm=True)
    assert logins.redeem(q.ticket, q.uuid, T0 + 1) == 7
    assert logins.redeem(q.ticket, q.uuid, T0 + 2) is None
    with pytest.raises(QrLoginRefused):
        logins.scan(q.uuid, 7, T0 + 3, confirm=True)
    late = logins.create(T0)
    logins.scan(late.uuid, 7, T0, confirm=True)
    assert logins.redeem(late.ticket, late.uuid, T0 + 301) is None


def test_expiry_and_bound() -> None:
    logins = QrLogins(ttl=10, limit=2)
    a = logins.create(T0)
    logins.create(T0)
    with pytest.raises(QrLoginsFull):
        logins.create(T0 + 1)
    assert a.poll_code(T0 + 10) == 400
    with pytest.raises(QrLoginUnknown):
        logins.scan(a.uuid, 1, T0 + 10, confirm=True)
    logins.create(T0 + 11)  # the expired ones made room
    assert len(logins) == 1


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


def test_api_sweep_forgets_expired_state() -> None:
    now = [T0]
    api = WebApi(cast(Backend, object()), clock=lambda: now[0])
    q = api.logins.create(T0)
    api._reported[q.uuid] = 0
    s = api.sessions.add(7, "alice", "Alice", "key", T0)
    live = api.sessions.add(8, "bob", "Bob", "key2", T0)
    api.sessions.end(s.wxsid, T0)
    now[0] = T0 + 3601
    api.sweep()
    assert len(api.logins) == 0 and q.uuid not in api._reported
    assert api.sessions.find(7, s.wxsid, now[0]) is None
    assert api.sessions.find(8, live.wxsid, now[0]) is live


ops = st.lists(
    st.tuples(
        st.sampled_from(["scan", "confirm", "redeem", "redeem_wrong", "wait"]),
        st.integers(1, 3),  # which account acts
        st.integers(0, 200),  # seconds that pass first
    ),
    max_size=12,
)


@given(ops)
def test_qr_login_invariants(steps: list[tuple[str, int, int]]) -> None:
    """Any sequence of phone actions and clock steps: only the first scanning account
    can approve, a login yields at most one session, and only after approval in time."""
    logins = QrLogins(ttl=300)
    now = T0
    q = logins.create(now)
    owner: int | None = None
    approved = False
    redeemed = 0
    for op, uin, dt in steps:
        now += dt
        expired = now >= q.expires
        if op in ("scan", "confirm"):
            try:
                logins.scan(q.uuid, uin, now, confirm=op == "confirm")
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
            got = logins.redeem(q.ticket, q.uuid, now)
            if got is not None:
                redeemed += 1
                assert got == owner and approved and not expired
        elif op == "redeem_wrong":
            assert logins.redeem("not-a-ticket", q.uuid, now) is None
        code = q.poll_code(now)
        if code == 200:
            assert approved
        if code == 201:
            assert owner is not None and not approved
    assert redeemed <= 1
