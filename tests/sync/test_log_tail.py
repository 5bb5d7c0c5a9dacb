"""The in-memory log tail of the SQLite store: a newsync read served from it must return
exactly what the database returns (same items, same order, same "more" keys), for any
sequence of appends, commits and any keys and windows; and it stays inside its bounds
(what a device committed leaves it)."""

from __future__ import annotations

import asyncio
import platform
import sys
import tempfile
import tracemalloc
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from wxnet.sync import logtail
from wxnet.sync.logtail import ENTRY_COST, MIN_RING, RELEASE_BYTES, RING_COST
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
        st.booleans(),  # then commit that key (a device of the account has it)
    ),
    min_size=1,
    max_size=10,
)


async def _scenario(
    tmp: Path,
    batches: list[tuple[list[int], int, bytes]],
    queries: list[tuple[int, list[tuple[int, int]], int, int, bool]],
) -> None:
    tail = SQLiteStore(tmp / "a.db", "NORMAL", profile_item=_profile, tail_items=8, tail_bytes=900)
    await tail.start(lambda _ch: None)
    try:
        for n in (1, 2, 3):
            await tail.create_account(f"user{n}", "x", f"u{n}", 0)
        for uins, key, body in batches:
            await tail.append([Append(uins, key, body)])
        # the store hands every commit's entries over before the write returns
        for uin, after, max_items, max_bytes, commit in queries:
            dedup = list(dict(after).items())  # one entry per key, as the engine asks
            tail.tail.max_items, saved = 0, tail.tail.max_items
            saved_rings = tail.tail._rings
            tail.tail._rings = type(saved_rings)()
            want = await tail.read_log(uin, dedup, max_items, max_bytes)
            tail.tail.max_items, tail.tail._rings = saved, saved_rings
            got = await tail.read_log(uin, dedup, max_items, max_bytes)
            assert got == want
            if commit:
                heads = [(k, min(s, await tail.head(uin, k))) for k, s in dedup]
                tail.tail.committed(uin, heads)  # as Engine.commit does
    finally:
        tail.close()


