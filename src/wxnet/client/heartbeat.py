"""Smart heartbeat in the Mars style (S15; docs/client.md, "How the client finds and
keeps the server").

Two pure pieces, both taking ``now`` (seconds, any monotonic origin) and returning
deadlines; neither touches a socket or a clock:

* :class:`SmartHeartbeat` learns, per network label (the Wi-Fi SSID or mobile ISP in
  Mars; any string here), the longest noop interval the path's NAT tolerates, between
  210 s and 580 s, by the "delayed heartbeat test": 5 successes at a value step it up by
  60 s, 2 failures settle at the last good value minus a 20 s margin.
* :class:`HeartbeatTimer` drives one link: it says when to send the next noop (the
  interval after the last write) and declares the link dead when a noop gets no reply
  within 8 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = [
    "BASE_SUCCESS_COUNT",
    "HEART_STEP",
    "MAX_FAIL_COUNT",
    "MAX_HEARTBEAT",
    "MIN_HEARTBEAT",
    "NOOP_TIMEOUT",
    "STABLE_TEST_COUNT",
    "SUCCESS_STEP",
    "HeartbeatAction",
    "HeartbeatTimer",
    "NetworkHeartbeat",
    "SmartHeartbeat",
]

MIN_HEARTBEAT = 210.0
MAX_HEARTBEAT = 600.0
HEART_STEP = 60.0
SUCCESS_STEP = 20.0
MAX_FAIL_COUNT = 2
BASE_SUCCESS_COUNT = 5
STABLE_TEST_COUNT = 3
NOOP_TIMEOUT = 8.0
#: Mars re-probes a stable value 20 s higher after a week (1.5 step 7).
REPROBE_AFTER = 7 * 24 * 3600.0
#: Mars keeps at most 20 network sections in Heartbeat.ini.
MAX_NETWORKS = 20
CAP = MAX_HEARTBEAT - SUCCESS_STEP  # 580 s


@dataclass(frozen=True, slots=True)
class NetworkHeartbeat:
    """What is known about one network: the current interval and whether it is settled."""

    interval: float = MIN_HEARTBEAT
    stable: bool = False
    successes: int = 0
    failures: int = 0
    modified: float = 0.0


class SmartHeartbeat:
    """Learns the noop interval per network label.

    Call :meth:`interval` for the value to use on a link's ``n``-th heartbeat, then
    :meth:`on_success` or :meth:`on_failure` with the interval that was actually used.
    A result only counts when it was measured at the probe value (as in Mars's smart heartbeat).
    """

    def __init__(self, min_interval: float = MIN_HEARTBEAT, cap: float = CAP) -> None:
        if not 0 < min_interval <= cap:
            raise ValueError("need 0 < min_interval <= cap")
        self.min_interval = min_interval
        self.cap = cap
        self._nets: dict[str, NetworkHeartbeat] = {}

    def state(self, label: str) -> NetworkHeartbeat:
        return self._nets.get(label, NetworkHeartbeat(interval=self.min_interval))

    def interval(self, label: str, beat_on_link: int) -> float:
        """The interval for the ``beat_on_link``-th heartbeat (0-based) of a fresh link:
        the first :data:`STABLE_TEST_COUNT` use the minimum (as in Mars's smart heartbeat)."""
        if beat_on_link < STABLE_TEST_COUNT:
            return self.min_interval
        return self.state(label).interval

    def on_success(self, label: str, used: float, now: float) -> None:
        st = self.state(label)
        if used != st.interval:
            return
        if st.stable:
            if now - st.modified >= REPROBE_AFTER and st.interval < self.cap:
                st = NetworkHeartbeat(min(st.interval + SUCCESS_STEP, self.cap), False, 0, 0, now)
            else:
                st = NetworkHeartbeat(st.interval, True, st.successes + 1, 0, st.modified)
        elif st.successes + 1 >= BASE_SUCCESS_COUNT:
            if st.interval >= self.cap:
                st = NetworkHeartbeat(self.cap, True, 0, 0, now)
            else:
                st = NetworkHeartbeat(min(st.interval + HEART_STEP, self.cap), False, 0, 0, now)
        else:
            st = NetworkHeartbeat(st.interval, False, st.successes + 1, 0, st.modified)
        self._store(label, st)

    def on_failure(self, label: str, used: float, now: float) -> None:
        st = self.state(label)
        if used != st.interval:
            return
        failures = st.failures + 1
        if st.stable:
            if failures >= MAX_FAIL_COUNT:
                st = NetworkHeartbeat(self.min_interval, False, 0, 0, now)
            else:
                st = NetworkHeartbeat(st.interval, True, 0, failures, st.modified)
        elif st.interval <= self.min_interval:
            # A failure at the minimum says nothing about the NAT (1.5 step 5).
            st = NetworkHeartbeat(st.interval, False, 0, 0, st.modified)
        elif failures >= MAX_FAIL_COUNT:
            settled = max(self.min_interval, st.interval - HEART_STEP - SUCCESS_STEP)
            st = NetworkHeartbeat(settled, True, 0, 0, now)
        else:
            st = NetworkHeartbeat(st.interval, False, 0, failures, st.modified)
        self._store(label, st)

    def _store(self, label: str, st: NetworkHeartbeat) -> None:
        self._nets.pop(label, None)
        self._nets[label] = st
        while len(self._nets) > MAX_NETWORKS:
            del self._nets[next(iter(self._nets))]

    def snapshot(self) -> dict[str, NetworkHeartbeat]:
        return dict(self._nets)

    def restore(self, nets: dict[str, NetworkHeartbeat]) -> None:
        for label, st in nets.items():
            self._store(label, st)


class HeartbeatAction(Enum):
    NONE = "none"
    SEND_NOOP = "send_noop"
    LINK_DEAD = "link_dead"


class HeartbeatTimer:
    """The heartbeat of one long link.

    ``on_write(now)`` after every write re-arms the idle timer (Mars re-arms after every
    successful write, 1.4); ``handle_timer(now)`` at :meth:`get_timer` returns what to
    do; ``on_noop_reply(now)`` when the cmd 1000000006 reply arrives.
    """

    def __init__(
        self,
        policy: SmartHeartbeat,
        label: str,
        now: float,
        noop_timeout: float = NOOP_TIMEOUT,
    ) -> None:
        self.policy = policy
        self.label = label
        self.noop_timeout = noop_timeout
        self.beats = 0
        self.last_write = now
        self.last_reply: float | None = None
        self.noop_sent_at: float | None = None
        self.used_interval = policy.interval(label, 0)
        self.dead = False

    def get_timer(self) -> float | None:
        if self.dead:
            return None
        if self.noop_sent_at is not None:
            return self.noop_sent_at + self.noop_timeout
        return self.last_write + self.used_interval

    def on_write(self, now: float) -> None:
        self.last_write = max(self.last_write, now)

    def handle_timer(self, now: float) -> HeartbeatAction:
        deadline = self.get_timer()
        if deadline is None or now < deadline:
            return HeartbeatAction.NONE
        if self.noop_sent_at is not None:
            self.dead = True
            self.policy.on_failure(self.label, self.used_interval, now)
            return HeartbeatAction.LINK_DEAD
        self.noop_sent_at = now
        self.last_write = now
        return HeartbeatAction.SEND_NOOP

    def on_noop_reply(self, now: float) -> None:
        if self.noop_sent_at is None or self.dead:
            return
        self.noop_sent_at = None
        self.last_reply = now
        self.policy.on_success(self.label, self.used_interval, now)
        self.beats += 1
        self.used_interval = self.policy.interval(self.label, self.beats)
