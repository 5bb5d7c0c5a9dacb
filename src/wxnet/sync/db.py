"""SQLite behind one writer thread with group commit, plus a reader thread.

Every write is a function ``fn(conn) -> T`` queued with :meth:`Database.write`. The
writer thread takes everything queued, runs each function inside its own SAVEPOINT
(so one failing request does not undo the others), commits the whole group once, and
only then resolves the futures: an acknowledgement that waits for its write therefore
leaves only after the data is durable. One commit per group is what makes many sends
per second affordable (docs/server.md, "How it works"; issue 2 "commits in groups").

Reads go to a separate connection on a reader thread; WAL lets them run while the
writer commits. A read issued after a write's future resolved sees that write.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "LATENCY_BUCKETS",
    "Database",
    "DatabaseClosed",
    "StoreDamaged",
    "Timings",
    "check_integrity",
    "insert_rows",
    "private_dir",
]

T = TypeVar("T")
log = logging.getLogger("wxnet.db")

#: Group size cap: a group never holds more than this many write functions.
MAX_GROUP = 2048


#: Upper bounds (seconds) of the latency histograms: fine below 10 ms, where a group
#: commit and a send's wait for it sit.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01,
    0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


class Timings:
    """A histogram of durations: counts per bucket (``bounds`` are the upper bounds, a
    last bucket takes the rest), their sum and count. Cheap enough for every write job
    (a bisect and two adds, no lock): each instance is observed from one thread only,
    and a scrape from another thread reads numbers that are at worst one sample old.
    ``server/metrics.py`` exposes it as a Prometheus histogram."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def quantile(self, q: float) -> float:
        """The upper bound of the bucket holding quantile ``q`` (0..1); inf past the
        last bound, 0.0 with no samples."""
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank and n:
                return self.bounds[i] if i < len(self.bounds) else float("inf")
        return float("inf")


#: Rows per multi-row INSERT of :func:`insert_rows` (at most this many; 64 rows of 7
#: columns stay below SQLite's oldest bound-parameter limit, 999).
INSERT_CHUNK = 64
_VALUES_SQL: dict[tuple[str, str, int, int], str] = {}


def insert_rows(
    conn: sqlite3.Connection, head: str, width: int, flat: Sequence[Any], tail: str = ""
) -> int:
    """Insert rows with multi-row ``VALUES`` statements instead of one step per row:
    ``head`` is the statement up to ``VALUES`` (``"INSERT INTO t (a, b)"``), ``flat``
    the rows' values one after the other, ``width`` per row, in order, ``tail`` what
    follows the rows (an ``ON CONFLICT`` clause). The rows go in
    chunks of :data:`INSERT_CHUNK`, the rest in power-of-two chunks (32, 16, ..., 1), so
    that a few statement texts are prepared once and kept by the connection's statement
    cache, and N rows take about log2(N) steps. Every step of a statement is a wait for
    SQLite with the GIL released and a wait to get it back from the event loop: with
    ``executemany`` that was one per row. Returns the rows inserted (``rowcount``: an
    ``INSERT OR IGNORE`` counts only the ones it kept).

    Raises:
        sqlite3.Error: as the ``INSERT`` of those rows would (a failing chunk inserts
            none of its rows; the caller's savepoint undoes the chunks before it).
    """
    rows, extra = divmod(len(flat), width)
    if extra:
        raise ValueError(f"{len(flat)} values are not rows of {width}")
    changed = 0
    at = 0
    while rows:
        n = INSERT_CHUNK if rows >= INSERT_CHUNK else 1 << (rows.bit_length() - 1)
        sql = _VALUES_SQL.get((head, tail, width, n))
        if sql is None:
            one = "(" + ",".join("?" * width) + ")"
            sql = f"{head} VALUES {','.join([one] * n)}{tail}"
            _VALUES_SQL[(head, tail, width, n)] = sql
        end = at + n * width
        args = flat if at == 0 and end == len(flat) else flat[at:end]
        changed += conn.execute(sql, args).rowcount
        at = end
        rows -= n
    return changed


class DatabaseClosed(RuntimeError):
    """The database was closed; the operation did not run."""


class StoreDamaged(RuntimeError):
    """The store file failed its integrity check; the message says how to recover."""


