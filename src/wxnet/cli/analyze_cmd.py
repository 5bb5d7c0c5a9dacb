"""``wxnet analyze CAPTURE``: label every flow of a pcap/pcapng capture, and say why."""

from __future__ import annotations

import argparse
import gc
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from wxnet.analyze import Analyzer, CaptureError, CaptureReader, FlowRecord, RawPacket, Stats
from wxnet.classify import Classifier, SignatureError, load_signatures
from wxnet.cli.common import IO, ExitStatus, HelpFormatter, UsageError

if TYPE_CHECKING:
    from pathlib import Path

#: Files at least this large get a progress bar (when stderr is a terminal).
PROGRESS_MIN_BYTES = 8 << 20
UNKNOWN = "unknown"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "analyze",
        help="label every flow of a pcap/pcapng capture by application, with evidence",
        description=(
            "Read a pcap or pcapng capture (optionally gzip-compressed) and label every "
            "TCP/UDP flow with the classifier the gateway uses. See docs/analyze.md."
        ),
        formatter_class=HelpFormatter,
    )
    # The capture's name stays a string: `pathlib` (with `urllib.parse`) costs ~5 ms of
    # start-up; the optional files below become paths only when given.
    p.add_argument("capture", nargs="?", help="capture file (.pcap, .pcapng, optionally .gz)")
    p.add_argument(
        "--live", metavar="IFACE", help="capture on a network interface instead (root); Ctrl-C ends"
    )
    p.add_argument("--bpf", metavar="FILTER", help="with --live: tcpdump-style capture filter")
    p.add_argument(
        "--write", type=_path, metavar="FILE.pcapng", help="with --live: save the packets seen"
    )
    _output_options(p)
    _engine_options(p)
    p.set_defaults(func=cmd_analyze)


def _output_options(p: argparse.ArgumentParser) -> None:
    """What is printed or written: the format, which flows, the report."""
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON object per flow, streamed")
    out.add_argument("--csv", action="store_true", help="one CSV row per flow (the JSON fields)")
    p.add_argument("--top", type=_positive, metavar="N", help="only the N flows with most bytes")
    p.add_argument(
        "--report",
        type=_path,
        metavar="FILE.html",
        help="also write a self-contained HTML report (chart by app over time, flow table)",
    )
    p.add_argument(
        "--report-rows",
        type=_positive,
        default=10_000,
        metavar="N",
        help="flows listed in the --report table, largest first (default 10000)",
    )
    p.add_argument(
        "--app",
        action="append",
        metavar="APP",
        help="only flows labelled with this signature id (e.g. wechat, qq; 'unknown'); repeatable",
    )
    p.add_argument(
        "--summary", action="store_true", help="only the summary by application (no flow table)"
    )
    p.add_argument(
        "--signatures",
        type=_path,
        action="append",
        metavar="FILE",
        help="signature TOML file to use instead of the bundled set (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")


def _engine_options(p: argparse.ArgumentParser) -> None:
    """How flows are tracked: workers, the flow table, timeouts."""
    p.add_argument(
        "--jobs",
        type=_jobs,
        default=1,
        metavar="N",
        help="worker processes, flows sharded by 5-tuple; same output (default 1; 0: one per CPU)",
    )
    p.add_argument(
        "--max-flows",
        type=_positive,
        default=200_000,
        metavar="N",
        help="live flows kept; past it the least recently active tenth is reported early "
        "(default 200000)",
    )
    p.add_argument(
        "--linger",
        type=_seconds,
        default=5.0,
        metavar="S",
        help="seconds a flow is kept after FIN both ways or RST (default 5)",
    )
    p.add_argument(
        "--tcp-idle", type=_seconds, default=600.0, metavar="S", help="TCP idle timeout (600)"
    )
    p.add_argument(
        "--udp-idle", type=_seconds, default=120.0, metavar="S", help="UDP idle timeout (120)"
    )


