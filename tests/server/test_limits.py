"""The pure policies behind the caps: connection admission, client address behind a
proxy, login throttling (time passed in)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wxnet.server.limits import ConnectionLimiter, TrustedProxies, client_address
from wxnet.sync.throttle import LoginThrottle


def test_limiter_caps_total_and_per_address_and_releases() -> None:
    lim = ConnectionLimiter(total=3, per_address=2)
    assert lim.admit("a") is None and lim.admit("a") is None
    assert lim.admit("a") == "address"
    assert lim.admit("b") is None
    assert lim.admit("c") == "total"
    assert lim.refused == {"total": 1, "address": 1}
    lim.release("a")
    assert lim.admit("c") is None
    lim.release("nobody")  # never admitted: no effect
    assert lim.open == 3


@given(st.lists(st.tuples(st.booleans(), st.sampled_from("abc"))))
def test_limiter_never_exceeds_its_caps(ops: list[tuple[bool, str]]) -> None:
    lim = ConnectionLimiter(total=4, per_address=2)
    held: list[str] = []
    for admit, addr in ops:
        if admit:
            if lim.admit(addr) is None:
                held.append(addr)
        elif addr in held:
            held.remove(addr)
            lim.release(addr)
        assert lim.open == len(held) <= 4
        assert all(lim.from_address(x) == held.count(x) <= 2 for x in "abc")


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    trusted = TrustedProxies(["127.0.0.1", "10.0.0.0/8"])
    assert client_address("203.0.113.5", ["1.2.3.4"], trusted) == "203.0.113.5"
    assert client_address("127.0.0.1", ["1.2.3.4"], trusted) == "1.2.3.4"
    # the client's own left-hand entries prove nothing: right-most untrusted hop wins
    assert client_address("127.0.0.1", ["6.6.6.6, 1.2.3.4, 10.1.2.3"], trusted) == "1.2.3.4"
    assert client_address("127.0.0.1", ["6.6.6.6", "1.2.3.4"], trusted) == "1.2.3.4"
    assert client_address("127.0.0.1", ["junk, 1.2.3.4"], trusted) == "1.2.3.4"
    assert client_address("127.0.0.1", ["1.2.3.4, junk"], trusted) == "127.0.0.1"
    assert client_address("127.0.0.1", [], trusted) == "127.0.0.1"
    assert client_address("127.0.0.1", ["1.2.3.4"], TrustedProxies([])) == "127.0.0.1"


def test_throttle_backs_off_the_pair_not_the_account() -> None:
    t = LoginThrottle(free=5, per_address=20, window=60.0, max_backoff=900.0)
    now = 1000.0
    for _ in range(5):
        assert t.retry_after("bob", "6.6.6.6", now) == 0
        t.failed("bob", "6.6.6.6", now)
    assert t.retry_after("bob", "6.6.6.6", now) == 1.0
    assert t.retry_after("bob", "1.1.1.1", now) == 0  # the owner, elsewhere
    now += 1.0
    t.failed("bob", "6.6.6.6", now)
    assert t.retry_after("bob", "6.6.6.6", now) == 2.0  # doubling
    t.succeeded("bob", "6.6.6.6")
    assert t.retry_after("bob", "6.6.6.6", now) == 0
    assert t.throttled == 2


def test_throttle_blocks_an_address_that_tries_many_accounts() -> None:
    t = LoginThrottle(free=5, per_address=20, window=60.0)
    for i in range(20):
        t.failed(f"user{i}", "6.6.6.6", 0.0)
    assert t.retry_after("someone", "6.6.6.6", 1.0) == 59.0
    assert t.retry_after("someone", "6.6.6.6", 61.0) == 0  # the window passed
