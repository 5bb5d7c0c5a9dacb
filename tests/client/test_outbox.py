"""The outbox state machine, driven by a fake clock: retries at the policy's times,
failed after the last attempt, never two attempts of one message at once."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wxnet.client.outbox import Attempt, DeliveryState, OutboxMachine, OutboxStateError
from wxnet.client.sending import SendRetryPolicy, Verdict
from wxnet.clock import FakeClock
from wxnet.proto.errors import MMRet


def machine(attempts: int = 3, delays: tuple[float, ...] = (1.0, 3.0)) -> OutboxMachine:
    return OutboxMachine(SendRetryPolicy(attempts, delays))


def test_success_on_the_first_attempt() -> None:
    m = machine()
    assert m.submit("a")
    assert m.start_ready() == [Attempt("a", 1)]
    assert m.state("a") is DeliveryState.IN_FLIGHT
    m.succeeded("a")
    assert m.state("a") is DeliveryState.SENT
    assert m.get_timer() is None and m.start_ready() == []


def test_retries_at_the_policy_delays_then_fails() -> None:
    clock = FakeClock(100.0)
    m = machine()
    m.submit("a")
    m.start_ready()
    d = m.failed("a", clock.now, reason="timeout")
    assert d.verdict is Verdict.RETRY and m.get_timer() == 101.0
    assert m.handle_timer(100.5) == [] and m.start_ready() == []
    clock.advance(1.0)
    assert m.handle_timer(clock.now) == ["a"]
    assert m.start_ready() == [Attempt("a", 2)]
    m.failed("a", clock.now)
    assert m.get_timer() == clock.now + 3.0
    clock.advance(3.0)
    m.handle_timer(clock.now)
    assert m.start_ready() == [Attempt("a", 3)]
    d = m.failed("a", clock.now, reason="still nothing")
    assert d.verdict is Verdict.FAIL and m.state("a") is DeliveryState.FAILED
    assert m.get_timer() is None


def test_a_refusal_that_cannot_change_fails_at_once() -> None:
    m = machine()
    m.submit("a")
    m.start_ready()
    d = m.failed("a", 0.0, code=int(MMRet.ERR_NOT_FRIEND), reason="not a friend")
    assert d.verdict is Verdict.FAIL and m.state("a") is DeliveryState.FAILED


def test_submit_while_on_its_way_changes_nothing_and_resend_starts_over() -> None:
    m = machine(attempts=1)
    m.submit("a")
    assert not m.submit("a")  # a resumed outbox, a new link: no second copy
    m.start_ready()
    assert not m.submit("a")
    assert m.start_ready() == []
    m.failed("a", 0.0)
    assert m.state("a") is DeliveryState.FAILED
    assert m.submit("a")  # resend: same ClientMsgId, fresh attempt count
    assert m.start_ready() == [Attempt("a", 1)]


def test_illegal_inputs_raise_and_change_nothing() -> None:
    m = machine()
    with pytest.raises(OutboxStateError):
        m.succeeded("nobody")
    m.submit("a")
    with pytest.raises(OutboxStateError):
        m.succeeded("a")  # not in flight
    with pytest.raises(OutboxStateError):
        m.failed("a", 0.0)
    assert m.state("a") is DeliveryState.READY


def test_ready_messages_start_in_submit_order() -> None:
    m = machine()
    for cid in ("c", "a", "b"):
        m.submit(cid)
    assert [a.client_msg_id for a in m.start_ready()] == ["c", "a", "b"]


#: One step of the world: (message index, what happens). Outcomes apply to an attempt in
#: flight; "submit" is a (re)submit; "tick" moves the clock.
steps = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.sampled_from(["submit", "ok", "fail", "fatal", "tick"]),
        st.floats(0.0, 5.0),
    ),
    max_size=60,
)


@given(steps, st.integers(1, 4), st.lists(st.floats(0.0, 4.0), min_size=1, max_size=3))
def test_any_order_of_outcomes_keeps_the_rules(
    plan: list[tuple[int, str, float]], max_attempts: int, delays: list[float]
) -> None:
    clock = FakeClock(0.0)
    policy = SendRetryPolicy(max_attempts, delays)
    m = OutboxMachine(policy)
    in_flight: dict[str, int] = {}  # cid -> attempt number
    last_fail: dict[str, float] = {}
    sent: set[str] = set()
    for idx, what, dt in plan:
        cid = f"m{idx}"
        if what == "submit":
            before = m.state(cid)
            took = m.submit(cid)
            assert took == (before in (None, DeliveryState.SENT, DeliveryState.FAILED))
            if took:
                sent.discard(cid)
        elif what == "tick":
            clock.advance(dt)
            for due in m.handle_timer(clock.now):
                # a retry never comes before its delay
                assert clock.now >= last_fail[due] + min(delays)
        elif cid in in_flight:
            n = in_flight.pop(cid)
            if what == "ok":
                m.succeeded(cid)
                sent.add(cid)
            else:
                code = int(MMRet.ERR_NOT_FRIEND) if what == "fatal" else None
                d = m.failed(cid, clock.now, code=code)
                last_fail[cid] = clock.now
                expect_fail = what == "fatal" or n >= max_attempts
                assert (d.verdict is Verdict.FAIL) == expect_fail
        for a in m.start_ready():
            # never two attempts of one message at once, never one after it was sent
            assert a.client_msg_id not in in_flight and a.client_msg_id not in sent
            assert 1 <= a.number <= max_attempts
            in_flight[a.client_msg_id] = a.number
        for c, n in in_flight.items():
            assert m.state(c) is DeliveryState.IN_FLIGHT, (c, n)
        for c in sent:
            assert m.state(c) is DeliveryState.SENT
    timer = m.get_timer()
    waiting = [c for c in m.pending() if m.state(c) is DeliveryState.BACKOFF]
    assert (timer is None) == (not waiting)
