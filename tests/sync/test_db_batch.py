"""``Database.write_batched``: the jobs of one group with the same batch function run as
one call; when it raises, each runs alone and only the failing ones get the error, and
the writer's cached state is dropped (``on_rollback``)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from wxnet.sync.db import Database, DatabaseClosed


async def test_a_group_batch_runs_once_and_a_failure_stays_with_its_job(tmp_path: Path) -> None:
    db = Database(tmp_path / "b.db", synchronous="NORMAL")
    await db.write(lambda c: c.execute("CREATE TABLE t (v INTEGER PRIMARY KEY)"))
    calls: list[list[int]] = []
    rollbacks: list[int] = []
    db.on_rollback = lambda: rollbacks.append(1)

    def batch(conn: sqlite3.Connection, args: list[int]) -> list[int]:
        calls.append(list(args))
        conn.executemany("INSERT INTO t VALUES (?)", [(a,) for a in args])
        if 13 in args:
            raise ValueError("unlucky")
        return [a * 2 for a in args]

    release, holding = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        holding.set()
        release.wait(10)

    db.write_nowait(hold)
    assert holding.wait(10)
    futs = [asyncio.ensure_future(db.write_batched(batch, a)) for a in (1, 2, 13, 4)]
    for _ in range(1000):  # bounded: until all four are queued behind the holder
        if db._wq.qsize() == 4:
            break
        await asyncio.sleep(0)
    release.set()
    done = await asyncio.gather(*futs, return_exceptions=True)
    assert done[:2] == [2, 4] and done[3] == 8
    assert isinstance(done[2], ValueError)
    assert calls == [[1, 2, 13, 4], [1], [2], [13], [4]]  # once together, then each alone
    assert rollbacks == [1, 1]  # the failed batch and the failed job
    rows = db.read_now(lambda c: c.execute("SELECT v FROM t ORDER BY v").fetchall())
    assert rows == [(1,), (2,), (4,)]
    db.close()
    with pytest.raises(DatabaseClosed):
        await db.write_batched(batch, 5)
