"""Address choice: bans for failing addresses and staggered connect racing
(S9, S12, S14; docs/client.md, "How the client finds and keeps the server").
Pure: ``now`` passed in.

* :class:`AddressBook` keeps each ``(host, port)``'s consecutive failures; three or more
  ban it for 6 min plus 6 min per extra failure, capped at 30 min (Mars
  ``simple_ipport_sort.cc``). :meth:`AddressBook.order` puts banned ones last (they are
  tried only when nothing else is left).
* :class:`ConnectRace` plans one connect round: start candidate 0, one more every 2.5 s
  while none has connected, at most 3 in flight, 10 s per attempt; the first to connect
  wins (Mars ``ComplexConnect``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "BAN_CAP",
    "BAN_FAILURES",
    "BAN_STEP",
    "Address",
    "AddressBook",
    "AddressSource",
    "ConnectRace",
    "RaceStart",
    "distinct",
]

BAN_FAILURES = 3
BAN_STEP = 6 * 60.0
BAN_CAP = 30 * 60.0


class AddressSource(Enum):
    """Where an address came from, best first (Mars ``IPSourceType``)."""

    DNS = "dns"
    NEWDNS = "newdns"
    BUILTIN = "builtin"


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int
    source: AddressSource = AddressSource.DNS
    #: The extra, last-resort port (QQ's 14000, S14).
    extra: bool = False

    @property
    def key(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def distinct(addresses: Iterable[Address]) -> list[Address]:
    """``addresses`` without repeats of a ``(host, port)``: the first copy (the best
    source) stays, in the given order."""
    seen: set[tuple[str, int]] = set()
    unique: list[Address] = []
    for a in addresses:
        if a.key not in seen:
            seen.add(a.key)
            unique.append(a)
    return unique


@dataclass(slots=True)
class _Record:
    failures: int = 0
    banned_until: float = 0.0
    last_success: float | None = None


class AddressBook:
    """Success and failure records per ``(host, port)``."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, int], _Record] = {}

    def on_failure(self, addr: Address | tuple[str, int], now: float) -> None:
        key = addr.key if isinstance(addr, Address) else addr
        rec = self._records.setdefault(key, _Record())
        rec.failures += 1
        if rec.failures >= BAN_FAILURES:
            extra = rec.failures - BAN_FAILURES
            rec.banned_until = now + min(BAN_STEP * (1 + extra), BAN_CAP)

    def on_success(self, addr: Address | tuple[str, int], now: float) -> None:
        key = addr.key if isinstance(addr, Address) else addr
        rec = self._records.setdefault(key, _Record())
        rec.failures = 0
        rec.banned_until = 0.0
        rec.last_success = now

    def ban(self, addr: Address | tuple[str, int], now: float, seconds: float = BAN_CAP) -> None:
        """A ban the server asked for (Mars: 30 min)."""
        key = addr.key if isinstance(addr, Address) else addr
        self._records.setdefault(key, _Record()).banned_until = now + seconds

    def banned_until(self, addr: Address | tuple[str, int], now: float) -> float | None:
        key = addr.key if isinstance(addr, Address) else addr
        rec = self._records.get(key)
        if rec is None or rec.banned_until <= now:
            return None
        return rec.banned_until

    def is_banned(self, addr: Address | tuple[str, int], now: float) -> bool:
        return self.banned_until(addr, now) is not None

    def failures(self, addr: Address | tuple[str, int]) -> int:
        key = addr.key if isinstance(addr, Address) else addr
        rec = self._records.get(key)
        return rec.failures if rec else 0

    def order(self, candidates: Iterable[Address], now: float) -> list[Address]:
        """Deduplicate by ``(host, port)`` keeping the first (best-source) copy, keep
        the given preference order, and move extra-port then banned addresses last."""
        return sorted(distinct(candidates), key=lambda a: (self.is_banned(a, now), a.extra))


@dataclass(frozen=True, slots=True)
class RaceStart:
    """Start connecting to ``address`` now; give up on it at ``deadline``."""

    address: Address
    deadline: float


@dataclass(slots=True)
class ConnectRace:
    """One staggered connect round over ``candidates`` (best first).

    Call :meth:`start` once, then :meth:`handle_timer` at :meth:`get_timer`, and
    :meth:`on_failed` / :meth:`on_connected` as attempts end. Each returns the attempts
    to start now. :attr:`winner` is set by the first connect; :attr:`done` is true when
    the round is over (a winner, or every candidate failed).
    """

    candidates: Sequence[Address]
    stagger: float = 2.5
    max_parallel: int = 3
    attempt_timeout: float = 10.0
    winner: Address | None = None
    _next: int = 0
    _next_start_at: float = 0.0
    _in_flight: dict[tuple[str, int], float] = field(default_factory=dict)
    failed: list[Address] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.winner is not None or (
            self._next >= len(self.candidates) and not self._in_flight
        )

    def start(self, now: float) -> list[RaceStart]:
        return self._launch(now)

    def get_timer(self) -> float | None:
        if self.done:
            return None
        times = list(self._in_flight.values())
        if self._next < len(self.candidates) and len(self._in_flight) < self.max_parallel:
            times.append(self._next_start_at)
        return min(times) if times else None

    def handle_timer(self, now: float) -> tuple[list[Address], list[RaceStart]]:
        """Returns (attempts timed out, attempts to start)."""
        if self.done:
            return [], []
        expired = [a for a in self.candidates if self._in_flight.get(a.key, now + 1) <= now]
        for a in expired:
            del self._in_flight[a.key]
            self.failed.append(a)
        return expired, self._launch(now, forced=bool(expired))

    def on_failed(self, addr: Address, now: float) -> list[RaceStart]:
        if self._in_flight.pop(addr.key, None) is None or self.winner is not None:
            return []
        self.failed.append(addr)
        # A refused connect frees its slot at once: no reason to wait for the stagger.
        return self._launch(now, forced=True)

    def on_connected(self, addr: Address) -> bool:
        """Returns True if this connection won (the caller closes the losers)."""
        if self.winner is not None or addr.key not in self._in_flight:
            return False
        self.winner = addr
        self._in_flight.clear()
        return True

    def _launch(self, now: float, forced: bool = False) -> list[RaceStart]:
        starts: list[RaceStart] = []
        if self.winner is not None:
            return starts
        while (
            self._next < len(self.candidates)
            and len(self._in_flight) < self.max_parallel
            and (forced or now >= self._next_start_at or not self._in_flight)
        ):
            addr = self.candidates[self._next]
            self._next += 1
            deadline = now + self.attempt_timeout
            self._in_flight[addr.key] = deadline
            starts.append(RaceStart(addr, deadline))
            self._next_start_at = now + self.stagger
            forced = False
        return starts
