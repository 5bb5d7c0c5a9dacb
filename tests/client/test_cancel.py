"""A cancel of the caller is never swallowed by the SDK's clean-up waits (the chunk
pool, a link's close), even while the clean-up itself is waiting."""

from __future__ import annotations

import asyncio

import pytest

from wxnet._compat import wait_for
from wxnet.client.media import _bounded

WAIT = 10.0


async def test_bounded_pool_lets_a_second_cancel_through() -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def stubborn() -> None:
        """A job that finishes its own clean-up before it ends, even when cancelled."""
        try:
            started.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()
            raise

    pool = asyncio.ensure_future(_bounded([stubborn, stubborn], 2))
    await wait_for(started.wait(), WAIT)
    pool.cancel()  # the pool now waits for its stubborn jobs
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not pool.done()
    pool.cancel()  # the caller insists: this cancel must reach it
    done, _ = await asyncio.wait([pool], timeout=WAIT)
    release.set()
    assert done == {pool}
    with pytest.raises(asyncio.CancelledError):
        await pool
