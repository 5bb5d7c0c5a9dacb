"""Reconnect back-off (docs/client.md, "How the client finds and keeps the server"),
as a pure policy.

Mars spaces reconnects of an active app at 5-20 s and walks a ladder of 0, 60, 120,
240, 360, 480, 600 s when inactive. A command-line client is "active" while it runs, so
the default ladder here is shorter, but the shape is Mars's: the index goes up after
every failed attempt, a successful connect resets it, the wait is capped, and 0-``jitter``
seconds of jitter (a value the caller passes in, so tests stay deterministic) spread a
crowd of clients after a server restart.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["DEFAULT_LADDER", "MARS_INACTIVE_LADDER", "ReconnectBackoff"]

DEFAULT_LADDER: tuple[float, ...] = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0)
MARS_INACTIVE_LADDER: tuple[float, ...] = (0.0, 60.0, 120.0, 240.0, 360.0, 480.0, 600.0)


class ReconnectBackoff:
    """When may the next connect attempt start?

    ``on_failure(now, jitter)`` after a failed attempt or a lost link;
    ``on_success()`` once a link is up; :meth:`next_attempt` is the deadline.
    """

    def __init__(self, ladder: Sequence[float] = DEFAULT_LADDER, jitter: float = 0.0) -> None:
        if not ladder or any(b < 0 for b in ladder) or list(ladder) != sorted(ladder):
            raise ValueError("the ladder must be a non-empty, non-decreasing list of delays")
        self.ladder = tuple(ladder)
        self.max_jitter = jitter
        self.failures = 0
        self._deadline = 0.0

    def next_attempt(self) -> float:
        return self._deadline

    def delay_for(self, failures: int) -> float:
        return self.ladder[min(failures, len(self.ladder) - 1)]

    def on_failure(self, now: float, jitter: float = 0.0) -> float:
        """Record a failure and return the deadline of the next attempt.

        ``jitter`` is a uniform sample in [0, 1) scaled by the configured maximum."""
        self.failures += 1
        self._deadline = now + self.delay_for(self.failures) + self.max_jitter * jitter
        return self._deadline

    def on_success(self) -> None:
        self.failures = 0
        self._deadline = 0.0

    def on_network_change(self, now: float) -> None:
        """Mars reconnects at once on a network change (1.8 table: 0 s)."""
        self._deadline = now
