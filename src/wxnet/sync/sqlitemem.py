"""How much memory SQLite holds in this process (page caches, statements, schema), for
/metrics: ``sqlite3_status64(SQLITE_STATUS_MEMORY_USED)`` of the library that Python's
``sqlite3`` module uses, called through ctypes (the module itself does not expose it).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

__all__ = ["sqlite_memory_used"]

_SQLITE_STATUS_MEMORY_USED = 0


def _status_fn() -> Callable[..., int] | None:
    try:
        import _sqlite3

        fn: Callable[..., int] = ctypes.CDLL(_sqlite3.__file__).sqlite3_status64
    except (ImportError, OSError, AttributeError):  # a build without it: no figure
        return None
    return fn


_status = _status_fn()


def sqlite_memory_used() -> int | None:
    """Bytes SQLite has allocated in this process now, or None where SQLite does not
    say (a build without the symbol, or with memory statistics compiled out, which
    reports 0 while connections are open)."""
    if _status is None:
        return None
    cur, high = ctypes.c_int64(), ctypes.c_int64()
    if _status(_SQLITE_STATUS_MEMORY_USED, ctypes.byref(cur), ctypes.byref(high), 0) != 0:
        return None
    return int(cur.value)
