"""The writer's timings and its hand-off to the event loop (issue 11, latency): a
group's after-commit work on the loop runs in the callback that resolves its futures,
after them and before their tasks run again, and not at all when its savepoint rolls
back; WAL checkpoints run on the reader thread (``checkpoint_interval``), not inside a
commit; every group, write and wake-up is timed."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from wxnet.sync.db import (
    BACKSTOP_CHECKPOINT_PAGES,
    INLINE_CHECKPOINT_PAGES,
    Database,
    Timings,
)


def test_timings_count_and_place_every_sample() -> None:
    t = Timings((0.001, 0.01))
    assert t.quantile(0.99) == 0.0  # no samples yet
    for v in (0.0005, 0.0005, 0.002, 0.5):
        t.observe(v)
    assert t.counts == [2, 1, 1] and t.count == 4 and t.sum == pytest.approx(0.503)
    assert t.quantile(0.5) == 0.001
    assert t.quantile(0.75) == 0.01
    assert t.quantile(1.0) == float("inf")  # past the last bound


async def test_loop_work_runs_after_the_futures_and_before_their_tasks(tmp_path: Path) -> None:
    db = Database(tmp_path / "w.db", synchronous="NORMAL")
    loop = asyncio.get_running_loop()
    seen: list[str] = []

    def after() -> None:
        seen.append("callback")
        # scheduled now: it runs after what resolving the future scheduled before
        loop.call_soon(seen.append, "scheduled by the callback")

    def job(conn: sqlite3.Connection) -> int:
        conn.execute("CREATE TABLE t (v INTEGER)")
        db.after_commit_on(loop, after)
        return 1

    try:
        assert await db.write(job) == 1
        seen.append("task resumed")
        await asyncio.sleep(0)
        assert seen == ["callback", "task resumed", "scheduled by the callback"]
        assert db.commit_times.count == db.groups == 1
        assert db.wait_times.count == 1 and db.wake_times.count == 1
    finally:
        db.close()


async def test_a_rolled_back_job_leaves_no_after_commit_work(tmp_path: Path) -> None:
    db = Database(tmp_path / "w.db", synchronous="NORMAL")
    loop = asyncio.get_running_loop()
    ran: list[str] = []

    def failing(conn: sqlite3.Connection) -> None:
        db.after_commit_on(loop, lambda: ran.append("loop"))
        db.after_commit(lambda: ran.append("writer"))
        raise ValueError("undone")

    def fine(conn: sqlite3.Connection) -> None:
        db.after_commit_on(loop, lambda: ran.append("fine"))

    try:
        with pytest.raises(ValueError, match="undone"):
            await db.write(failing)
        await db.write(fine)
        assert ran == ["fine"]
    finally:
        db.close()


def _autocheckpoint(db: Database) -> int:
    return int(db._wconn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])


async def test_checkpoints_run_on_the_reader_thread(tmp_path: Path) -> None:
    db = Database(tmp_path / "w.db", synchronous="NORMAL", checkpoint_interval=1e-9)
    try:
        assert _autocheckpoint(db) == BACKSTOP_CHECKPOINT_PAGES  # the writer's backstop
        await db.write(lambda c: c.execute("CREATE TABLE t (v BLOB)"))
        await db.write(lambda c: c.execute("INSERT INTO t VALUES (zeroblob(50000))"))
        # the reader's queue is FIFO: a read queued now runs after the checkpoint the
        # commit queued before it resolved the write
        await db.read(lambda c: None)
        assert db.checkpoints >= 1 and db.checkpoint_times.count == db.checkpoints
        assert db.wal_pages > 0
        busy, log_pages, done = db.read_now(
            lambda c: c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        )
        assert busy == 0 and log_pages == done  # all of the WAL is in the file already
    finally:
        db.close()


async def test_checkpoint_interval_zero_leaves_it_to_the_commits(tmp_path: Path) -> None:
    db = Database(tmp_path / "w.db", synchronous="NORMAL", checkpoint_interval=0)
    try:
        assert _autocheckpoint(db) == INLINE_CHECKPOINT_PAGES
        await db.write(lambda c: c.execute("CREATE TABLE t (v BLOB)"))
        await db.write(lambda c: c.execute("INSERT INTO t VALUES (zeroblob(50000))"))
        await db.read(lambda c: None)
        assert db.checkpoints == 0
    finally:
        db.close()
    with pytest.raises(ValueError, match="negative"):
        Database(tmp_path / "x.db", checkpoint_interval=-1)


async def test_statement_journals_stay_in_memory(tmp_path: Path) -> None:
    """A group's multi-row INSERTs and savepoints journal every page they change; past
    64 KiB SQLite spilled that to a temporary file unless temp_store is MEMORY (2). A
    savepoint rolled back from such a journal still undoes exactly its own rows."""
    db = Database(tmp_path / "w.db", synchronous="NORMAL")
    try:
        for conn in (db._wconn, db._rconn):
            assert conn.execute("PRAGMA temp_store").fetchone()[0] == 2
        await db.write(lambda c: c.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)"))
        await db.write(
            lambda c: c.executemany(
                "INSERT INTO t VALUES (?, zeroblob(3000))", [(i,) for i in range(200)]
            )
        )

        def rewrite_then_fail(c: sqlite3.Connection) -> None:
            c.execute("UPDATE t SET v = zeroblob(3001)")  # every page: > 64 KiB journalled
            raise RuntimeError("undo it")

        with pytest.raises(RuntimeError, match="undo it"):
            await db.write(rewrite_then_fail)
        assert db.read_now(lambda c: c.execute("SELECT DISTINCT length(v) FROM t").fetchall()) == [
            (3000,)
        ]
    finally:
        db.close()
