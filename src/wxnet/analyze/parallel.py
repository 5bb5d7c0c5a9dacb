"""``wxnet analyze --jobs N``: the same analysis, in N worker processes.

Flows are sharded by a symmetric hash of their 5-tuple (:meth:`Analyzer.run_shard`):
each worker reads the whole capture and keeps every flow in its table (so every
worker's clock, sweeps, idle timeouts, flow table cap and statistics are those of a
single run), but another worker's flow is only counted: it is settled at its first
packet, never classified or reported. Every worker processes every UDP flow to or from
port 53 in full, so each one's DNS memory holds every answer in the capture, as a
single run's does. The parent merges the workers' records by the sort key each carries
(:attr:`Analyzer.emit_tag`: the packet position of the sweep that emitted it, then the
flow's first packet), which is the order in which a single run emits them, and takes the
statistics of worker 0 (every worker's are the same); the output is the same as
``--jobs 1`` (checked by ``tests/analyze/test_parallel.py``).

Workers are forked, so they share the parent's loaded signatures. Records travel as
batches of plain tuples over a pipe (:func:`_pack`; faster to pickle than the record
objects, and the compiled record classes are not picklable). When the output needs only
totals (``--summary``), :func:`fold_parallel` has each worker fold its own records into
a small result (a :class:`Fold`) and send only that: no record crosses the pipe.
"""

from __future__ import annotations

import heapq
import multiprocessing
import os
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any, Protocol

from wxnet.analyze.capture import CaptureError, CaptureReader
from wxnet.analyze.engine import Analyzer, FlowRecord, LonglinkPacket, Stats
from wxnet.classify import Classifier, Evidence, Verdict

__all__ = ["Fold", "ParallelError", "fold_parallel", "run_parallel"]

#: Records per message from a worker.
BATCH = 256

Tag = tuple[float, int, float, int]
Tagged = tuple[Tag, FlowRecord]
#: A record as it travels from a worker (:func:`_pack`).
Packed = tuple[Any, ...]
#: The statistics a worker sends back as plain values (``linktypes``, a set, goes apart).
_STATS = tuple(name for name in Stats.FIELDS if name != "linktypes")


def _pack(tag: tuple[float, int, float, int], r: FlowRecord) -> Packed:
    v = r.verdict
    return (
        tag,
        r.transport,
        r.client,
        r.client_port,
        r.server,
        r.server_port,
        r.start,
        r.end,
        r.client_packets,
        r.server_packets,
        r.client_bytes,
        r.server_bytes,
        v.app,
        v.label,
        tuple((e.kind, e.detail) for e in v.evidence),
        v.confirmed,
        v.spoofed,
        v.final,
        v.names,
        tuple((p.direction, p.cmd, p.name, p.seq, p.body_len) for p in r.longlink),
    )


def _unpack(t: Packed) -> Tagged:
    verdict = Verdict(
        t[12], t[13], tuple(Evidence(k, d) for k, d in t[14]), t[15], t[16], t[17], t[18]
    )
    longlink = tuple(LonglinkPacket(*p) for p in t[19])
    rec = FlowRecord(
        t[1], t[2], t[3], t[4], t[5], t[6], t[7], verdict, t[8], t[9], t[10], t[11], longlink
    )
    return t[0], rec


def _pack_stats(st: Stats) -> dict[str, Any]:
    return {name: getattr(st, name) for name in _STATS} | {"linktypes": set(st.linktypes)}


class ParallelError(Exception):
    """A worker process failed (the message holds its traceback)."""


class Fold(Protocol):
    """What a worker of :func:`fold_parallel` does with its own records, instead of
    sending them: ``add`` each one (with its order tag, :attr:`Analyzer.emit_tag`, which
    orders the records of all workers as one run would emit them), then ``result()``,
    which is sent to the parent (it must pickle)."""

    def add(self, tag: Tag, rec: FlowRecord) -> None: ...

    def result(self) -> Any: ...


