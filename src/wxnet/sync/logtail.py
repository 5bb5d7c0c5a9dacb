"""The in-memory tail of the sync logs: the recent end of every account's logs, so a
newsync near the head needs no database read (used by :class:`SQLiteStore`).
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable, Iterable, Iterator
from struct import Struct

__all__ = ["ENTRY_COST", "MIN_RING", "RELEASE_BYTES", "RING_COST", "LogTail"]

_LEN = Struct("<I")
_pack_len = _LEN.pack
_unpack_len = _LEN.unpack_from
#: a ring's header: the seq of its first entry, its entry count, the bytes in use
_HEAD = Struct("<QII")
_HEAD_SIZE = _HEAD.size
_pack_head = _HEAD.pack
_unpack_head = _HEAD.unpack_from
#: a new ring's header and its first entry's length
_pack_first = Struct("<QIII").pack

#: a ring object's size beyond its length (``sys.getsizeof(b"")``)
_BYTES_OBJECT = sys.getsizeof(b"")

#: What one held entry costs beyond its body's length: its 4-byte length header in the
#: ring (the ring's padding is counted too, see :class:`LogTail`).
ENTRY_COST = _LEN.size
#: The least a ring holds (its header, entries and zero padding), in bytes: a
#: ``bytes`` object of this length (480 on 64-bit CPython) is above pymalloc's
#: 512-byte limit, so every ring (object and data in one block) comes from the C
#: allocator, whose free pages go back to the system (:data:`RELEASE_BYTES`), and
#: never from pymalloc's pools, which the rings of a tail's peak would leave resident
#: between the objects allocated meanwhile.
MIN_RING = 513 - _BYTES_OBJECT
#: What one log's ring costs besides the ring object (``sys.getsizeof``; CPython 3.11,
#: 64-bit): its key (an int of ``uin << 32 | key``, 32 B), the dict's entry and index
#: (~40 B at the dict's load) and the C allocator's chunk header (~16 B).
RING_COST = 32 + 40 + 16
#: Once the tail holds this many bytes less than its high since the last release, and
#: at most half of it, the C allocator's free pages go back to the system (glibc's
#: ``malloc_trim``; none elsewhere): the memory of a burst's rings is not kept resident.
RELEASE_BYTES = 1 << 18


def _malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``: return the free pages of every malloc arena to the
    system (None: not glibc)."""
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return lambda: fn(0)


_TRIM = _malloc_trim()