def _path(text: str) -> Path:
    from pathlib import Path

    return Path(text)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _seconds(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= x <= 86400 * 365:
        raise argparse.ArgumentTypeError("must be 0 or more seconds")
    return x


def _jobs(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= n <= 64:
        raise argparse.ArgumentTypeError("must be 0 (one per CPU) to 64")
    return n


class _Summary:
    """One row of the summary (not a dataclass: making one at import costs start-up)."""

    __slots__ = ("bytes", "evidence", "flows", "packets")

    def __init__(self) -> None:
        self.flows = 0
        self.packets = 0
        self.bytes = 0
        self.evidence: dict[str, int] = {}


def _checked(args: argparse.Namespace) -> tuple[Classifier, set[str] | None]:
    """The options' combinations, the signatures and ``--app``: the classifier to use and
    the apps wanted (None: all), or a UsageError naming what is wrong."""
    if (args.capture is None) == (args.live is None):
        raise UsageError("give a capture file or --live IFACE (one of them)")
    if args.live is None and (args.bpf or args.write):
        raise UsageError("--bpf and --write need --live")
    if args.live is not None and args.jobs not in (1,):
        raise UsageError("--jobs is for capture files (--live reads one interface)")
    try:
        sigs = load_signatures(args.signatures) if args.signatures else None
    except SignatureError as exc:
        raise UsageError(str(exc)) from None
    classifier = Classifier(sigs)
    wanted: set[str] | None = None
    if args.app:
        wanted = set(args.app)
        bad = wanted - set(classifier.apps()) - {UNKNOWN}
        if bad:
            known = ", ".join(sorted([*classifier.apps(), UNKNOWN]))
            raise UsageError(f"unknown app {', '.join(sorted(bad))} (known: {known})")
    return classifier, wanted


def cmd_analyze(args: argparse.Namespace, io: IO) -> int:
    classifier, wanted = _checked(args)
    options = {
        "max_flows": args.max_flows,
        "linger": args.linger,
        "tcp_idle": args.tcp_idle,
        "udp_idle": args.udp_idle,
    }
    output = _Output(args, io, wanted)
    if args.live is not None:
        from wxnet.cli.analyze_live import run_live

        return run_live(args, io, classifier, output, options)
    try:
        f: BinaryIO = open(args.capture, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        io.error(f"cannot open {args.capture}: {exc.strerror or exc}")
        return ExitStatus.ERROR
    jobs = args.jobs
    if jobs == 0:
        from wxnet.analyze.parallel import default_jobs

        jobs = default_jobs()
    analyzer = Analyzer(output.emit, classifier, **options)
    stats = analyzer.stats
    error: CaptureError | None = None
    started = time.perf_counter()
    # What is loaded by now (modules, signatures) lives until the end: the collector
    # need not scan it during the run, and forked workers share its pages untouched.
    gc.freeze()
    try:
        if jobs > 1:
            from wxnet.analyze.parallel import ParallelError, fold_parallel, run_parallel

            f.close()
            try:
                if output.totals_only:
                    # Only the summary is printed: each worker sums its own flows and
                    # sends only its sums (no record crosses the pipe).
                    stats, error, parts = fold_parallel(
                        args.capture, classifier, jobs, lambda: _SummaryFold(wanted), **options
                    )
                    output.summary = _merge_summaries(parts)
                else:
                    stats, error = run_parallel(
                        args.capture, classifier, jobs, output.emit, **options
                    )
            except (ParallelError, OSError) as exc:
                io.error(f"{args.capture}: {exc}")
                return ExitStatus.ERROR
        else:
            error = _run_one(f, analyzer, args, io)
    finally:
        gc.unfreeze()
    elapsed = time.perf_counter() - started
    output.finish(os.path.basename(args.capture), stats, elapsed)
    if error is not None:
        io.error(
            f"{args.capture}: capture is truncated or corrupt: {error.reason} at byte offset "
            f"{error.offset}; the {stats.packets} packets before it were analysed "
            f"and their flows reported"
        )
        return ExitStatus.ERROR
    return ExitStatus.OK


class _Output:
    """Where flow records go: the summary, and the streamed (--json, --csv, live
    lines) or collected (table, --top, --report) output."""

    def __init__(self, args: argparse.Namespace, io: IO, wanted: set[str] | None) -> None:
        self.args = args
        self.io = io
        self.wanted = wanted
        self.summary: dict[str, _Summary] = {}
        self.rows: list[FlowRecord] = []  # table / --top
        self.report: list[FlowRecord] = []  # --report
        self.live = args.live is not None
        self.stream = args.top is None and (args.json or args.csv or self.live)
        self._csv: Any = None

    @property
    def totals_only(self) -> bool:
        """Whether only the summary and the totals are printed (no flow is needed)."""
        a = self.args
        return (
            a.summary and not (a.json or a.csv) and a.top is None and a.report is None
        ) and not self.live

    def emit(self, rec: FlowRecord) -> None:
        if _add(self.summary, self.wanted, rec) is None:
            return
        if self.args.report is not None:
            self.report.append(rec)
        if self.stream:
            self._write(rec)
        elif self.args.top is not None:
            self._keep_top(rec)
        elif not self.args.summary:
            self.rows.append(rec)

    def _keep_top(self, rec: FlowRecord) -> None:
        import heapq

        # A min-heap of the N largest flows (ties: the earlier flow wins).
        item = (rec.bytes, -rec.start, -len(self.rows), rec)
        heap: list[tuple[int, float, int, FlowRecord]] = self.__dict__.setdefault("_top", [])
        if len(heap) < self.args.top:
            heapq.heappush(heap, item)
        elif item[:3] > heap[0][:3]:
            heapq.heapreplace(heap, item)

    def _write(self, rec: FlowRecord) -> None:
        if self.args.json:
            self.io.json(rec.to_json())
        elif self.args.csv:
            from wxnet.analyze.output import csv_header, csv_row

            if self._csv is None:
                import csv

                self._csv = csv.writer(self.io.out, lineterminator="\n")
                self._csv.writerow(csv_header())
            self._csv.writerow(csv_row(rec))
            self.io.out.flush()
        elif not self.args.summary:
            self.io.print(_flow_line(rec))

    def finish(self, name: str, stats: Stats, elapsed: float, extra: str = "") -> None:
        if self.args.top is not None:
            top = sorted(self.__dict__.get("_top", []), reverse=True)
            if self.args.json or self.args.csv:
                for *_, rec in top:
                    self._write(rec)
            elif not self.args.summary:
                self.rows = [rec for *_, rec in top]
        if self.args.report is not None:
            from wxnet.analyze.output import write_report

            try:
                write_report(self.args.report, name, self.report, stats, self.args.report_rows)
            except OSError as exc:
                self.io.error(f"cannot write {self.args.report}: {exc.strerror or exc}")
        if self.args.json or self.args.csv:
            return
        _print_report(
            self.io,
            name,
            self.rows,
            self.summary,
            stats,
            elapsed,
            self.args.summary or self.live,
            by_bytes=self.args.top is not None,
            extra=extra,
        )


def _add(
    summary: dict[str, _Summary], wanted: set[str] | None, rec: FlowRecord
) -> tuple[str, str] | None:
    """Count a flow in the summary by application; returns its (summary row, first
    evidence kind or ""), or ``None`` when ``--app`` leaves it out."""
    v = rec.verdict
    if wanted is not None and (v.app or UNKNOWN) not in wanted:
        return None
    label = v.label if v.app else UNKNOWN
    s = summary.get(label)
    if s is None:
        s = summary[label] = _Summary()
    s.flows += 1
    s.packets += rec.client_packets + rec.server_packets
    s.bytes += rec.client_bytes + rec.server_bytes
    kind = v.evidence[0].kind if v.evidence else ""
    if kind:
        s.evidence[kind] = s.evidence.get(kind, 0) + 1
    return label, kind


class _SummaryFold:
    """``--summary --jobs N``: one worker's summary of its own flows, and when each
    (row, evidence kind) pair was first counted (the record's order tag), so that the
    parent can rebuild the order in which one process would have met them."""

    def __init__(self, wanted: set[str] | None) -> None:
        self.wanted = wanted
        self.summary: dict[str, _Summary] = {}
        self.first: dict[tuple[str, str], tuple[float, int, float, int]] = {}

    def add(self, tag: tuple[float, int, float, int], rec: FlowRecord) -> None:
        key = _add(self.summary, self.wanted, rec)
        if key is not None and key not in self.first:
            self.first[key] = tag

    def result(self) -> tuple[dict[str, _Summary], dict[tuple[str, str], Any]]:
        return self.summary, self.first


def _merge_summaries(
    parts: list[tuple[dict[str, _Summary], dict[tuple[str, str], Any]]],
) -> dict[str, _Summary]:
    """The workers' summaries added up, each row's evidence counts in the order one
    process would have first met them (the printed order breaks count ties by it)."""
    out: dict[str, _Summary] = {}
    first: dict[tuple[str, str], Any] = {}
    for summary, seen in parts:
        for label, s in summary.items():
            t = out.get(label)
            if t is None:
                t = out[label] = _Summary()
            t.flows += s.flows
            t.packets += s.packets
            t.bytes += s.bytes
        for key, tag in seen.items():
            if key not in first or tag < first[key]:
                first[key] = tag
    for (label, kind), _tag in sorted(first.items(), key=lambda kv: kv[1]):
        if kind:
            out[label].evidence[kind] = sum(
                s.get(label, _Summary()).evidence.get(kind, 0) for s, _ in parts
            )
    return out


def _flow_line(r: FlowRecord) -> str:
    """One flow as a line (live capture prints flows as they end)."""
    v = r.verdict
    ev = "; ".join(f"{e.kind}: {e.detail}" for e in v.evidence) or "-"
    return (
        f"{_when(r.start)}  {_host(r.client)}:{r.client_port} -> {_host(r.server)}:"
        f"{r.server_port}  {r.transport}  {v.label}  [{ev}]  {r.duration:.3f} s  "
        f"{r.client_packets}/{r.server_packets} packets  {r.client_bytes}/{r.server_bytes} bytes"
    )


def _run_one(
    f: BinaryIO, analyzer: Analyzer, args: argparse.Namespace, io: IO
) -> CaptureError | None:
    error: CaptureError | None = None
    with f:
        size = _size(f)
        reader = CaptureReader(f)
        show = not args.no_progress and size >= PROGRESS_MIN_BYTES and _isatty(io.err)
        try:
            if show:
                _run_with_progress(reader, analyzer, size, io)
            else:
                analyzer.run_capture(reader)
        except CaptureError as exc:
            error = exc
        finally:
            reader.close()
        analyzer.finish()
    return error


def _size(f: BinaryIO) -> int:
    try:
        return os.fstat(f.fileno()).st_size
    except (OSError, ValueError):
        return 0


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _run_with_progress(reader: CaptureReader, analyzer: Analyzer, size: int, io: IO) -> None:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    console = Console(file=io.err)
    columns = (
        TextColumn("analysing"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[flows]} live flows"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("read", total=size, flows=0)

        def ticking() -> Iterator[RawPacket]:
            for n, pkt in enumerate(reader):
                if not n & 0x3FFF:
                    live = analyzer.live_flows
                    progress.update(task, completed=reader.raw_position(), flows=live)
                yield pkt

        analyzer.run(ticking())
        progress.update(task, completed=size)


def _when(ts: float) -> str:
    from datetime import UTC, datetime  # here: --summary and --json print no times

    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    except (OverflowError, OSError, ValueError):
        return f"{ts:.3f}"


def _print_report(
    io: IO,
    name: str,
    rows: list[FlowRecord],
    summary: dict[str, _Summary],
    st: Stats,
    elapsed: float,
    summary_only: bool,
    by_bytes: bool = False,
    extra: str = "",
) -> None:
    if not summary_only:
        _print_flows(io, name, rows, by_bytes)
    # The summary and the totals are plain text: rich (~50 ms to import) is only loaded
    # for the flow table, so `--summary` and `--json` start fast.
    out = io.out
    header = ("app", "flows", "packets", "bytes", "first evidence")
    lines = []
    for label, s in sorted(summary.items(), key=lambda kv: (-kv[1].bytes, kv[0])):
        ev = ", ".join(f"{k} {n}" for k, n in sorted(s.evidence.items(), key=lambda kv: -kv[1]))
        lines.append((label, str(s.flows), str(s.packets), str(s.bytes), ev or "-"))
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]

    def fmt(row: tuple[str, ...]) -> str:
        cells = [
            row[i].ljust(widths[i]) if i in (0, 4) else row[i].rjust(widths[i])
            for i in range(len(row))
        ]
        return ("  " + "   ".join(cells)).rstrip()

    total = sum(widths) + 3 * (len(widths) - 1) + 2
    out.write("\n" + "Summary by application".center(total).rstrip() + "\n\n")
    out.write(fmt(header) + "\n")
    out.write(" " + "─" * (total - 1) + "\n")
    for row in lines:
        out.write(fmt(row) + "\n")
    rate = st.packets / elapsed if elapsed > 0 else 0.0
    out.write(
        f"\n{st.packets} packets, {st.flows} flows ({st.max_live_flows} live at most), "
        f"{st.dns_answers} DNS answers learned, {st.malformed} malformed, "
        f"{st.fragments} fragments, {st.not_ip} not IP; {elapsed:.2f} s ({rate:,.0f} packets/s)\n"
    )
    if st.evicted:
        out.write(f"{st.evicted} flows reported early: the flow table was full (--max-flows)\n")
    if extra:
        out.write(extra + "\n")
    if st.linktypes:
        kinds = ", ".join(str(x) for x in sorted(st.linktypes))
        out.write(f"unsupported link types skipped: {kinds}\n")
    out.flush()


def _print_flows(io: IO, name: str, rows: list[FlowRecord], by_bytes: bool = False) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(file=io.out, width=max(200, Console(file=io.out).width), highlight=False)
    if not by_bytes:  # --top keeps its order: most bytes first
        rows.sort(key=lambda r: (r.start, r.client_port))
    table = Table(title=f"Flows in {name}", box=box.SIMPLE_HEAD, show_lines=False)
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("client", no_wrap=True)
    table.add_column("server", no_wrap=True)
    table.add_column("proto", no_wrap=True)
    table.add_column("app", no_wrap=True)
    table.add_column("evidence", ratio=1, overflow="fold")
    table.add_column("duration s", justify="right", no_wrap=True)
    table.add_column("packets c>s/s>c", justify="right", no_wrap=True)
    table.add_column("bytes c>s/s>c", justify="right", no_wrap=True)
    for r in rows:
        v = r.verdict
        ev = "; ".join(f"{e.kind}: {e.detail}" for e in v.evidence) or "-"
        table.add_row(
            _when(r.start),
            f"{_host(r.client)}:{r.client_port}",
            f"{_host(r.server)}:{r.server_port}",
            r.transport,
            v.label,
            ev,
            f"{r.duration:.3f}",
            f"{r.packets} ({r.client_packets}/{r.server_packets})",
            f"{r.bytes} ({r.client_bytes}/{r.server_bytes})",
        )
    console.print(table)
    decoded = [r for r in rows if r.longlink]
    for r in decoded:
        console.print(
            f"[bold]Long-link packets (S32)[/bold] {_host(r.client)}:{r.client_port} -> "
            f"{_host(r.server)}:{r.server_port}"
        )
        for p in r.longlink:
            console.print(
                f"  {p.direction}  cmd {p.cmd} ({p.name})  seq {p.seq}  body {p.body_len} bytes"
            )


def _host(addr: str) -> str:
    return f"[{addr}]" if ":" in addr else addr
