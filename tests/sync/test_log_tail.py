"""The in-memory log tail of the SQLite store: a newsync read served from it must return
exactly what the database returns (same items, same order, same "more" keys), for any
sequence of appends and any keys and windows; and it stays inside its bounds."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from wxnet.sync.sqlite_store import LogTail, SQLiteStore
from wxnet.sync.store import Append

KEYS = (1, 2, 3, 11)


def _profile(uin: int, name: str, nick: str) -> bytes:
    return f"p{uin}".encode()


appends = st.lists(
    st.tuples(
        st.lists(st.integers(1, 3), min_size=1, max_size=3, unique=True),
        st.sampled_from(KEYS),
        st.binary(min_size=1, max_size=300),
    ),
    min_size=1,
    max_size=40,
)
reads = st.lists(
    st.tuples(
        st.integers(1, 3),
        st.lists(st.tuples(st.sampled_from(KEYS), st.integers(0, 45)), max_size=4),
        st.integers(1, 12),
        st.integers(1, 2000),
    ),
    min_size=1,
    max_size=10,
)


async def _scenario(
    tmp: Path,
    batches: list[tuple[list[int], int, bytes]],
    queries: list[tuple[int, list[tuple[int, int]], int, int]],
) -> None:
    tail = SQLiteStore(tmp / "a.db", "NORMAL", profile_item=_profile, tail_items=8, tail_bytes=900)
    await tail.start(lambda _ch: None)
    try:
        for n in (1, 2, 3):
            await tail.create_account(f"user{n}", "x", f"u{n}", 0)
        for uins, key, body in batches:
            await tail.append([Append(uins, key, body)])
        # the store hands every commit's entries over before the write returns
        for uin, after, max_items, max_bytes in queries:
            dedup = list(dict(after).items())  # one entry per key, as the engine asks
            tail.tail.max_items, saved = 0, tail.tail.max_items
            saved_rings = tail.tail._rings
            tail.tail._rings = type(saved_rings)()
            want = await tail.read_log(uin, dedup, max_items, max_bytes)
            tail.tail.max_items, tail.tail._rings = saved, saved_rings
            got = await tail.read_log(uin, dedup, max_items, max_bytes)
            assert got == want
    finally:
        tail.close()


@settings(max_examples=40, deadline=None)
@given(appends, reads)
def test_tail_reads_equal_database_reads(
    batches: list[tuple[list[int], int, bytes]],
    queries: list[tuple[int, list[tuple[int, int]], int, int]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_scenario(Path(tmp), batches, queries))


def test_tail_serves_a_read_at_the_head_without_the_database() -> None:
    async def run(tmp: Path) -> None:
        store = SQLiteStore(tmp / "a.db", "NORMAL", profile_item=_profile)
        await store.start(lambda _ch: None)
        try:
            uin = await store.create_account("alice", "x", "A", 0)
            for i in range(5):
                await store.append([Append([uin], 2, b"m%d" % i)])
            before = store.statistics()
            items, more = await store.read_log(uin, [(2, 2)], 100, 65536)
            assert items == [(2, 3, b"m2"), (2, 4, b"m3"), (2, 5, b"m4")] and more == []
            after = store.statistics()
            assert after["tail_hits"] == before["tail_hits"] + 1
            assert after["tail_misses"] == before["tail_misses"]
            # the profile log's first entry was written before the tail saw it: database
            items, _ = await store.read_log(uin, [(1, 0)], 100, 65536)
            assert items == [(1, 1, b"p%d" % uin)]
            assert store.statistics()["tail_misses"] == after["tail_misses"] + 1
        finally:
            store.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp)))


def test_tail_bounds() -> None:
    tail = LogTail(max_items=4, max_bytes=100, total_bytes=250)
    tail.add((1, 2, s, b"x" * 10) for s in range(1, 11))
    ring = tail.read(1, 2, 6, 10)
    assert ring is not None and [s for s, _ in ring] == [7, 8, 9, 10]
    assert tail.read(1, 2, 5, 10) is None  # seq 6 is no longer held
    assert tail.read(1, 2, 9, 11) is None  # does not reach the head
    tail.add((1, 2, s, b"y" * 60) for s in range(11, 13))  # 120 bytes > 100 per log
    ring = tail.read(1, 2, 11, 12)
    assert ring is not None and [s for s, _ in ring] == [12]
    for uin in range(2, 10):  # all logs together: at most 250 bytes
        tail.add([(uin, 2, 1, b"z" * 50)])
    assert tail.bytes <= 250
    assert tail.read(1, 2, 11, 12) is None  # the least recently written log went first
    assert tail.read(9, 2, 0, 1) is not None
    off = LogTail(0, 100, 100)
    off.add([(1, 2, 1, b"x")])
    assert len(off) == 0 and off.bytes == 0
