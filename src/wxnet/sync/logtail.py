"""The in-memory tail of the sync logs: the recent end of every account's logs, so a
newsync near the head needs no database read (used by :class:`SQLiteStore`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from struct import Struct

__all__ = ["ENTRY_COST", "RING_COST", "LogTail"]

_LEN = Struct("<I")
_pack_len = _LEN.pack
_unpack_len = _LEN.unpack_from

#: What one held entry costs beyond its body's length: its 4-byte length header in the
#: ring's buffer (the buffer's spare room is counted as allocated, see :class:`LogTail`).
ENTRY_COST = _LEN.size
#: What one log's ring costs besides its buffer (CPython 3.11, 64-bit, as pymalloc
#: allocates it): the ring object (a bytearray with two slots, 96 B), its key (an int of
#: ``uin << 32 | key``, 32 B) and the ordered dict's entry for it (~104 B: the dict's
#: slot and index, the linked-list node, the fast-nodes slot).
RING_COST = 96 + 32 + 104


class _Ring(bytearray):
    """One log's held entries in one buffer: each entry's body after its 4-byte
    little-endian length, the entry with seq ``first + i`` the ``i``-th (the seqs are
    contiguous, so only the first is kept); ``n`` entries."""

    __slots__ = ("first", "n")

    first: int
    n: int

    def cut(self, n: int) -> None:
        """Drop the first ``n`` entries (``n <= self.n``)."""
        off = 0
        for _ in range(n):
            off += ENTRY_COST + _unpack_len(self, off)[0]
        del self[:off]
        self.first += n
        self.n -= n


class LogTail:
    """The recent end of every account's logs, in memory (event-loop side).

    One ring per (uin, key): entries appended since the server started that no device
    of the account has committed yet, contiguous up to the log's committed head, at
    most ``max_items`` entries and ``max_bytes`` of bodies per ring. A ring is one
    object with one buffer (the bodies, each after a 4-byte length), so the tail's
    peak leaves no small objects behind when it empties. All rings together hold at
    most ``total_bytes`` of memory, counted as every ring's buffer as allocated
    (``bytearray.__alloc__``: the bodies, :data:`ENTRY_COST` per entry and the spare
    room) plus :data:`RING_COST` per ring (the least recently written rings are dropped
    first). A newsync whose key is at or near the head is answered from here without
    reading SQLite; older keys fall back to SQLite.

    A device committing a key (:meth:`committed`) drops the entries up to it, and a
    ring left empty goes: an account whose devices are in sync (every idle one) holds
    nothing here. An account's second device that is further behind reads those
    entries from SQLite, as any key older than the tail does; no answer changes.
    ``max_items = 0`` turns it off. Key types are uint32 (:class:`SyncKey` checks).
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
        self._rings: OrderedDict[int, _Ring] = OrderedDict()
        #: memory held: every ring's buffer as allocated + RING_COST per ring
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        #: entries dropped because a device committed past them
        self.trimmed = 0

    def add(self, entries: Iterable[tuple[int, int, int, bytes]]) -> None:
        max_items = self.max_items
        if max_items <= 0:
            return
        max_bytes = self.max_bytes
        rings = self._rings
        held = self.bytes
        for uin, key, seq, body in entries:
            hk = uin << 32 | key
            ring = rings.get(hk)
            if ring is None:
                ring = rings[hk] = _Ring()
                ring.first, ring.n = seq, 0
                held += RING_COST
                before = 0
            else:
                rings.move_to_end(hk)
                before = ring.__alloc__()
                if ring.first + ring.n != seq:  # not contiguous (a log trimmed out
                    ring.clear()  # that grew again): start it over
                    ring.first, ring.n = seq, 0
            ring += _pack_len(len(body)) + body  # one resize of the buffer
            ring.n += 1
            count = ring.n
            if count > max_items:
                ring.cut(count - max_items)
                count = max_items
            while count > 1 and len(ring) - ENTRY_COST * count > max_bytes:
                ring.cut(1)
                count -= 1
            held += ring.__alloc__() - before
        total = self.total_bytes
        while held > total and rings:
            _, ring = rings.popitem(last=False)
            held -= ring.__alloc__() + RING_COST
        self.bytes = held

    def committed(self, uin: int, pairs: Iterable[tuple[int, int]]) -> None:
        """A device of ``uin`` committed the key ``pairs`` ((key, seq), ...): drop the
        entries up to it, and every ring left empty."""
        rings = self._rings
        base = uin << 32
        for key, seq in pairs:
            hk = base | key
            ring = rings.get(hk)
            if ring is None or ring.first > seq:
                continue
            drop = min(ring.n, seq - ring.first + 1)
            self.trimmed += drop
            if drop == ring.n:
                del rings[hk]
                self.bytes -= ring.__alloc__() + RING_COST
                continue
            before = ring.__alloc__()
            ring.cut(drop)
            self.bytes += ring.__alloc__() - before

    def read(self, uin: int, key: int, after: int, head: int) -> Iterator[tuple[int, bytes]] | None:
        """The ``(seq, body)`` entries after ``after`` up to ``head``, or None when the
        ring does not reach back that far or does not reach ``head``."""
        ring = self._rings.get(uin << 32 | key)
        if ring is None or not ring.n:
            return None
        first = ring.first
        last = first + ring.n - 1
        if first > after + 1 or last < head:
            return None
        out: list[tuple[int, bytes]] = []
        off = 0
        with memoryview(ring) as view:
            for seq in range(first, last + 1):
                end = off + ENTRY_COST + _unpack_len(ring, off)[0]
                if seq > after:
                    out.append((seq, view[off + ENTRY_COST : end].tobytes()))
                off = end
        return iter(out)

    def __len__(self) -> int:
        return len(self._rings)
