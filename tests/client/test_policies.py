from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wxnet.client.addresses import (
    BAN_CAP,
    BAN_STEP,
    Address,
    AddressBook,
    AddressSource,
    ConnectRace,
)
from wxnet.client.backoff import ReconnectBackoff
from wxnet.client.heartbeat import (
    CAP,
    MIN_HEARTBEAT,
    NOOP_TIMEOUT,
    HeartbeatAction,
    HeartbeatTimer,
    SmartHeartbeat,
)
from wxnet.client.sending import (
    NetworkQuality,
    PoorNetworkDetector,
    SendRetryPolicy,
    Verdict,
)
from wxnet.clock import FakeClock
from wxnet.proto.errors import MMRet

# ---- smart heartbeat -------------------------------------------------------------------


def run_link(hb: SmartHeartbeat, label: str, clock: FakeClock, nat_timeout: float) -> int:
    """Drive one link until it dies on a NAT that drops idle mappings after
    ``nat_timeout`` s; returns the number of successful heartbeats."""
    timer = HeartbeatTimer(hb, label, clock.now)
    ok = 0
    for _ in range(200):
        deadline = timer.get_timer()
        assert deadline is not None
        idle = deadline - timer.last_write
        clock.now = deadline
        assert timer.handle_timer(clock.now) is HeartbeatAction.SEND_NOOP
        if idle < nat_timeout:
            clock.advance(0.05)
            timer.on_noop_reply(clock.now)
            ok += 1
        else:
            clock.now = timer.get_timer() or clock.now
            assert timer.handle_timer(clock.now) is HeartbeatAction.LINK_DEAD
            return ok
    return ok


def test_first_beats_on_a_link_use_the_minimum() -> None:
    hb = SmartHeartbeat()
    clock = FakeClock(1000.0)
    timer = HeartbeatTimer(hb, "wifi", clock.now)
    assert timer.get_timer() == clock.now + MIN_HEARTBEAT


def test_heartbeat_learns_the_nat_timeout_with_a_margin() -> None:
    hb = SmartHeartbeat()
    clock = FakeClock(1000.0)
    for _ in range(10):
        run_link(hb, "cafe", clock, nat_timeout=400)
        if hb.state("cafe").stable:
            break
    st_ = hb.state("cafe")
    assert st_.stable
    # Probing went 210 -> 270 -> 330 -> 390 -> 450 (fails): settle at 450 - 80 = 370.
    assert st_.interval == 370
    assert st_.interval < 400


def test_heartbeat_reaches_the_cap_on_a_generous_network() -> None:
    hb = SmartHeartbeat()
    clock = FakeClock(1000.0)
    run_link_count = 0
    while not hb.state("lan").stable and run_link_count < 5:
        run_link(hb, "lan", clock, nat_timeout=10_000)
        run_link_count += 1
    assert hb.state("lan").interval == CAP == 580
    assert hb.state("lan").stable


def test_labels_are_independent_and_bounded() -> None:
    hb = SmartHeartbeat()
    for i in range(25):
        for _ in range(5):
            hb.on_success(f"net{i}", MIN_HEARTBEAT, 0.0)
    assert hb.state("net24").interval == MIN_HEARTBEAT + 60
    assert len(hb.snapshot()) == 20
    assert "net0" not in hb.snapshot()


def test_stable_network_restarts_search_after_two_failures() -> None:
    hb = SmartHeartbeat()
    clock = FakeClock(1000.0)
    for _ in range(10):
        run_link(hb, "x", clock, nat_timeout=400)
    assert hb.state("x").stable
    v = hb.state("x").interval
    hb.on_failure("x", v, clock.now)
    assert hb.state("x").interval == v
    hb.on_failure("x", v, clock.now)
    assert hb.state("x").interval == MIN_HEARTBEAT
    assert not hb.state("x").stable


def test_noop_timeout_is_eight_seconds_and_write_rearms() -> None:
    hb = SmartHeartbeat()
    clock = FakeClock(1000.0)
    timer = HeartbeatTimer(hb, "n", clock.now)
    clock.advance(100)
    timer.on_write(clock.now)
    assert timer.handle_timer(clock.now + MIN_HEARTBEAT - 1) is HeartbeatAction.NONE
    t = clock.now + MIN_HEARTBEAT
    assert timer.handle_timer(t) is HeartbeatAction.SEND_NOOP
    assert timer.get_timer() == t + NOOP_TIMEOUT
    assert timer.handle_timer(t + NOOP_TIMEOUT - 0.1) is HeartbeatAction.NONE
    assert timer.handle_timer(t + NOOP_TIMEOUT) is HeartbeatAction.LINK_DEAD
    assert timer.get_timer() is None


@given(st.lists(st.tuples(st.booleans(), st.sampled_from([210.0, 270.0, 330.0, 580.0]))))
def test_heartbeat_interval_always_within_bounds(events: list[tuple[bool, float]]) -> None:
    hb = SmartHeartbeat()
    now = 0.0
    for ok, _ in events:
        now += 300
        used = hb.state("n").interval
        (hb.on_success if ok else hb.on_failure)("n", used, now)
        assert MIN_HEARTBEAT <= hb.state("n").interval <= CAP


# ---- reconnect back-off ---------------------------------------------------------------