@settings(max_examples=40, deadline=None)
@given(appends, reads)
def test_tail_reads_equal_database_reads(
    batches: list[tuple[list[int], int, bytes]],
    queries: list[tuple[int, list[tuple[int, int]], int, int, bool]],
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


def _held(tail: LogTail) -> int:
    """What the tail's rings hold, counted as LogTail.bytes counts it."""
    return sum(RING_COST + sys.getsizeof(ring) for ring in tail._rings.values())


def test_tail_bounds() -> None:
    entry = 10 + ENTRY_COST
    ring_cost = RING_COST + sys.getsizeof(bytes(MIN_RING))  # a ring's least size
    tail = LogTail(max_items=4, max_bytes=100, total_bytes=3 * ring_cost)
    tail.add((1, 2, s, b"x" * 10) for s in range(1, 11))
    ring = tail.read(1, 2, 6, 10)
    assert ring is not None and [s for s, _ in ring] == [7, 8, 9, 10]
    assert tail.bytes == _held(tail)  # what it holds, counted as memory
    assert tail.bytes >= RING_COST + 4 * entry
    assert tail.read(1, 2, 5, 10) is None  # seq 6 is no longer held
    assert tail.read(1, 2, 9, 11) is None  # does not reach the head
    tail.add((1, 2, s, b"y" * 60) for s in range(11, 13))  # 120 bytes > 100 per log
    ring = tail.read(1, 2, 11, 12)
    assert ring is not None and [(s, b) for s, b in ring] == [(12, b"y" * 60)]
    for uin in range(2, 10):  # all logs together: at most total_bytes
        tail.add([(uin, 2, 1, b"z" * 10)])
        assert tail.bytes <= tail.total_bytes
    assert tail.read(1, 2, 11, 12) is None  # the least recently written log went first
    assert tail.read(9, 2, 0, 1) is not None
    off = LogTail(0, 100, 100)
    off.add([(1, 2, 1, b"x")])
    assert len(off) == 0 and off.bytes == 0


def test_a_commit_drops_what_the_device_has() -> None:
    tail = LogTail(max_items=32, max_bytes=10_000, total_bytes=1 << 20)
    tail.add((7, k, s, b"m%d" % s) for k in (2, 3) for s in range(1, 6))
    assert len(tail) == 2
    tail.committed(7, [(2, 3), (3, 0)])  # seqs 1-3 of log 2 are on the device
    ring = tail.read(7, 2, 3, 5)
    assert ring is not None and list(ring) == [(4, b"m4"), (5, b"m5")]
    assert tail.read(7, 2, 2, 5) is None  # seq 3 went: a device behind reads SQLite
    assert tail.trimmed == 3
    tail.committed(7, [(2, 5), (3, 5)])  # in sync: nothing left, not even the rings
    assert len(tail) == 0 and tail.bytes == 0 and tail.trimmed == 10
    tail.committed(7, [(2, 9)])  # nothing held: nothing to do
    tail.add([(7, 2, 6, b"m6")])  # the log grows again: a new ring from its new seq
    ring = tail.read(7, 2, 5, 6)
    assert ring is not None and list(ring) == [(6, b"m6")]
    tail.committed(7, [(2, 5)])  # an older key than the ring: nothing to drop
    assert tail.bytes == _held(tail) >= RING_COST + 2 + ENTRY_COST


class _ListModel:
    """The log tail's rules on plain lists: one ``[first, bodies]`` per (uin, key), in
    the order they were last written."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.max_items, self.max_bytes = max_items, max_bytes
        self.rings: dict[tuple[int, int], tuple[int, list[bytes]]] = {}
        self.trimmed = 0

    def add(self, entries: list[tuple[int, int, int, bytes]]) -> None:
        for uin, key, seq, body in entries:
            first, bodies = self.rings.pop((uin, key), (seq, []))
            if first + len(bodies) != seq:
                first, bodies = seq, []
            bodies.append(body)
            while len(bodies) > self.max_items or (
                len(bodies) > 1 and sum(map(len, bodies)) > self.max_bytes
            ):
                del bodies[0]
                first += 1
            self.rings[(uin, key)] = (first, bodies)

    def committed(self, uin: int, pairs: list[tuple[int, int]]) -> None:
        for key, seq in pairs:
            ring = self.rings.get((uin, key))
            if ring is None or ring[0] > seq:
                continue
            first, bodies = ring
            drop = min(len(bodies), seq - first + 1)
            self.trimmed += drop
            if drop == len(bodies):
                del self.rings[(uin, key)]
            else:
                self.rings[(uin, key)] = (first + drop, bodies[drop:])

    def read(self, uin: int, key: int, after: int, head: int) -> list[tuple[int, bytes]] | None:
        ring = self.rings.get((uin, key))
        if ring is None:
            return None
        first, bodies = ring
        last = first + len(bodies) - 1
        if first > after + 1 or last < head:
            return None
        return [(first + i, b) for i, b in enumerate(bodies) if first + i > after]


MODEL_KEYS = (1, 2, 11, 0xFFFFFFFF)
tail_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.lists(
                st.tuples(
                    st.integers(1, 3),
                    st.sampled_from(MODEL_KEYS),
                    st.one_of(st.just(0), st.integers(1, 40)),  # 0: the log's next seq
                    st.binary(max_size=120),
                ),
                min_size=1,
                max_size=6,
            ),
        ),
        st.tuples(
            st.just("commit"),
            st.integers(1, 3),
            st.lists(st.tuples(st.sampled_from(MODEL_KEYS), st.integers(0, 45)), max_size=3),
        ),
        st.tuples(
            st.just("read"),
            st.integers(1, 3),
            st.sampled_from(MODEL_KEYS),
            st.integers(0, 45),
            st.integers(0, 45),
        ),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 6), st.integers(0, 400), st.integers(0, 6000), tail_ops)
def test_tail_equals_a_list_model(
    max_items: int, max_bytes: int, total_bytes: int, ops: list[tuple[object, ...]]
) -> None:
    """Same answers as the plain-list model, the same rings (the least recently written
    dropped first when the memory bound is reached), and ``bytes`` counts exactly
    what the rings hold, within ``total_bytes``."""
    tail = LogTail(max_items, max_bytes, total_bytes)
    model = _ListModel(max_items, max_bytes)
    nxt: dict[tuple[int, int], int] = {}
    for op in ops:
        if op[0] == "add":
            entries = []
            for uin, key, seq, body in op[1]:  # type: ignore[attr-defined]
                if seq == 0:
                    seq = nxt.get((uin, key), 0) + 1
                nxt[(uin, key)] = seq
                entries.append((uin, key, seq, body))
            tail.add(entries)
            model.add(entries)
            held = [(hk >> 32, hk & 0xFFFFFFFF) for hk in tail._rings]
            order = list(model.rings)
            assert held == order[len(order) - len(held) :]  # the oldest ones went
            for hk in order[: len(order) - len(held)]:
                del model.rings[hk]
            assert tail.bytes <= total_bytes
        elif op[0] == "commit":
            uin, pairs = op[1], op[2]
            tail.committed(uin, pairs)  # type: ignore[arg-type]
            model.committed(uin, pairs)  # type: ignore[arg-type]
        else:
            _, uin, key, after, head = op
            ring = tail.read(uin, key, after, head)  # type: ignore[arg-type]
            got = None if ring is None else list(ring)
            assert got == model.read(uin, key, after, head)  # type: ignore[arg-type]
            assert all(type(b) is bytes for _, b in got or [])
        assert len(tail) == len(model.rings) and tail.trimmed == model.trimmed
        assert tail.bytes == _held(tail)
        for uin, key in model.rings:
            first, bodies = model.rings[(uin, key)]
            held_ring = tail.read(uin, key, first - 1, first + len(bodies) - 1)
            assert held_ring is not None and list(held_ring) == list(
                zip(range(first, first + len(bodies)), bodies, strict=True)
            )


def test_costs_are_what_the_rings_hold() -> None:
    """RING_COST and the buffers' allocated size are what tracemalloc sees the tail
    allocate (within a quarter: the dict's table grows in steps)."""
    tail = LogTail(max_items=32, max_bytes=1 << 20, total_bytes=1 << 30)
    bodies = [bytes([i]) * (40 + i) for i in range(64)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for rnd in range(3):
            tail.add((uin, 2, rnd + 1, bodies[(uin + rnd) % 64]) for uin in range(1, 3001))
        traced = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert 0.75 * tail.bytes <= traced <= 1.25 * tail.bytes, (traced, tail.bytes)


def test_rings_are_outside_pymalloc_and_a_shrunk_tail_lets_go() -> None:
    """Every ring is one object above pymalloc's 512-byte limit (the C allocator's,
    whose free pages can go back); a tail that shrank by RELEASE_BYTES and by half
    gives the C allocator's free pages back (once, glibc only), and a dict left with an
    eighth of its rings gets a table of its size."""
    tail = LogTail(max_items=32, max_bytes=1 << 20, total_bytes=1 << 30)
    logs = 2 * RELEASE_BYTES // MIN_RING + 100  # more than RELEASE_BYTES in all, twice
    tail.add((uin, 2, 1, b"x" * (uin % 50)) for uin in range(1, logs + 1))
    assert all(sys.getsizeof(ring) > 512 for ring in tail._rings.values())
    assert tail.bytes >= 2 * RELEASE_BYTES and tail.releases == 0
    big_table = sys.getsizeof(tail._rings)
    tail.committed(1, [(2, 1)])  # a little less: nothing to give back yet
    assert tail.releases == 0
    for uin in range(2, logs + 1):
        tail.committed(uin, [(2, 1)])
    assert len(tail) == 0 and tail.bytes == 0 and tail.trimmed == logs
    assert tail.releases == (0 if logtail._TRIM is None else 2)  # at half, and at empty
    assert sys.getsizeof(tail._rings) < big_table // 8
    tail.add([(1, 2, 2, b"y")])  # the tail works on as before
    ring = tail.read(1, 2, 1, 2)
    assert ring is not None and list(ring) == [(2, b"y")]


def test_release_is_glibc_malloc_trim() -> None:
    """On glibc the release is ``malloc_trim``; elsewhere there is none."""
    libc = platform.libc_ver()[0]
    assert (logtail._TRIM is not None) == (libc == "glibc")
