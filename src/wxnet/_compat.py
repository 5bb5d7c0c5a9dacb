"""Small compatibility helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["wait_for"]

T = TypeVar("T")


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """``asyncio.wait_for`` built on ``asyncio.timeout``, as Python 3.12 does it.

    Python 3.11's ``wait_for`` can swallow a cancellation that arrives just as the
    awaited future completes (CPython gh-86296): the cancelled task then runs on, and
    whoever waits for it to end (``asyncio.run`` at exit, a close()) waits forever.
    """
    if timeout is None:
        return await aw
    async with asyncio.timeout(max(0.0, timeout)):
        return await aw