def test_backoff_climbs_the_ladder_and_resets() -> None:
    b = ReconnectBackoff(ladder=(0, 1, 2, 5), jitter=10)
    assert b.next_attempt() == 0
    assert b.on_failure(100.0) == 101.0
    assert b.on_failure(101.0, jitter=0.5) == 101.0 + 2 + 5
    assert b.on_failure(200.0) == 205.0
    assert b.on_failure(300.0) == 305.0  # capped at the last rung
    b.on_success()
    assert b.next_attempt() == 0
    b.on_failure(400.0)
    b.on_network_change(401.0)
    assert b.next_attempt() == 401.0


def test_backoff_rejects_bad_ladders() -> None:
    with pytest.raises(ValueError):
        ReconnectBackoff(ladder=())
    with pytest.raises(ValueError):
        ReconnectBackoff(ladder=(5, 1))


# ---- address bans and racing ------------------------------------------------------------


A = Address("10.0.0.1", 8080)
B = Address("10.0.0.2", 8080)
C = Address("10.0.0.3", 8080)
D = Address("10.0.0.4", 8080)


def test_three_failures_ban_for_six_minutes_growing_to_thirty() -> None:
    book = AddressBook()
    book.on_failure(A, 0)
    book.on_failure(A, 1)
    assert not book.is_banned(A, 2)
    book.on_failure(A, 2)
    assert book.banned_until(A, 2) == 2 + BAN_STEP
    assert book.is_banned(A, 2 + BAN_STEP - 1)
    assert not book.is_banned(A, 2 + BAN_STEP)
    book.on_failure(A, 1000)
    assert book.banned_until(A, 1000) == 1000 + 2 * BAN_STEP
    for i in range(20):
        book.on_failure(A, 2000 + i)
    assert book.banned_until(A, 2019) == 2019 + BAN_CAP
    book.on_success(A, 5000)
    assert not book.is_banned(A, 5000)
    assert book.failures(A) == 0


def test_order_puts_banned_and_extra_last_and_dedups() -> None:
    book = AddressBook()
    for t in range(3):
        book.on_failure(A, t)
    extra = Address("10.0.0.2", 14000, extra=True)
    order = book.order([A, extra, B, Address("10.0.0.2", 8080, AddressSource.BUILTIN)], 5)
    assert order == [B, extra, A]


def test_race_staggers_three_in_flight() -> None:
    race = ConnectRace([A, B, C, D], stagger=2.5, max_parallel=3, attempt_timeout=10)
    starts = race.start(0.0)
    assert [s.address for s in starts] == [A]
    assert race.get_timer() == 2.5
    assert [s.address for s in race.handle_timer(2.5)[1]] == [B]
    assert [s.address for s in race.handle_timer(5.0)[1]] == [C]
    # Three in flight: D waits for a slot even though the stagger passed.
    assert race.handle_timer(7.5) == ([], [])
    assert race.get_timer() == 10.0
    expired, started = race.handle_timer(10.0)
    assert expired == [A]
    assert [s.address for s in started] == [D]
    assert race.on_connected(C)
    assert race.done and race.winner == C
    assert not race.on_connected(B)


def test_race_refused_connect_starts_the_next_at_once() -> None:
    race = ConnectRace([A, B])
    race.start(0.0)
    assert [s.address for s in race.on_failed(A, 0.1)] == [B]
    race.on_failed(B, 0.2)
    assert race.done and race.winner is None
    assert race.failed == [A, B]


@given(st.lists(st.sampled_from(["fail", "timer", "connect"]), max_size=30))
def test_race_never_exceeds_parallel_limit(actions: list[str]) -> None:
    addrs = [Address(f"10.0.1.{i}", 8080) for i in range(6)]
    race = ConnectRace(addrs, max_parallel=3)
    now = 0.0
    flying: list[Address] = [s.address for s in race.start(now)]
    for act in actions:
        now += 1.0
        if act == "timer":
            expired, started = race.handle_timer(now)
            flying = [a for a in flying if a not in expired] + [s.address for s in started]
        elif act == "fail" and flying:
            a = flying.pop(0)
            flying += [s.address for s in race.on_failed(a, now)]
        elif act == "connect" and flying:
            race.on_connected(flying[0])
            flying = []
        assert len(flying) <= 3
        assert len(set(flying)) == len(flying)


# ---- send retries and poor network -------------------------------------------------------


def test_send_retry_is_bounded_then_fails() -> None:
    p = SendRetryPolicy(max_attempts=3, delays=(1.0, 3.0))
    d1 = p.after_failure(1, 10.0)
    assert d1.verdict is Verdict.RETRY and d1.at == 11.0
    d2 = p.after_failure(2, 11.0)
    assert d2.verdict is Verdict.RETRY and d2.at == 14.0
    assert p.after_failure(3, 14.0).verdict is Verdict.FAIL


def test_send_fatal_code_fails_at_once() -> None:
    p = SendRetryPolicy()
    d = p.after_failure(1, 0.0, code=MMRet.ERR_NOT_FRIEND)
    assert d.verdict is Verdict.FAIL and "-44" in d.reason
    assert p.after_failure(1, 0.0, code=MMRet.ERR_SYS).verdict is Verdict.RETRY


def test_poor_network_after_two_failures_until_success() -> None:
    det = PoorNetworkDetector()
    assert det.on_failure(1.0) is None
    assert det.on_failure(2.0) is NetworkQuality.POOR
    assert det.on_failure(3.0) is None
    assert det.quality is NetworkQuality.POOR
    assert det.on_success(4.0) is NetworkQuality.GOOD
    assert det.on_success(5.0) is None
