"""What DNS told each client: (client, address) -> names, bounded in time and size."""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict
from collections.abc import Iterable

__all__ = ["DnsMemory"]


@functools.lru_cache(maxsize=65536)
def _norm_addr(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


class DnsMemory:
    """Remember which names each client resolved to which addresses.

    Entries expire after the answer's TTL (clamped to ``min_ttl``..``max_ttl``: a TTL of
    0 would otherwise forget the answer before the client connects). At most
    ``max_entries`` (client, address) pairs are kept; the least recently used go first.
    Time is passed in (``now``, seconds, any monotonic origin).
    """

    __slots__ = ("_clients", "_map", "max_entries", "max_ttl", "min_ttl")

    def __init__(
        self, max_entries: int = 65536, min_ttl: float = 60.0, max_ttl: float = 86400.0
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self._map: OrderedDict[tuple[str, str], dict[str, float]] = OrderedDict()
        self._clients: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._map)

    def learn(
        self, client: str, name: str, addresses: Iterable[str], ttl: float, now: float
    ) -> None:
        """Record that ``client`` was told ``name`` is at ``addresses`` for ``ttl`` s."""
        cl = _norm_addr(client)
        name = name.strip().rstrip(".").lower()
        if cl is None or not name:
            return
        self._clients[cl] = None
        self._clients.move_to_end(cl)
        if len(self._clients) > self.max_entries:
            self._clients.popitem(last=False)
        expiry = now + min(max(float(ttl), self.min_ttl), self.max_ttl)
        for text in addresses:
            addr = _norm_addr(text)
            if addr is None:
                continue
            key = (cl, addr)
            names = self._map.get(key)
            if names is None:
                names = self._map[key] = {}
                if len(self._map) > self.max_entries:
                    self._map.popitem(last=False)
            else:
                self._map.move_to_end(key)
            names[name] = max(expiry, names.get(name, 0.0))

    def knows_client(self, client: str) -> bool:
        """Has this memory ever been told a DNS answer for ``client``?"""
        if client in self._clients:
            return True
        if not self._clients:
            return False
        cl = _norm_addr(client)
        return cl is not None and cl in self._clients

    def names_for(self, client: str, address: str, now: float) -> list[str]:
        """Names (unexpired) whose DNS answers to ``client`` included ``address``."""
        if not self._map:
            return []
        cl, addr = _norm_addr(client), _norm_addr(address)
        if cl is None or addr is None:
            return []
        names = self._map.get((cl, addr))
        if not names:
            return []
        # Read-only: what the memory holds depends only on what it learned, so the
        # workers of ``wxnet analyze --jobs N`` (which each look up different flows)
        # keep the same memory, with the same evictions, as one process.
        return sorted(n for n, exp in names.items() if exp > now)
