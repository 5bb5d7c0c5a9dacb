"""``Database.write_batched``: the jobs of one group with the same batch function run as
one call; when it raises, each runs alone and only the failing ones get the error, and
the writer's cached state is dropped (``on_rollback``)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wxnet.proto.synckey import KEY_MSG
from wxnet.sync.db import Database, DatabaseClosed, insert_rows
from wxnet.sync.engine import profile_item
from wxnet.sync.sqlite_store import SQLiteStore
from wxnet.sync.store import Changes, NewMessage

T0 = 1_700_000_000


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


def _hold(holding: threading.Event, release: threading.Event) -> None:
    holding.set()
    release.wait(10)


async def test_a_failing_batch_after_a_plain_job_keeps_that_job(tmp_path: Path) -> None:
    """The batch is not its transaction's first work: its savepoint undoes only its own
    rows (a batch that opens the transaction has none: the test above)."""
    db = Database(tmp_path / "p.db", synchronous="NORMAL")
    await db.write(lambda c: c.execute("CREATE TABLE t (v INTEGER PRIMARY KEY)"))

    def batch(conn: sqlite3.Connection, args: list[int]) -> list[int]:
        insert_rows(conn, "INSERT INTO t (v)", 1, args)
        if 13 in args:
            raise ValueError("unlucky")
        return args

    release, holding = threading.Event(), threading.Event()
    db.write_nowait(lambda c: _hold(holding, release))
    assert holding.wait(10)
    plain = asyncio.ensure_future(db.write(lambda c: c.execute("INSERT INTO t VALUES (100)")))
    futs = [asyncio.ensure_future(db.write_batched(batch, a)) for a in (1, 13, 2)]
    for _ in range(1000):  # bounded: until all four are queued behind the holder
        if db._wq.qsize() == 4:
            break
        await asyncio.sleep(0)
    release.set()
    await plain
    done = await asyncio.gather(*futs, return_exceptions=True)
    assert done[0] == 1 and done[2] == 2 and isinstance(done[1], ValueError)
    rows = db.read_now(lambda c: c.execute("SELECT v FROM t ORDER BY v").fetchall())
    assert rows == [(1,), (2,), (100,)]
    db.close()


_ROWS = st.lists(
    st.tuples(st.integers(0, 40), st.one_of(st.none(), st.binary(max_size=3))), max_size=150
)


@settings(max_examples=60, deadline=None)
@given(rows=_ROWS)
def test_insert_rows_stores_what_executemany_stores(rows: list[tuple[int, bytes | None]]) -> None:
    """Any number of rows (chunks of 64 and the powers of two below), duplicates left
    out by OR IGNORE counted the same way, the same table afterwards."""
    conns = [sqlite3.connect(":memory:", isolation_level=None) for _ in range(2)]
    for c in conns:
        c.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
    many = conns[0].executemany("INSERT OR IGNORE INTO t (k, v) VALUES (?,?)", rows).rowcount
    flat = [x for r in rows for x in r]
    assert insert_rows(conns[1], "INSERT OR IGNORE INTO t (k, v)", 2, flat) == many
    a, b = (c.execute("SELECT k, v FROM t ORDER BY k").fetchall() for c in conns)
    assert a == b


def test_insert_rows_raises_what_the_insert_raises() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    flat: list[object] = []
    for k in range(70):  # a chunk of 64, then 4, 2: the bad row is in the 4
        flat += (k, None if k == 66 else "x")
    with pytest.raises(sqlite3.IntegrityError):
        insert_rows(conn, "INSERT INTO t (k, v)", 2, flat)
    # the failing chunk inserted none of its rows; the chunk before it stays until the
    # caller's savepoint goes (as executemany's rows before the bad one would)
    assert conn.execute("SELECT COUNT(*), MAX(k) FROM t").fetchone() == (64, 63)
    with pytest.raises(ValueError):
        insert_rows(conn, "INSERT INTO t (k, v)", 2, [1, "a", 2])
    assert insert_rows(conn, "INSERT INTO t (k, v)", 2, []) == 0
    upsert = " ON CONFLICT(k) DO UPDATE SET v=excluded.v"
    assert insert_rows(conn, "INSERT INTO t (k, v)", 2, [1, "new", 100, "y"], upsert) == 2
    assert conn.execute("SELECT v FROM t WHERE k IN (1, 100) ORDER BY k").fetchall() == [
        ("new",),
        ("y",),
    ]


async def test_one_bad_message_of_a_group_fails_only_its_send(tmp_path: Path) -> None:
    """Sends of one group are stored by one batch; a message whose body cannot be built
    fails its own send, the others are stored with contiguous seqs and published."""
    published: list[Changes] = []
    st_ = SQLiteStore(tmp_path / "s.db", "FULL", profile_item=profile_item)
    await st_.start(published.append)
    a = await st_.create_account("alice", "x", "Alice", T0)
    b = await st_.create_account("bob", "x", "Bob", T0)

    def make(cid: str) -> NewMessage:
        def body(mid: int, ct: int) -> bytes:
            if cid == "bad":
                raise RuntimeError("no body")
            return f"{cid}:{mid}".encode()

        return NewMessage(cid, "bob", 1, None, [b], body)

    release, holding = threading.Event(), threading.Event()
    st_.db.write_nowait(lambda c: _hold(holding, release))
    assert holding.wait(10)
    published.clear()
    cids = ["m1", "bad", "m2", "m1"]  # the last repeats the first: a dup in the group
    futs = [asyncio.ensure_future(st_.store_messages(a, [make(c)], T0)) for c in cids]
    for _ in range(1000):
        if st_.db._wq.qsize() == 4:
            break
        await asyncio.sleep(0)
    release.set()
    done = await asyncio.gather(*futs, return_exceptions=True)
    assert isinstance(done[1], RuntimeError)
    (m1,), (m2,), (again,) = done[0], done[2], done[3]  # type: ignore[misc]
    assert not m1[2] and not m2[2] and again == (m1[0], m1[1], True)
    items, more = await st_.read_log(b, [(KEY_MSG, 0)], 100, 1 << 20)
    assert [(s, body) for _, s, body in items] == [
        (1, f"m1:{m1[0]}".encode()),
        (2, f"m2:{m2[0]}".encode()),
    ]
    assert not more
    assert [e for ch in published for e in ch.entries] == [
        (b, KEY_MSG, 1, f"m1:{m1[0]}".encode()),
        (b, KEY_MSG, 2, f"m2:{m2[0]}".encode()),
    ]
    await st_.aclose()
