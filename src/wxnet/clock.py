"""One clock for the whole package: :class:`Clock` gives ``monotonic()`` (for timers and
deadlines) and ``wall()`` (for what is stored or shown: cache ages, status times).

Code that needs time takes a :class:`Clock` and never reads :mod:`time` itself, so a
test can drive it with :class:`FakeClock`, which moves only when told to. The pure
policies take ``now`` as an argument instead and need no clock at all.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["SYSTEM_CLOCK", "Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (timers, deadlines, back-off)."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch (timestamps stored or shown to people)."""
        ...


class SystemClock:
    """The real clocks: :func:`time.monotonic` and :func:`time.time`."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


SYSTEM_CLOCK = SystemClock()


class FakeClock:
    """A clock for tests: both readings move together, only by :meth:`advance` or by
    setting :attr:`now`. Calling it returns the wall reading, so it also serves where a
    plain ``Callable[[], float]`` clock is taken (the server's)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (never back); returns the new reading."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self.now += seconds
        return self.now
