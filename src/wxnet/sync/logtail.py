"""The in-memory tail of the sync logs: the recent end of every account's logs, so a
newsync near the head needs no database read (used by :class:`SQLiteStore`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator

__all__ = ["ENTRY_COST", "RING_COST", "LogTail"]

#: What one held entry costs beyond its body's length: the bytes object's header and
#: the ring's slot for it (CPython 3.11, 64-bit).
ENTRY_COST = 33 + 8
#: What one log's ring costs with no entries: the ring and its list, the (uin, key)
#: tuple and the ordered dict's entry for it.
RING_COST = 72 + 56 + 56 + 100


class _Ring:
    """One log's held entries: ``bodies[i]`` is the entry with seq ``first + i`` (the
    seqs are contiguous, so only the first is kept), ``size`` their bodies' bytes."""

    __slots__ = ("bodies", "first", "size")

    def __init__(self, first: int) -> None:
        self.first = first
        self.size = 0
        self.bodies: list[bytes] = []

    def cost(self) -> int:
        """Memory counted for the ring's entries (without RING_COST)."""
        return self.size + ENTRY_COST * len(self.bodies)


class LogTail:
    """The recent end of every account's logs, in memory (event-loop side).

    One ring per (uin, key): entries appended since the server started that no device
    of the account has committed yet, contiguous up to the log's committed head, at
    most ``max_items`` entries and ``max_bytes`` of bodies per ring. All rings together
    hold at most ``total_bytes`` of memory, counted as the bodies plus
    :data:`ENTRY_COST` per entry and :data:`RING_COST` per ring (the least recently
    written rings are dropped first). A newsync whose key is at or near the head is
    answered from here without reading SQLite; older keys fall back to SQLite.

    A device committing a key (:meth:`committed`) drops the entries up to it, and a
    ring left empty goes: an account whose devices are in sync (every idle one) holds
    nothing here. An account's second device that is further behind reads those
    entries from SQLite, as any key older than the tail does; no answer changes.
    ``max_items = 0`` turns it off.
    """

    __slots__ = (
        "_rings",
        "bytes",
        "hits",
        "max_bytes",
        "max_items",
        "misses",
        "total_bytes",
        "trimmed",
    )

    def __init__(self, max_items: int, max_bytes: int, total_bytes: int) -> None:
        self.max_items, self.max_bytes, self.total_bytes = max_items, max_bytes, total_bytes
        self._rings: OrderedDict[tuple[int, int], _Ring] = OrderedDict()
        #: memory held: bodies + ENTRY_COST per entry + RING_COST per ring
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        #: entries dropped because a device committed past them
        self.trimmed = 0

    def add(self, entries: Iterable[tuple[int, int, int, bytes]]) -> None:
        if self.max_items <= 0:
            return
        rings = self._rings
        max_items, max_bytes = self.max_items, self.max_bytes
        held = self.bytes  # kept in a local while the loop runs (no call below reads it)
        for uin, key, seq, body in entries:
            hk = (uin, key)
            ring = rings.get(hk)
            if ring is None:
                ring = rings[hk] = _Ring(seq)
                held += RING_COST
            else:
                rings.move_to_end(hk)
                if ring.first + len(ring.bodies) != seq:  # not contiguous (a log trimmed
                    held -= ring.cost()  # out that grew again): start it over
                    ring.bodies.clear()
                    ring.first, ring.size = seq, 0
            bodies = ring.bodies
            bodies.append(body)
            n = len(body)
            ring.size += n
            held += n + ENTRY_COST
            while len(bodies) > max_items or (len(bodies) > 1 and ring.size > max_bytes):
                old = bodies.pop(0)
                ring.first += 1
                ring.size -= len(old)
                held -= len(old) + ENTRY_COST
        self.bytes = held
        while self.bytes > self.total_bytes and rings:
            _, ring = rings.popitem(last=False)
            self.bytes -= ring.cost() + RING_COST

    def _pop_first(self, ring: _Ring) -> None:
        old = ring.bodies.pop(0)
        ring.first += 1
        ring.size -= len(old)
        self.bytes -= len(old) + ENTRY_COST

    def committed(self, uin: int, pairs: Iterable[tuple[int, int]]) -> None:
        """A device of ``uin`` committed the key ``pairs`` ((key, seq), ...): drop the
        entries up to it, and every ring left empty."""
        rings = self._rings
        for key, seq in pairs:
            hk = (uin, key)
            ring = rings.get(hk)
            if ring is None or ring.first > seq:
                continue
            drop = min(len(ring.bodies), seq - ring.first + 1)
            self.trimmed += drop
            if drop == len(ring.bodies):
                del rings[hk]
                self.bytes -= ring.cost() + RING_COST
                continue
            for _ in range(drop):
                self._pop_first(ring)

    def read(self, uin: int, key: int, after: int, head: int) -> Iterator[tuple[int, bytes]] | None:
        """The ``(seq, body)`` entries after ``after`` up to ``head``, or None when the
        ring does not reach back that far or does not reach ``head``."""
        ring = self._rings.get((uin, key))
        if ring is None or not ring.bodies:
            return None
        first = ring.first
        last = first + len(ring.bodies) - 1
        if first > after + 1 or last < head:
            return None
        start = max(after + 1, first)
        return zip(range(start, last + 1), ring.bodies[start - first :], strict=True)

    def __len__(self) -> int:
        return len(self._rings)
