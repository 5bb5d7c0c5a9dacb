"""The bounded in-memory caches of the engine and the SQLite store. Each is only for
state whose miss reads the store again, so what a cache drops changes no answer.

- :class:`BoundedCache`: at most ``cap`` entries; storing one more drops the
  oldest-stored eighth (``[sync] cache_entries``, for the chatroom cache).
- :class:`ActiveCache`: the per-account state (log heads, sessions, names, contact
  lists, committed keys: ``[sync] active_accounts``), kept for the accounts in use and
  let go for idle ones. Two generations of plain dicts: new and used entries go to the
  young one; when it holds ``cap`` entries it becomes the old one and the previous old
  one is dropped, so an entry used at least once per ``cap`` stores is never dropped,
  and at most ``2 * cap`` entries are held. A hit in the young generation costs one
  dict lookup; one in the old generation moves the entry (no per-hit bookkeeping, as
  an LRU's linked list would need, and no per-entry overhead beyond the dicts').
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import Generic, TypeVar, overload

__all__ = ["ActiveCache", "BoundedCache"]

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")


class BoundedCache(dict[K, V]):
    """A dict of at most ``cap`` entries, for the engine's caches: storing one more
    drops the oldest-stored eighth (amortised O(1)). Only for caches whose misses read
    the store again, so what it drops changes no answer."""

    __slots__ = ("cap", "evicted")

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = max(1, cap)
        #: entries dropped so far
        self.evicted = 0

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        if len(self) > self.cap:
            old = list(islice(iter(self), max(1, self.cap // 8)))
            for k in old:
                del self[k]
            self.evicted += len(old)


class ActiveCache(Generic[K, V]):
    """A mapping that keeps what is in use: see the module docstring.

    Args:
        cap: entries per generation (at least 1); at most twice this many are held.
    """

    __slots__ = ("_old", "_young", "cap", "evicted")

    def __init__(self, cap: int) -> None:
        self.cap = max(1, cap)
        self._young: dict[K, V] = {}
        self._old: dict[K, V] = {}
        #: entries dropped so far (with an old generation)
        self.evicted = 0

    def _store(self, key: K, value: V) -> None:
        young = self._young
        if len(young) >= self.cap and key not in young:
            self.evicted += len(self._old)
            self._old = young
            young = self._young = {}
        young[key] = value

    @overload
    def get(self, key: K) -> V | None: ...
    @overload
    def get(self, key: K, default: D) -> V | D: ...
    def get(self, key: K, default: object = None) -> object:
        v = self._young.get(key, _MISSING)
        if v is not _MISSING:
            return v
        v = self._old.pop(key, _MISSING)
        if v is _MISSING:
            return default
        self._store(key, v)  # type: ignore[arg-type]
        return v

    def __getitem__(self, key: K) -> V:
        v = self.get(key, _MISSING)
        if v is _MISSING:
            raise KeyError(key)
        return v  # type: ignore[return-value]

    def __setitem__(self, key: K, value: V) -> None:
        self._old.pop(key, None)
        self._store(key, value)

    def __delitem__(self, key: K) -> None:
        if self._young.pop(key, _MISSING) is _MISSING and self._old.pop(key, _MISSING) is _MISSING:
            raise KeyError(key)

    def pop(self, key: K, default: V | None = None) -> V | None:
        v = self._young.pop(key, _MISSING)
        if v is _MISSING:
            v = self._old.pop(key, _MISSING)
        return default if v is _MISSING else v  # type: ignore[return-value]

    def __contains__(self, key: object) -> bool:
        return key in self._young or key in self._old

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def __iter__(self) -> Iterator[K]:
        yield from list(self._young)
        yield from list(self._old)

    def items(self) -> list[tuple[K, V]]:
        """Every entry held (a list: safe to change the cache while going through it)."""
        return [*self._young.items(), *self._old.items()]

    def values(self) -> list[V]:
        """Every value held (a list)."""
        return [*self._young.values(), *self._old.values()]

    def clear(self) -> None:
        self._young = {}
        self._old = {}


_MISSING: object = object()