def private_dir(path: Path) -> None:
    """Create ``path`` (and parents) readable by the owner only: 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)


def _recovery_hint(path: Path, detail: str) -> str:
    fixed = path.with_suffix(".recovered.db")
    return (
        f"the store {path} is damaged ({detail}). Stop every wxnet process using it, keep"
        f" a copy of the file (with its -wal), then either restore a backup or recover"
        f" what is readable: sqlite3 {path} '.recover' | sqlite3 {fixed}"
        f" ; check the copy (PRAGMA integrity_check) and move it into place as {path.name}."
        f' To start on the damaged file anyway, set [sync] integrity_check = "off".'
    )


def check_integrity(path: Path, mode: str) -> None:
    """Run ``PRAGMA quick_check`` (``mode="quick"``) or ``integrity_check``
    (``"full"``) on the file at ``path``; ``"off"`` skips it.

    Raises:
        StoreDamaged: the check found a problem, or the file is not a database.
    """
    if mode == "off" or not path.exists():
        return
    pragma = "integrity_check" if mode == "full" else "quick_check"
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            rows = conn.execute(f"PRAGMA {pragma}").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise StoreDamaged(_recovery_hint(path, str(exc))) from None
    problems = [str(r[0]) for r in rows if r and r[0] != "ok"]
    if problems:
        more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise StoreDamaged(_recovery_hint(path, f"{pragma}: {problems[0]}{more}"))


@dataclass(slots=True)
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop | None
    future: asyncio.Future[Any] | None
    #: a batched job (:meth:`Database.write_batched`): ``batch(conn, args)`` runs for
    #: every job of the group with the same ``batch``, at once; ``fn`` is unused
    batch: Callable[[sqlite3.Connection, list[Any]], list[Any]] | None = None
    arg: Any = None
    #: ``time.perf_counter()`` when it was queued (``wxnet_db_write_wait_seconds``)
    t0: float = 0.0


_STOP = object()


def _alone(
    batch: Callable[[sqlite3.Connection, list[Any]], list[Any]], arg: Any
) -> Callable[[sqlite3.Connection], Any]:
    return lambda conn: batch(conn, [arg])[0]


def _unused(conn: sqlite3.Connection) -> None:  # a batched job's ``fn``
    raise AssertionError("a batched job runs through its batch")


#: SQLite's own checkpoint threshold (pages in the WAL), used by a connection that
#: checkpoints in its commits (``checkpoint_interval = 0``, and every tool's connection).
INLINE_CHECKPOINT_PAGES = 4000
#: With checkpoints in the background, the writer's commits still checkpoint past this
#: many pages: a backstop if the background checkpoints fall behind (or cannot finish
#: while a long read holds an old snapshot), so the WAL stays bounded (~80 MiB).
BACKSTOP_CHECKPOINT_PAGES = 20000


def connect(
    path: Path,
    *,
    synchronous: str = "FULL",
    cache_kib: int = 65536,
    autocheckpoint: int = INLINE_CHECKPOINT_PAGES,
) -> sqlite3.Connection:
    """Open the store file, creating it 0600 (SQLite gives its -wal and -shm files the
    same mode); an existing file readable by others is made private. ``cache_kib``:
    the connection's page cache (``[sync] page_cache_kib`` for the server's);
    ``autocheckpoint``: SQLite's ``wal_autocheckpoint`` (pages). Temporary storage
    (statement journals, sorts) stays in memory."""
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    elif path.stat().st_mode & 0o077:
        path.chmod(0o600)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute(f"PRAGMA cache_size={-int(cache_kib)}")  # negative: in KiB
    conn.execute(f"PRAGMA wal_autocheckpoint={int(autocheckpoint)}")
    # The statement journal of a multi-row INSERT (and a job's savepoint) holds the old
    # image of every page it changes; past 64 KiB SQLite spilled it to a temporary file
    # (opened, written page by page, unlinked: a dozen system calls per group commit
    # and more per page). In memory it is a copy per page, freed at the statement's end.
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


class Database:
    """Thread-backed SQLite access for asyncio code.

    Args:
        path: the database file (created if missing).
        synchronous: SQLite's ``synchronous`` pragma: ``FULL`` (default; every group
            commit is fsynced, so acknowledged data survives power loss) or ``NORMAL``
            (survives a killed process, not a power cut; faster).
        init: run once on the writer connection before anything else (schema setup).
        cache_kib: the page cache of each of its connections, in KiB (what it holds
            stays allocated: with a store much larger than this, memory stays at it).
        checkpoint_interval: seconds between WAL checkpoints run on the reader thread,
            off the writer's path (a checkpoint copies the WAL into the file and fsyncs
            it: inside a commit it held up every write queued behind it). 0: SQLite
            checkpoints inside the writer's commit every 4,000 pages, as it does by
            default. Background checkpoints start only after a commit, so an idle store
            runs none.
    """

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        init: Callable[[sqlite3.Connection], None] | None = None,
        cache_kib: int = 65536,
        checkpoint_interval: float = 0.25,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be FULL or NORMAL")
        if checkpoint_interval < 0:
            raise ValueError("checkpoint_interval must not be negative")
        self.path = path
        self._cache_kib = cache_kib
        self.checkpoint_interval = checkpoint_interval
        self._wconn = connect(
            path,
            synchronous=synchronous,
            cache_kib=cache_kib,
            autocheckpoint=(
                BACKSTOP_CHECKPOINT_PAGES if checkpoint_interval else INLINE_CHECKPOINT_PAGES
            ),
        )
        if init is not None:
            try:
                init(self._wconn)
            except BaseException:  # e.g. a store from a newer wxnet: leave no handle open
                self._wconn.close()
                raise
        self._rconn = connect(path, synchronous=synchronous, cache_kib=cache_kib)
        self._synchronous = synchronous
        self._lconn: sqlite3.Connection | None = None
        self._wq: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._rq: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self.groups = 0
        self.writes = 0
        #: writer thread: a group's transaction, BEGIN to COMMIT (its fsync included)
        self.commit_times = Timings()
        #: event loop: a write job queued to its future resolved (its group's wait, its
        #: transaction, and the loop's wake-up)
        self.wait_times = Timings()
        #: event loop: a group committed to the loop running its callback
        self.wake_times = Timings()
        #: reader thread: one background checkpoint
        self.checkpoint_times = Timings()
        self.checkpoints = 0
        #: pages in the WAL at the last background checkpoint
        self.wal_pages = 0
        self._checkpoint_queued = False
        self._checkpoint_last = time.perf_counter()
        self._after_commit: list[Callable[[], None]] = []
        self._on_loop: list[tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = []
        #: called on the writer thread whenever work is rolled back (a failed job's
        #: savepoint, a failed group), so that state cached by write functions (next ids,
        #: log heads) is dropped and read again
        self.on_rollback: Callable[[], None] | None = None
        self._writer = threading.Thread(target=self._write_loop, name="wxnet-db-writer")
        self._reader = threading.Thread(target=self._read_loop, name="wxnet-db-reader")
        self._writer.daemon = self._reader.daemon = True
        self._writer.start()
        self._reader.start()

    # -- API -------------------------------------------------------------------------
    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in the next group transaction; return once the group committed."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._submit(self._wq, _Job(fn, loop, fut, t0=time.perf_counter()))
        return await fut

    async def write_batched(
        self, batch: Callable[[sqlite3.Connection, list[Any]], list[T]], arg: Any
    ) -> T:
        """Like :meth:`write`, but every job of one group queued with the same ``batch``
        runs as one call, ``batch(conn, [arg, ...]) -> [result, ...]`` (one result per
        arg, in order), so that it can write the rows of all of them with one statement
        per table. If the call raises, each arg is run again alone, in its own
        savepoint, and only the failing ones get the error."""
        return await self.submit_batched(batch, arg)

    def submit_batched(
        self, batch: Callable[[sqlite3.Connection, list[Any]], list[T]], arg: Any
    ) -> asyncio.Future[T]:
        """:meth:`write_batched` without its coroutine: queue the job now and return the
        future its group resolves (for a caller on the hot path that awaits it itself,
        one coroutine frame fewer to create, suspend and resume per write).

        Raises:
            DatabaseClosed: the database was closed (nothing was queued).
        """
        if self._closed:
            raise DatabaseClosed("database is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._wq.put(_Job(_unused, loop, fut, batch, arg, time.perf_counter()))
        return fut

    def write_nowait(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        """Queue ``fn`` without waiting for it (errors are logged)."""
        self._submit(self._wq, _Job(fn, None, None))

    def read_now(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a short read right here, on the caller's own connection (no thread hop).

        For the event loop's small, indexed reads (a sync window, a lookup): WAL readers
        never wait for the writer, and a hop to the reader thread costs more than they do.
        """
        if self._closed:
            raise DatabaseClosed("database is closed")
        if self._lconn is None:
            self._lconn = connect(
                self.path, synchronous=self._synchronous, cache_kib=self._cache_kib
            )
        return fn(self._lconn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._submit(self._rq, _Job(fn, loop, fut))
        return await fut

    def on_writer_thread(self) -> bool:
        return threading.current_thread() is self._writer

    def after_commit(self, cb: Callable[[], None]) -> None:
        """From inside a write function: run ``cb`` on the writer thread after the group
        commits (not if it rolls back)."""
        self._after_commit.append(cb)

    def after_commit_on(self, loop: asyncio.AbstractEventLoop, cb: Callable[[], None]) -> None:
        """From inside a write function: run ``cb`` on ``loop`` after the group commits
        (not if it rolls back), in the one callback that also resolves the group's
        futures on that loop: right after them, so before any task that waits for the
        group runs again. One wake-up of the loop per group carries both (a
        ``call_soon_threadsafe`` each was one more write to the loop's self-pipe)."""
        self._on_loop.append((loop, cb))

    def close(self) -> None:
        """Finish every queued job, then close both connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._wq.put(_STOP)
        self._rq.put(_STOP)
        self._writer.join()
        self._reader.join()
        self._wconn.close()
        self._rconn.close()
        if self._lconn is not None:
            self._lconn.close()

    # -- threads ---------------------------------------------------------------------
    def _submit(self, q: queue.SimpleQueue[Any], job: _Job) -> None:
        if self._closed:
            raise DatabaseClosed("database is closed")
        q.put(job)

    def _write_loop(self) -> None:
        conn = self._wconn
        stop = False
        while not stop:
            first = self._wq.get()
            if first is _STOP:
                break
            group: list[_Job] = [first]
            while len(group) < MAX_GROUP:
                try:
                    nxt = self._wq.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                group.append(nxt)
            self._after_commit = []
            self._on_loop = []
            t_begin = time.perf_counter()
            try:
                conn.execute("BEGIN IMMEDIATE")
                results = self._run_group(conn, group)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                log.error("group commit failed: %s", exc)
                try:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                except sqlite3.Error as again:  # a damaged file: the writer must live on
                    log.error("rollback failed: %s", again)
                self._rolled_back()
                results = [(job, False, exc) for job in group]
                self._after_commit = []
                self._on_loop = []
            else:
                t_end = time.perf_counter()
                self.commit_times.observe(t_end - t_begin)
                self.groups += 1
                self.writes += len(group)
                for cb in self._after_commit:
                    try:
                        cb()
                    except Exception:
                        log.exception("after-commit callback failed")
                if (
                    self.checkpoint_interval
                    and not self._checkpoint_queued
                    and t_end - self._checkpoint_last >= self.checkpoint_interval
                ):
                    self._checkpoint_queued = True
                    self._rq.put(_Job(self._checkpoint, None, None))
            self._resolve_all(results, self._on_loop)

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        """Reader thread: copy what the WAL holds into the store file (PASSIVE: it never
        waits for the writer, which goes on appending meanwhile; SQLite restarts the WAL
        from its start at the next write once all of it is copied)."""
        t0 = time.perf_counter()
        try:
            row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            t1 = time.perf_counter()
            self._checkpoint_last = t1
            self._checkpoint_queued = False
        self.checkpoint_times.observe(t1 - t0)
        self.checkpoints += 1
        if row is not None:
            self.wal_pages = int(row[1])

    def _run_group(
        self, conn: sqlite3.Connection, group: list[_Job]
    ) -> list[tuple[_Job, bool, Any]]:
        """Run a group's jobs inside its transaction: plain jobs one by one, each in its
        own savepoint; batched jobs together, where the first of their batch stood. A
        batch that is the transaction's first work needs no savepoint of its own (two
        statements fewer): if it fails, the transaction is rolled back and begun again,
        which undoes the same, and its jobs run again alone."""
        batches: dict[Any, list[_Job]] = {}
        for job in group:
            if job.batch is not None:
                batches.setdefault(job.batch, []).append(job)
        results: list[tuple[_Job, bool, Any]] = []
        fresh = True  # nothing ran in this transaction yet
        for job in group:
            if job.batch is None:
                results.append(self._run_one(conn, job, job.fn))
                fresh = False
                continue
            jobs = batches.pop(job.batch, None)
            if jobs is None:
                continue  # ran with the first of its batch
            batch = job.batch
            marks = self._marks()
            if not fresh:
                conn.execute("SAVEPOINT job")
            try:
                values = batch(conn, [j.arg for j in jobs])
            except BaseException:  # find the failing ones: each alone
                if fresh:
                    conn.execute("ROLLBACK")
                    conn.execute("BEGIN IMMEDIATE")
                else:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                self._rolled_back(marks)
                for j in jobs:
                    results.append(self._run_one(conn, j, _alone(batch, j.arg)))
            else:
                if not fresh:
                    conn.execute("RELEASE job")
                results += [(j, True, v) for j, v in zip(jobs, values, strict=True)]
            fresh = False
        return results

    def _run_one(
        self, conn: sqlite3.Connection, job: _Job, fn: Callable[[sqlite3.Connection], Any]
    ) -> tuple[_Job, bool, Any]:
        marks = self._marks()
        conn.execute("SAVEPOINT job")
        try:
            value = fn(conn)
        except BaseException as exc:  # the job's own error, reported to it
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            self._rolled_back(marks)
            return (job, False, exc)
        conn.execute("RELEASE job")
        return (job, True, value)

    def _marks(self) -> tuple[int, int]:
        return len(self._after_commit), len(self._on_loop)

    def _rolled_back(self, marks: tuple[int, int] | None = None) -> None:
        if marks is not None:  # a savepoint: what its work asked for after commit goes
            del self._after_commit[marks[0] :]
            del self._on_loop[marks[1] :]
        if self.on_rollback is not None:
            self.on_rollback()

    def _read_loop(self) -> None:
        conn = self._rconn
        while True:
            job = self._rq.get()
            if job is _STOP:
                break
            try:
                value = job.fn(conn)
            except BaseException as exc:
                self._resolve(job, False, exc)
            else:
                self._resolve(job, True, value)

    def _resolve_all(
        self,
        results: list[tuple[_Job, bool, Any]],
        on_loop: list[tuple[asyncio.AbstractEventLoop, Callable[[], None]]],
    ) -> None:
        # One wake-up per event loop for the whole group, not one per job.
        committed = time.perf_counter()
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, bool, Any]]] = {}
        for res in results:
            job = res[0]
            if job.loop is None:
                if not res[1]:
                    log.error("background write failed: %r", res[2])
                continue
            by_loop.setdefault(job.loop, []).append(res)
        cbs_by_loop: dict[asyncio.AbstractEventLoop, list[Callable[[], None]]] = {}
        for loop, cb in on_loop:
            by_loop.setdefault(loop, [])
            cbs_by_loop.setdefault(loop, []).append(cb)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(self._settle, committed, items, cbs_by_loop.get(loop, ()))
            except RuntimeError:  # loop closed: nobody waits for the answer any more
                pass

    def _settle(
        self,
        committed: float,
        items: list[tuple[_Job, bool, Any]],
        cbs: Sequence[Callable[[], None]],
    ) -> None:
        """Event loop: a group's outcome for the jobs of this loop, then its callbacks
        (:meth:`after_commit_on`)."""
        now = time.perf_counter()
        self.wake_times.observe(now - committed)
        observe = self.wait_times.observe
        for job, ok, value in items:
            if job.t0:
                observe(now - job.t0)
            fut = job.future
            if fut is None or fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        for cb in cbs:
            try:
                cb()
            except Exception:
                log.exception("after-commit callback failed")

    @staticmethod
    def _resolve(job: _Job, ok: bool, value: Any) -> None:
        if job.future is None or job.loop is None:
            if not ok:
                log.error("background write failed: %r", value)
            return
        fut = job.future

        def settle() -> None:
            if fut.done():
                return
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

        try:
            job.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # loop closed: nobody waits for the answer any more
            pass