class LogTail:
    """The recent end of every account's logs, in memory (event-loop side).

    One ring per (uin, key): entries appended since the server started that no device
    of the account has committed yet, contiguous up to the log's committed head, at
    most ``max_items`` entries and ``max_bytes`` of bodies per ring. A ring is one
    ``bytes`` object, rebuilt when it changes: a 16-byte header (the first entry's seq,
    the entry count, the bytes in use), each entry's body after its 4-byte length, and
    zeros up to :data:`MIN_RING` bytes, so the ring (object and data in one block) is
    the C allocator's, not pymalloc's, and what a peak of the tail held goes back to
    the system once it empties (when the tail has shrunk by :data:`RELEASE_BYTES` and
    by half since its last high; ``releases`` counts these). The rings are in a plain
    dict, in the order they were last written; its table is rebuilt when it holds an
    eighth of its high. All rings together hold at most ``total_bytes`` of memory,
    counted as every ring object's size (``sys.getsizeof``) plus :data:`RING_COST` per
    ring (the least recently written rings are dropped first). A newsync whose key is
    at or near the head is answered from here without reading SQLite; older keys fall
    back to SQLite.

    A device committing a key (:meth:`committed`) drops the entries up to it, and a
    ring left empty goes: an account whose devices are in sync (every idle one) holds
    nothing here. An account's second device that is further behind reads those
    entries from SQLite, as any key older than the tail does; no answer changes.
    ``max_items = 0`` turns it off. Key types are uint32 (:class:`SyncKey` checks).
    """

    __slots__ = (
        "_high",
        "_high_logs",
        "_rings",
        "bytes",
        "hits",
        "max_bytes",
        "max_items",
        "misses",
        "releases",
        "total_bytes",
        "trimmed",
    )

    def __init__(self, max_items: int, max_bytes: int, total_bytes: int) -> None:
        self.max_items, self.max_bytes, self.total_bytes = max_items, max_bytes, total_bytes
        self._rings: dict[int, bytes] = {}
        #: memory held: every ring object's size + RING_COST per ring
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        #: entries dropped because a device committed past them
        self.trimmed = 0
        #: times the C allocator's free pages went back to the system (RELEASE_BYTES)
        self.releases = 0
        self._high = 0  # the most bytes held since the last release
        self._high_logs = 0  # the most rings held since the dict's table was rebuilt

    def add(self, entries: Iterable[tuple[int, int, int, bytes]]) -> None:
        max_items = self.max_items
        if max_items <= 0:
            return
        max_bytes = self.max_bytes
        rings = self._rings
        held = self.bytes
        for uin, key, seq, body in entries:
            hk = uin << 32 | key
            size = len(body)
            ring = rings.pop(hk, None)
            if ring is not None:
                first, count, used = _unpack_head(ring)
                if first + count == seq:  # contiguous: append
                    held -= len(ring)
                    off = _HEAD_SIZE  # the old entries kept: ring[off:used]
                    bodies = used - _HEAD_SIZE - ENTRY_COST * count + size
                    count += 1
                    while count > 1 and (count > max_items or bodies > max_bytes):
                        cut = _unpack_len(ring, off)[0]
                        off += ENTRY_COST + cut
                        bodies -= cut
                        count -= 1
                        first += 1
                    end = used + _HEAD_SIZE + ENTRY_COST + size - off
                    ring = b"".join(
                        (_pack_head(first, count, end), ring[off:used], _pack_len(size), body)
                    )
                    if end < MIN_RING:
                        ring = ring.ljust(MIN_RING, b"\0")
                    rings[hk] = ring  # the most recently written last
                    held += len(ring)
                    continue
                # not contiguous (a log trimmed out that grew again): start over
                held -= len(ring) + _BYTES_OBJECT + RING_COST
            used = _HEAD_SIZE + ENTRY_COST + size
            ring = _pack_first(seq, 1, used, size) + body
            if used < MIN_RING:
                ring = ring.ljust(MIN_RING, b"\0")
            rings[hk] = ring
            held += len(ring) + _BYTES_OBJECT + RING_COST
        total = self.total_bytes
        if held > total:  # the least recently written go first
            gone = []
            for hk, ring in rings.items():
                if held <= total:
                    break
                held -= len(ring) + _BYTES_OBJECT + RING_COST
                gone.append(hk)
            for hk in gone:
                del rings[hk]
        self.bytes = held
        self._high = max(self._high, held)
        self._high_logs = max(self._high_logs, len(rings))

    def committed(self, uin: int, pairs: Iterable[tuple[int, int]]) -> None:
        """A device of ``uin`` committed the key ``pairs`` ((key, seq), ...): drop the
        entries up to it, and every ring left empty."""
        rings = self._rings
        base = uin << 32
        for key, seq in pairs:
            hk = base | key
            ring = rings.get(hk)
            if ring is None:
                continue
            first, count, used = _unpack_head(ring)
            if first > seq:
                continue
            drop = min(count, seq - first + 1)
            self.trimmed += drop
            if drop == count:
                del rings[hk]
                self.bytes -= len(ring) + _BYTES_OBJECT + RING_COST
                continue
            off = _HEAD_SIZE
            for _ in range(drop):
                off += ENTRY_COST + _unpack_len(ring, off)[0]
            end = used - off + _HEAD_SIZE
            new = _pack_head(first + drop, count - drop, end) + ring[off:used]
            if end < MIN_RING:
                new = new.ljust(MIN_RING, b"\0")
            rings[hk] = new
            self.bytes += len(new) - len(ring)
        if len(rings) * 8 < self._high_logs:  # a table sized for far more: rebuild it
            self._rings = dict(rings)
            self._high_logs = len(rings)
        held = self.bytes
        if self._high - held >= RELEASE_BYTES and 2 * held <= self._high:
            self._high = held
            if _TRIM is not None:
                _TRIM()
                self.releases += 1

    def read(self, uin: int, key: int, after: int, head: int) -> Iterator[tuple[int, bytes]] | None:
        """The ``(seq, body)`` entries after ``after`` up to ``head``, or None when the
        ring does not reach back that far or does not reach ``head``."""
        ring = self._rings.get(uin << 32 | key)
        if ring is None:
            return None
        first, count, _used = _unpack_head(ring)
        last = first + count - 1
        if first > after + 1 or last < head:
            return None
        out: list[tuple[int, bytes]] = []
        off = _HEAD_SIZE
        with memoryview(ring) as view:
            for seq in range(first, last + 1):
                end = off + ENTRY_COST + _unpack_len(ring, off)[0]
                if seq > after:
                    out.append((seq, view[off + ENTRY_COST : end].tobytes()))
                off = end
        return iter(out)

    def __len__(self) -> int:
        return len(self._rings)
