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
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["Database", "DatabaseClosed", "StoreDamaged", "check_integrity", "private_dir"]

T = TypeVar("T")
log = logging.getLogger("wxnet.db")

#: Group size cap: a group never holds more than this many write functions.
MAX_GROUP = 2048


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


_STOP = object()


def _alone(
    batch: Callable[[sqlite3.Connection, list[Any]], list[Any]], arg: Any
) -> Callable[[sqlite3.Connection], Any]:
    return lambda conn: batch(conn, [arg])[0]


def _unused(conn: sqlite3.Connection) -> None:  # a batched job's ``fn``
    raise AssertionError("a batched job runs through its batch")


def connect(path: Path, *, synchronous: str = "FULL", cache_kib: int = 65536) -> sqlite3.Connection:
    """Open the store file, creating it 0600 (SQLite gives its -wal and -shm files the
    same mode); an existing file readable by others is made private. ``cache_kib``:
    the connection's page cache (``[sync] page_cache_kib`` for the server's)."""
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
    conn.execute("PRAGMA wal_autocheckpoint=4000")
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
    """

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        init: Callable[[sqlite3.Connection], None] | None = None,
        cache_kib: int = 65536,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be FULL or NORMAL")
        self.path = path
        self._cache_kib = cache_kib
        self._wconn = connect(path, synchronous=synchronous, cache_kib=cache_kib)
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
        self._after_commit: list[Callable[[], None]] = []
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
        self._submit(self._wq, _Job(fn, loop, fut))
        return await fut

    async def write_batched(
        self, batch: Callable[[sqlite3.Connection, list[Any]], list[T]], arg: Any
    ) -> T:
        """Like :meth:`write`, but every job of one group queued with the same ``batch``
        runs as one call, ``batch(conn, [arg, ...]) -> [result, ...]`` (one result per
        arg, in order), so that it can write the rows of all of them with one statement
        per table. If the call raises, each arg is run again alone, in its own
        savepoint, and only the failing ones get the error."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._submit(self._wq, _Job(_unused, loop, fut, batch, arg))
        return await fut

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
            else:
                self.groups += 1
                self.writes += len(group)
                for cb in self._after_commit:
                    try:
                        cb()
                    except Exception:
                        log.exception("after-commit callback failed")
            self._resolve_all(results)

    def _run_group(
        self, conn: sqlite3.Connection, group: list[_Job]
    ) -> list[tuple[_Job, bool, Any]]:
        """Run a group's jobs inside its transaction: plain jobs one by one, each in its
        own savepoint; batched jobs together, where the first of their batch stood."""
        batches: dict[Any, list[_Job]] = {}
        for job in group:
            if job.batch is not None:
                batches.setdefault(job.batch, []).append(job)
        results: list[tuple[_Job, bool, Any]] = []
        for job in group:
            if job.batch is None:
                results.append(self._run_one(conn, job, job.fn))
                continue
            jobs = batches.pop(job.batch, None)
            if jobs is None:
                continue  # ran with the first of its batch
            batch = job.batch
            conn.execute("SAVEPOINT job")
            try:
                values = batch(conn, [j.arg for j in jobs])
            except BaseException:  # find the failing ones: each alone
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                self._rolled_back()
                for j in jobs:
                    results.append(self._run_one(conn, j, _alone(batch, j.arg)))
            else:
                conn.execute("RELEASE job")
                results += [(j, True, v) for j, v in zip(jobs, values, strict=True)]
        return results

    def _run_one(
        self, conn: sqlite3.Connection, job: _Job, fn: Callable[[sqlite3.Connection], Any]
    ) -> tuple[_Job, bool, Any]:
        conn.execute("SAVEPOINT job")
        try:
            value = fn(conn)
        except BaseException as exc:  # the job's own error, reported to it
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            self._rolled_back()
            return (job, False, exc)
        conn.execute("RELEASE job")
        return (job, True, value)

    def _rolled_back(self) -> None:
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

    @classmethod
    def _resolve_all(cls, results: list[tuple[_Job, bool, Any]]) -> None:
        # One wake-up per event loop for the whole group, not one per job.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, bool, Any]]] = {}
        for res in results:
            job = res[0]
            if job.loop is None:
                if not res[1]:
                    log.error("background write failed: %r", res[2])
                continue
            by_loop.setdefault(job.loop, []).append(res)
        for loop, items in by_loop.items():

            def settle(items: list[tuple[_Job, bool, Any]] = items) -> None:
                for job, ok, value in items:
                    fut = job.future
                    if fut is None or fut.done():
                        continue
                    if ok:
                        fut.set_result(value)
                    else:
                        fut.set_exception(value)

            try:
                loop.call_soon_threadsafe(settle)
            except RuntimeError:  # loop closed: nobody waits for the answer any more
                pass

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