def _worker(
    path: str | os.PathLike[str],
    classifier: Classifier,
    shard: int,
    shards: int,
    out: Connection,
    options: dict[str, Any],
    fold: Fold | None,
) -> None:
    batch: list[Packed] = []
    try:
        analyzer: Analyzer

        def emit(rec: FlowRecord) -> None:
            batch.append(_pack(analyzer.emit_tag, rec))
            if len(batch) >= BATCH:
                out.send(("recs", batch.copy()))
                batch.clear()

        def add(rec: FlowRecord) -> None:
            assert fold is not None
            fold.add(analyzer.emit_tag, rec)

        analyzer = Analyzer(emit if fold is None else add, classifier, **options)
        error: tuple[str, int] | None = None
        with open(path, "rb") as f:
            reader = CaptureReader(f)
            try:
                analyzer.run_shard(reader, shard, shards)
            except CaptureError as exc:
                error = (exc.reason, exc.offset)
            finally:
                reader.close()
        analyzer.finish()
        if batch:
            out.send(("recs", batch))
        result = fold.result() if fold is not None else None
        out.send(("end", _pack_stats(analyzer.stats), error, result))
    except BaseException:  # report anything to the parent, then exit
        out.send(("fail", traceback.format_exc()))
    finally:
        out.close()


End = tuple[dict[str, Any], tuple[str, int] | None, Any]


def _stream(conn: Connection, ends: list[End]) -> Iterator[Tagged]:
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            raise ParallelError("a worker process exited without its results") from None
        if msg[0] == "recs":
            yield from map(_unpack, msg[1])
        elif msg[0] == "end":
            ends.append((msg[1], msg[2], msg[3]))
            return
        else:
            raise ParallelError(f"a worker process failed:\n{msg[1]}")


def run_parallel(
    path: str | os.PathLike[str],
    classifier: Classifier,
    jobs: int,
    emit: Callable[[FlowRecord], None],
    **options: Any,
) -> tuple[Stats, CaptureError | None]:
    """Analyse ``path`` in ``jobs`` processes; call ``emit`` for every flow, in the order
    of a single run. Returns the merged statistics and the capture's read error (the
    same in every worker), if any. ``options`` go to each :class:`Analyzer`."""
    stats, error, _ = _run(path, classifier, jobs, emit, None, options)
    return stats, error


def fold_parallel(
    path: str | os.PathLike[str],
    classifier: Classifier,
    jobs: int,
    make_fold: Callable[[], Fold],
    **options: Any,
) -> tuple[Stats, CaptureError | None, list[Any]]:
    """Analyse ``path`` in ``jobs`` processes, each folding its own flows' records into a
    fresh ``make_fold()``; returns the statistics, the read error and
    every worker's ``result()``, in worker order."""
    return _run(path, classifier, jobs, None, make_fold, options)


def _run(
    path: str | os.PathLike[str],
    classifier: Classifier,
    jobs: int,
    emit: Callable[[FlowRecord], None] | None,
    make_fold: Callable[[], Fold] | None,
    options: dict[str, Any],
) -> tuple[Stats, CaptureError | None, list[Any]]:
    ctx = multiprocessing.get_context("fork")
    procs = []
    streams = []
    ends: list[list[End]] = []
    for k in range(jobs):
        recv, send = ctx.Pipe(duplex=False)
        fold = make_fold() if make_fold is not None else None
        p = ctx.Process(
            target=_worker, args=(path, classifier, k, jobs, send, options, fold), daemon=True
        )
        p.start()
        send.close()
        procs.append((p, recv))
        ends.append([])
        streams.append(_stream(recv, ends[k]))
    try:
        merged = heapq.merge(*streams, key=lambda t: t[0])
        if emit is None:
            for _ in merged:  # folded runs send no records: this reads each "end"
                raise ParallelError("a folding worker sent records")
        else:
            for _tag, rec in merged:
                emit(rec)
    finally:
        for p, recv in procs:
            if p.is_alive() and not all(ends):
                p.kill()
            p.join()
            recv.close()
    # Every worker saw every packet and flow: worker 0's statistics are the run's.
    [(st, err, _)] = ends[0]
    stats = Stats()
    for name in _STATS:
        setattr(stats, name, st[name])
    stats.linktypes = st["linktypes"]
    error = CaptureError(err[0], err[1]) if err is not None else None
    return stats, error, [end[0][2] for end in ends]


def default_jobs() -> int:
    """CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
