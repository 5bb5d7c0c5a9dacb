"""``wxnet analyze --live IFACE``: the analyser on a network interface (docs/analyze.md)."""

from __future__ import annotations

import argparse
import signal
import time
from types import FrameType
from typing import TYPE_CHECKING, Any, BinaryIO

from wxnet.analyze import Analyzer
from wxnet.analyze.capture import PcapngWriter
from wxnet.analyze.live import LiveError, LiveSource
from wxnet.classify import Classifier
from wxnet.cli.common import IO, ExitStatus

if TYPE_CHECKING:
    from wxnet.cli.analyze_cmd import _Output

#: Seconds between checks for ended/idle flows (and for Ctrl-C) when no packet comes.
TICK = 0.25


def _capture(
    src: LiveSource, analyzer: Analyzer, writer: PcapngWriter | None, stop: list[int]
) -> None:
    """Read and analyse (and write) packets until a signal lands in ``stop``; then what
    the kernel has queued already is still read (bounded)."""

    def take(packets: list[tuple[float, int, bytes, int]]) -> None:
        if writer is not None:
            for ts, _link, data, wire in packets:
                writer.write(ts, data, wire)
        analyzer.run(packets)

    while not stop:
        packets = src.read(TICK)
        if packets:
            take(packets)
        else:
            if writer is not None:
                writer.flush()
            analyzer.tick(time.time())
    for _ in range(64):
        packets = src.read(0.0)
        if not packets:
            break
        take(packets)


def run_live(
    args: argparse.Namespace,
    io: IO,
    classifier: Classifier,
    output: _Output,
    options: dict[str, Any],
) -> int:
    try:
        src = LiveSource(args.live, args.bpf)
    except LiveError as exc:
        io.error(str(exc))
        return ExitStatus.ERROR
    out: BinaryIO | None = None
    writer: PcapngWriter | None = None
    if args.write is not None:
        try:
            out = open(args.write, "wb")  # noqa: SIM115 - closed below
        except OSError as exc:
            src.close()
            io.error(f"cannot write {args.write}: {exc.strerror or exc}")
            return ExitStatus.ERROR
        writer = PcapngWriter(out, src.linktype)
    # Flows are swept every second of capture time (files: every 10 s) so they are
    # printed soon after they end.
    analyzer = Analyzer(output.emit, classifier, sweep_every=1.0, **options)
    stop: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started = time.perf_counter()
    what = f" (filter: {args.bpf})" if args.bpf else ""
    io.err.write(f"wxnet: capturing on {args.live}{what}; Ctrl-C ends\n")
    io.err.flush()
    try:
        _capture(src, analyzer, writer, stop)
        analyzer.finish()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        drops = src.update_drops()
        src.close()
        if out is not None:
            out.close()
    elapsed = time.perf_counter() - started
    extra = f"{drops} packets dropped by the kernel (the analyser fell behind)"
    if writer is not None:
        extra += f"; {writer.packets} packets written to {args.write}"
    output.finish(args.live, analyzer.stats, elapsed, extra=extra)
    if args.json or args.csv:  # stdout holds only the flows: the counts go to stderr
        st = analyzer.stats
        io.err.write(
            f"wxnet: {st.packets} packets, {st.flows} flows, {st.evicted} flows reported early "
            f"(flow table full, --max-flows), {extra}\n"
        )
        io.err.flush()
    return ExitStatus.OK
