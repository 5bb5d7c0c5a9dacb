"""The in-memory tail of the sync logs: the recent end of every account's logs, so a
newsync near the head needs no database read (used by :class:`SQLiteStore`).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any

__all__ = ["LogTail"]


class LogTail:
    """The recent end of every account's logs, in memory (event-loop side).

    One ring per (uin, key): the last entries appended since the server started,
    contiguous up to the log's committed head, at most ``max_items`` entries and
    ``max_bytes`` of bodies per ring; all rings together hold at most ``total_bytes``
    (the least recently written rings are dropped first). A newsync whose key is at or
    near the head is answered from here without reading SQLite; older keys fall back to
    SQLite. ``max_items = 0`` turns it off.
    """

    __slots__ = ("_rings", "bytes", "hits", "max_bytes", "max_items", "misses", "total_bytes")

    def __init__(self, max_items: int, max_bytes: int, total_bytes: int) -> None:
        self.max_items, self.max_bytes, self.total_bytes = max_items, max_bytes, total_bytes
        # (uin, key) -> [entries (seq, body), bytes of the bodies]
        self._rings: OrderedDict[tuple[int, int], list[Any]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def add(self, entries: Iterable[tuple[int, int, int, bytes]]) -> None:
        if self.max_items <= 0:
            return
        rings = self._rings
        for uin, key, seq, body in entries:
            hk = (uin, key)
            ring = rings.get(hk)
            if ring is None:
                ring = rings[hk] = [deque(), 0]
            else:
                rings.move_to_end(hk)
                q = ring[0]
                if q and q[-1][0] != seq - 1:  # not contiguous (cannot happen): restart
                    self.bytes -= ring[1]
                    q.clear()
                    ring[1] = 0
            q = ring[0]
            q.append((seq, body))
            ring[1] += len(body)
            self.bytes += len(body)
            while len(q) > self.max_items or (len(q) > 1 and ring[1] > self.max_bytes):
                _, old = q.popleft()
                ring[1] -= len(old)
                self.bytes -= len(old)
        while self.bytes > self.total_bytes and rings:
            _, (_, size) = rings.popitem(last=False)
            self.bytes -= size

    def read(self, uin: int, key: int, after: int, head: int) -> deque[tuple[int, bytes]] | None:
        """Every entry after ``after`` up to ``head`` (the whole ring; the caller skips
        the ones at or before ``after``), or None when the ring does not reach back that
        far or does not reach ``head``."""
        ring = self._rings.get((uin, key))
        if ring is None:
            return None
        q: deque[tuple[int, bytes]] = ring[0]
        if not q or q[0][0] > after + 1 or q[-1][0] < head:
            return None
        return q

    def __len__(self) -> int:
        return len(self._rings)
