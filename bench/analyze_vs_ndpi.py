"""wxnet analyze vs nDPI's ndpiReader: packets/s and label disagreements.

Run by hand (needs Debian's ``libndpi-bin`` for ``ndpiReader``)::

    .venv/bin/python -m bench.analyze_vs_ndpi [--flows 25000] [--real 300000] \
        [--extra MORE.pcapng] [--out bench-out/]

For each capture (the shared development captures; a synthetic one with many flows of
20 packets each; and a real-traffic one, the development captures and any ``--extra``
ones repeated with shifted timestamps and ports to ``--real`` packets, both written to
``--out``) it measures, in the same run, medians of alternating runs:

* processing rate: packets / time spent reading and classifying, without process start
  and set-up (for nDPI: its own "Packet Processing Time", wall clock, millisecond
  resolution; for wxnet: CPU time of the reader + engine loop in this process, signatures
  already loaded). Indicative only: the two clocks differ;
* command rate: packets / CPU time (user + sys) of the whole command (``ndpiReader -i F``
  vs ``wxnet analyze --summary F``), process start and set-up included; CPU time rather
  than wall time because the machine may be shared;
* for the two large captures, ``wxnet analyze --summary --jobs 2``: wall time against
  ndpiReader's wall time (only meaningful on an otherwise idle machine);
* start-up: the CPU time of both commands on the smallest capture (``--startup N
  [--compare DIR]`` measures only that, robustly: N alternating rounds, with the
  pure-Python path and another checkout, e.g. the round's baseline, side by side);

and prints a side-by-side table of the flows where the two disagree about WeChat, QQ,
Tencent or push, with the reason. Output is Markdown, for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from wxnet.analyze import Analyzer, CaptureReader, FlowRecord
from wxnet.analyze import synth as S
from wxnet.classify import Classifier
from wxnet.proto.framing import encode_packet

ROOT = Path(__file__).resolve().parent.parent
#: More development captures: $WXNET_CAPTURES, else a ``shared/captures`` directory
#: beside (or one level above) the checkout; tests/data/captures otherwise.
SHARED = next(
    (
        p
        for p in (
            Path(os.environ.get("WXNET_CAPTURES", "/nonexistent")),
            ROOT.parent / "shared" / "captures",
            ROOT.parent.parent / "shared" / "captures",
        )
        if p.is_dir()
    ),
    ROOT / "tests" / "data" / "captures",
)
LOCAL = ROOT / "tests" / "data" / "captures"

FlowKey = tuple[str, str, int, str, int]


# ------------------------------------------------------------ synthetic capture


def _requests(i: int) -> tuple[str, int, bytes, bytes]:
    """(server, port, first client bytes, first server bytes) for flow kind i % 10."""
    kind = i % 10
    host = i % 250 + 1
    if kind == 0:
        body = b"POST /cgi-bin/micromsg-bin/newsync HTTP/1.1\r\nHost: hkextshort.weixin.qq.com\r\n"
        body += b"User-Agent: MicroMessenger Client\r\nContent-Length: 64\r\n\r\n" + bytes(64)
        return f"203.205.151.{host}", 80, body, b"HTTP/1.1 200 OK\r\nContent-Length: 32\r\n\r\n"
    if kind == 1:
        mm = bytes.fromhex("19f1040040") + bytes(64)
        body = b"POST /mmtls/0a1b2c3d HTTP/1.1\r\nHost: sgshort.wechat.com\r\n"
        body += b"Content-Type: application/octet-stream\r\nContent-Length: 69\r\n\r\n" + mm
        return f"43.135.1.{host}", 80, body, b"HTTP/1.1 200 OK\r\n\r\n"
    if kind == 2:
        return (
            f"203.205.147.{host}",
            8080,
            bytes.fromhex("16f10400a0") + bytes(160),
            bytes.fromhex("16f1040030") + bytes(48),
        )
    if kind == 3:
        return (
            f"203.205.176.{host}",
            8080,
            encode_packet(6, i & 0xFFFF),
            encode_packet(1_000_000_006, i & 0xFFFF),
        )
    if kind == 4:
        body = b"GET /mstat/report HTTP/1.1\r\nHost: pingma.qq.com\r\nUser-Agent: okhttp\r\n\r\n"
        return f"119.45.78.{host}", 80, body, b"HTTP/1.1 404 Not Found\r\n\r\n"
    if kind == 5:
        return (
            f"142.250.186.{host}",
            443,
            S.tls_client_hello("upload.youtube.com"),
            b"\x16\x03\x03\x00\x10" + bytes(16),
        )
    if kind == 6:
        return (
            f"203.205.239.{host}",
            443,
            S.tls_client_hello("res.wx.qq.com"),
            b"\x16\x03\x03\x00\x10" + bytes(16),
        )
    if kind == 7:
        body = b"GET /index.html HTTP/1.1\r\nHost: www.example.org\r\nUser-Agent: curl/8\r\n\r\n"
        return f"93.184.216.{host}", 80, body, b"HTTP/1.1 200 OK\r\n\r\n"
    if kind == 8:
        return f"198.51.100.{host}", 5223, b"\x17\x03\x03\x00\x20" + bytes(32), b""
    return f"192.0.2.{host}", 9999, os.urandom(40), b""


def _flow_frames(i: int, rng: random.Random) -> list[bytes]:
    """20 frames: handshake, request, response, 14 data segments, FIN, FIN."""
    client = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255 or 1}"
    cport = 1024 + (i * 7919) % 60000
    server, sport, up, down = _requests(i)
    c_seq, s_seq = rng.randrange(1 << 32), rng.randrange(1 << 32)

    def c(flags: int, payload: bytes = b"") -> bytes:
        nonlocal c_seq
        f = S.ether(S.ipv4(client, server, 6, S.tcp(cport, sport, c_seq, s_seq, flags, payload)))
        c_seq = (c_seq + len(payload) + (1 if flags & (S.SYN | S.FIN) else 0)) & 0xFFFFFFFF
        return f

    def s(flags: int, payload: bytes = b"") -> bytes:
        nonlocal s_seq
        f = S.ether(S.ipv4(server, client, 6, S.tcp(sport, cport, s_seq, c_seq, flags, payload)))
        s_seq = (s_seq + len(payload) + (1 if flags & (S.SYN | S.FIN) else 0)) & 0xFFFFFFFF
        return f

    frames = [
        c(S.SYN),
        s(S.SYN | S.ACK),
        c(S.ACK),
        c(S.ACK | S.PSH, up),
        s(S.ACK | S.PSH, down or b"ok"),
    ]
    data = bytes(200)
    for k in range(13):
        frames.append(s(S.ACK, data) if k % 2 else c(S.ACK, data))
    frames += [c(S.FIN | S.ACK), s(S.FIN | S.ACK)]
    assert len(frames) == 20
    return frames


def write_synthetic(path: Path, flows: int, window: int = 500) -> int:
    """Interleave ``window`` concurrent flows at a time; return the packet count."""
    rng = random.Random(20141125)
    ts = 1_700_000_000.0
    count = 0
    with open(path, "wb") as f:
        f.write(S.pcap_header(1))
        for start in range(0, flows, window):
            batch = [_flow_frames(i, rng) for i in range(start, min(flows, start + window))]
            out = []
            for k in range(20):
                for frames in batch:
                    ts += 0.0001
                    out.append(S.pcap_record(ts, frames[k]))
                    count += 1
            f.write(b"".join(out))
    return count


# ------------------------------------------------------------ real-traffic capture


def _as_ethernet(link: int, frame: bytes) -> bytes | None:
    """The frame with an Ethernet II head (cooked SLL/SLL2 heads rewritten; libpcap
    cannot read a file whose interfaces have different link types)."""
    if link == 1:
        return frame
    if link == 113 and len(frame) >= 16:
        return bytes(6) + b"\x02\0\0\0\0\1" + frame[14:16] + frame[16:]
    if link == 276 and len(frame) >= 20:
        return bytes(6) + b"\x02\0\0\0\0\1" + frame[0:2] + frame[20:]
    return None


def _shift_ports(frame: bytes, k: int) -> bytes:
    """Copy ``k`` of an Ethernet/IPv4 TCP or UDP frame with its ephemeral ports (20000
    and up: never a service port the classifiers know) moved, the same way in both
    directions, so that each copy's flows are new 5-tuples (checksums are not fixed:
    neither tool checks them)."""
    if k == 0 or len(frame) < 38 or frame[12:14] != b"\x08\x00" or frame[14] != 0x45:
        return frame
    if frame[23] not in (6, 17) or int.from_bytes(frame[20:22], "big") & 0x1FFF:
        return frame
    out = bytearray(frame)
    for at in (34, 36):
        port = int.from_bytes(frame[at : at + 2], "big")
        if port >= 20000:
            out[at : at + 2] = (20000 + (port - 20000 + k * 7919) % 45536).to_bytes(2, "big")
    return bytes(out)


def write_real(path: Path, sources: list[Path], min_packets: int, gap: float = 1000.0) -> int:
    """Concatenate real captures, again and again with shifted timestamps, until at
    least ``min_packets``: one Ethernet pcap. Each copy of each capture starts ``gap``
    seconds after the previous one ended (beyond every idle timeout), with its ephemeral
    ports moved (:func:`_shift_ports`), so its flows are new flows with the capture's own
    timing, sizes and payloads (for ndpiReader too, which would otherwise take a copy's
    flows for the old ones and skip its per-flow work)."""
    loaded: list[list[tuple[float, bytes]]] = []
    for src in sources:
        with open(src, "rb") as f:
            reader = CaptureReader(f)
            raw = [(ts, e) for ts, link, data, _w in reader if (e := _as_ethernet(link, data))]
            reader.close()
        if not raw:
            continue
        # Relative times, with any pause longer than ``gap`` cut to ``gap`` (one capture
        # here has a five-year pause, which pcap's 32-bit seconds cannot repeat).
        pkts = [(0.0, raw[0][1])]
        for (prev, _), (ts, fr) in itertools.pairwise(raw):
            pkts.append((pkts[-1][0] + min(max(ts - prev, 0.0), gap), fr))
        loaded.append(pkts)
    if not loaded:
        raise SystemExit("no real captures found")
    cursor = 1_700_000_000.0
    count = 0
    with open(path, "wb") as f:
        f.write(S.pcap_header(1))
        copy = 0
        while count < min_packets:
            for pkts in loaded:
                shift = cursor - pkts[0][0]
                f.write(
                    b"".join(S.pcap_record(ts + shift, _shift_ports(fr, copy)) for ts, fr in pkts)
                )
                count += len(pkts)
                cursor = pkts[-1][0] + shift + gap
            copy += 1
    return count


# --------------------------------------------------------------------- running


@dataclass
class Run:
    packets: int
    proc_s: float  # median time spent processing packets (set-up excluded)
    cpu_s: float  # median CPU time (user + sys) of the whole command
    wall_s: float  # median elapsed time of the whole command
    jobs_cpu_s: float = 0.0  # wxnet --jobs 2: median CPU (all processes)
    jobs_wall_s: float = 0.0  # wxnet --jobs 2: median elapsed time
    pure_cpu_s: float = 0.0  # wxnet with WXNET_PURE=1 (no compiled modules): median CPU


#: wxnet's children run as an installed wxnet does: Python may cache bytecode (a
#: ``PYTHONDONTWRITEBYTECODE`` in the caller's environment would make every start-up
#: compile every module again, ~40 ms, which no installed copy pays).
_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "WXNET_PURE")}
#: The same, on the pure-Python path (wxnet/_accel.py).
_PURE = {**_ENV, "WXNET_PURE": "1"}


def _child(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run a command; return its CPU time (user + sys, children included), its elapsed
    time and its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(
        args, check=True, capture_output=True, text=True, errors="replace", env=env or _ENV
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, res.stdout + res.stderr


def wxnet_in_process(path: Path, classifier: Classifier) -> tuple[float, int, list[FlowRecord]]:
    recs: list[FlowRecord] = []
    a = Analyzer(recs.append, classifier)
    t0 = time.process_time()
    with open(path, "rb") as f:
        reader = CaptureReader(f)
        a.run_capture(reader)  # what `wxnet analyze FILE` does
        reader.close()
    a.finish()
    return time.process_time() - t0, a.stats.packets, recs


_NDPI_FLOW = re.compile(
    r"^\s*\d+\s+(TCP|UDP)\s+(\S+?):(\d+)\s+<?->\s+(\S+?):(\d+)\s+\[proto: [\d.]+/([^\]]+)\]"
    r"(?:.*?\[Confidence: ([^\]]+)\])?(?:.*?\[Hostname/SNI: ([^\]]*)\])?"
)


def ndpi_flows(text: str) -> dict[FlowKey, tuple[str, str, str]]:
    flows: dict[FlowKey, tuple[str, str, str]] = {}
    for line in text.splitlines():
        fm = _NDPI_FLOW.match(line)
        if fm:
            t, a, ap, b, bp, proto, conf, host = fm.groups()
            key = (t.lower(), a.strip("[]"), int(ap), b.strip("[]"), int(bp))
            flows[key] = (proto, conf or "", host or "")
    return flows


def measure(
    path: Path, classifier: Classifier, reps: int, jobs: bool
) -> tuple[Run, Run, list[FlowRecord], dict[FlowKey, tuple[str, str, str]]]:
    """Alternate the tools ``reps`` times (the machine is shared: interleaving keeps
    them under the same load) and keep each one's median. The first nDPI run (with
    ``-v 2``, for its labels) is not timed."""
    exe = shutil.which("ndpiReader")
    if exe is None:
        raise SystemExit("ndpiReader not found: apt-get install libndpi-bin")
    wxnet = str(Path(sys.executable).parent / "wxnet")
    n_proc: list[float] = []
    n_cpu: list[float] = []
    n_wall: list[float] = []
    w_proc: list[float] = []
    w_cpu: list[float] = []
    w_wall: list[float] = []
    j_cpu: list[float] = []
    j_wall: list[float] = []
    p_cpu: list[float] = []
    n_packets = w_packets = 0
    labels: dict[FlowKey, tuple[str, str, str]] = {}
    recs: list[FlowRecord] = []
    _cpu, _wall, text = _child([exe, "-i", str(path), "-v", "2"])
    labels = ndpi_flows(text)
    for _ in range(reps):
        cpu, wall, text = _child([exe, "-i", str(path)])
        n_cpu.append(cpu)
        n_wall.append(wall)
        m = re.search(r"Packet Processing Time:\s+([\d.]+) (msec|sec|usec)", text)
        p = re.search(r"IP packets:\s+(\d+)", text)
        if m and p:
            unit = {"msec": 1e-3, "sec": 1.0, "usec": 1e-6}[m.group(2)]
            n_proc.append(max(float(m.group(1)) * unit, 1e-3))
            n_packets = int(p.group(1))
        cpu, wall, _ = _child([wxnet, "analyze", "--summary", str(path)])
        w_cpu.append(cpu)
        w_wall.append(wall)
        if jobs:
            cpu, wall, _ = _child([wxnet, "analyze", "--summary", "--jobs", "2", str(path)])
            j_cpu.append(cpu)
            j_wall.append(wall)
            p_cpu.append(_child([wxnet, "analyze", "--summary", str(path)], _PURE)[0])
        dt, w_packets, recs = wxnet_in_process(path, classifier)
        w_proc.append(dt)
    med = statistics.median
    return (
        Run(n_packets, med(n_proc), med(n_cpu), med(n_wall)),
        Run(
            w_packets,
            med(w_proc),
            med(w_cpu),
            med(w_wall),
            med(j_cpu) if j_cpu else 0.0,
            med(j_wall) if j_wall else 0.0,
            med(p_cpu) if p_cpu else 0.0,
        ),
        recs,
        labels,
    )


def _small_capture() -> Path:
    small = SHARED / "youtubeupload.pcap"
    return small if small.exists() else LOCAL / "youtubeupload.pcap"


def startup(reps: int) -> tuple[float, float]:
    """Median CPU seconds of ``wxnet analyze --summary`` and of ``ndpiReader -i`` on the
    smallest development capture (137 packets): start-up and set-up."""
    small = _small_capture()
    wxnet = str(Path(sys.executable).parent / "wxnet")
    exe = shutil.which("ndpiReader") or "ndpiReader"
    ours, theirs = [], []
    _child([wxnet, "analyze", "--summary", str(small)])  # bytecode cached, as when installed
    for _ in range(reps):
        ours.append(_child([wxnet, "analyze", "--summary", str(small)])[0])
        theirs.append(_child([exe, "-i", str(small)])[0])
    return statistics.median(ours), statistics.median(theirs)


#: What the installed ``wxnet`` script runs (pip's console-script wrapper imports re).
_LAUNCH = "import re, sys; from wxnet.cli.main import main; sys.exit(main())"


def startup_table(reps: int, compare: Path | None) -> None:
    """``--startup N``: the start-up alone, measured robustly: N rounds, each running
    every command once in turn (ndpiReader, this checkout through its installed script
    on the compiled and on the pure-Python path, and with ``--compare DIR`` that checkout
    and this one started the same way, ``python -c`` with ``PYTHONPATH=DIR/src``); CPU
    (user + sys) of each process; prints medians, quartiles, minimum and the ratios."""
    small = str(_small_capture())
    wxnet = str(Path(sys.executable).parent / "wxnet")
    exe = shutil.which("ndpiReader") or "ndpiReader"
    summary = ["analyze", "--summary", small]
    commands: dict[str, tuple[list[str], dict[str, str]]] = {
        "ndpiReader -i": ([exe, "-i", small], _ENV),
        "wxnet (installed script)": ([wxnet, *summary], _ENV),
        "wxnet (installed script, WXNET_PURE=1)": ([wxnet, *summary], _PURE),
    }
    if compare is not None:
        for name, root in (("BASE", compare), ("this checkout", ROOT)):
            env = {**_ENV, "PYTHONPATH": str(root / "src")}
            commands[f"{name} (python -c, PYTHONPATH)"] = (
                [sys.executable, "-c", _LAUNCH, *summary],
                env,
            )
    for cmd, env in commands.values():  # once each first: bytecode and caches written
        _child(cmd, env)
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    load0 = os.getloadavg()
    t0 = datetime.now(UTC)
    for _ in range(reps):
        for name, (cmd, env) in commands.items():
            cpu[name].append(_child(cmd, env)[0] * 1000)
    load1 = os.getloadavg()
    print(
        f"## analyze start-up\n\nMachine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}; Python "
        f"{platform.python_version()}; ndpiReader {ndpi_version()}. {t0:%Y-%m-%d %H:%M} UTC, "
        f"load average {load0[0]:.1f} -> {load1[0]:.1f}. `wxnet analyze --summary` and "
        f"`ndpiReader -i` on youtubeupload.pcap (137 packets), {reps} rounds, commands "
        f"alternated within each round; CPU = user + sys of the process. wxnet's hot "
        f"modules: {_path()}.\n"
    )
    ndpi = statistics.median(cpu["ndpiReader -i"])
    base_key = "BASE (python -c, PYTHONPATH)"
    base = statistics.median(cpu[base_key]) if base_key in cpu else None
    print("| command | median ms | quartiles ms | min ms | ndpiReader / this | this / BASE |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, values in cpu.items():
        med = statistics.median(values)
        q1, _, q3 = statistics.quantiles(values, n=4)
        vs_base = f"{med / base:.2f}" if base and name != "ndpiReader -i" else ""
        print(
            f"| {name} | {med:.1f} | {q1:.1f}-{q3:.1f} | {min(values):.1f} "
            f"| {ndpi / med:.2f} | {vs_base} |"
        )


def ndpi_app(proto: str) -> str | None:
    if "WeChat" in proto:
        return "wechat"
    if "QQ" in proto:
        return "qq"
    if "Tencent" in proto:
        return "tencent"
    if "ApplePush" in proto:
        return "apple-push"
    return None


_OURS = {"wechat", "qq", "tencent", "apple-push", "google-push"}
# Both of wxnet's Tencent range files label "Tencent (unconfirmed)"; nDPI has one Tencent.
_SAME = {"tencent-cloud": "tencent"}


def disagreements(
    recs: list[FlowRecord], ndpi: dict[FlowKey, tuple[str, str, str]]
) -> list[tuple[str, str, str, str]]:
    rows = []
    for r in recs:
        key = (r.transport, r.client, r.client_port, r.server, r.server_port)
        rev = (r.transport, r.server, r.server_port, r.client, r.client_port)
        got = ndpi.get(key) or ndpi.get(rev)
        if got is None:
            continue
        proto, conf, host = got
        theirs = ndpi_app(proto)
        app = _SAME.get(r.verdict.app or "", r.verdict.app)
        ours = app if app in _OURS else None
        if theirs == ours or (theirs is None and ours is None):
            continue
        ev = r.verdict.evidence[0].detail if r.verdict.evidence else "no evidence"
        why = reason(r, proto, host)
        flow = f"{r.transport} {r.client}:{r.client_port} -> {r.server}:{r.server_port}"
        rows.append((flow, f"{r.verdict.label} ({ev})", f"{proto} [{conf}]", why))
    return rows


def reason(r: FlowRecord, proto: str, host: str) -> str:
    kinds = [e.kind for e in r.verdict.evidence]
    if r.verdict.app == "wechat" and "QQ" in proto:
        return (
            "nDPI's host table maps the suffix qq.com to QQ and end-anchored matches win, "
            "so *.weixin.qq.com becomes QQ"
        )
    if r.verdict.app == "wechat" and kinds and kinds[0] in ("mmtls", "longlink-2014"):
        return "nDPI 4.2 has no MMTLS or WeChat long-link dissector"
    if (
        r.verdict.app == "qq"
        and "QQ" not in proto
        and host.endswith(("gtimg.cn", "qpic.cn", "qlogo.cn"))
    ):
        return "wxnet's QQ signature owns Tencent's QQ CDN names; nDPI 4.2 only knows gtimg.com"
    if r.verdict.app in ("tencent", "tencent-cloud"):
        return (
            "wxnet's Tencent ranges (unconfirmed label) include this block; "
            "nDPI 4.2's list does not"
        )
    if r.verdict.app == "wechat" and "WeChat" not in proto:
        return f"wxnet: {kinds[0] if kinds else '?'} evidence; nDPI saw {proto}"
    if r.verdict.app is None and ndpi_app(proto):
        how = "IP list" if "IP" in proto else "its tables"
        return f"nDPI labels by {how}; wxnet found no WeChat/QQ evidence"
    if kinds == ["port"] and not r.verdict.confirmed:
        return (
            f"wxnet's only evidence is the port ({r.server_port}), an unconfirmed label; "
            f"nDPI names the protocol it parsed or guessed ({proto})"
        )
    return f"wxnet: {', '.join(kinds) or 'nothing'}; nDPI: {proto}"


# ------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--flows", type=int, default=25000, help="synthetic flows (20 packets each)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out")
    ap.add_argument("--reps", type=int, default=5, help="alternating runs per tool")
    ap.add_argument("--real", type=int, default=300_000, help="packets of the real-traffic capture")
    ap.add_argument(
        "--only", action="append", default=[], help="only captures whose name holds this"
    )
    ap.add_argument(
        "--extra", type=Path, action="append", default=[], help="more real captures to repeat"
    )
    ap.add_argument(
        "--startup",
        type=int,
        metavar="N",
        help="only the start-up comparison, N alternating rounds (e.g. 31)",
    )
    ap.add_argument(
        "--compare", type=Path, metavar="DIR", help="with --startup: another checkout (before)"
    )
    args = ap.parse_args()
    if args.startup:
        startup_table(args.startup, args.compare)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    captures = []
    for name in ("quickplay.pcap", "1kxun.pcap", "youtubeupload.pcap"):
        p = SHARED / name
        if not p.exists():
            p = LOCAL / name
        if p.exists():
            captures.append(p)
    synth = args.out / f"synthetic-{args.flows}.pcap"
    if not synth.exists():
        t0 = time.perf_counter()
        n = write_synthetic(synth, args.flows)
        print(f"wrote {synth} ({n} packets) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    captures.append(synth)
    real = args.out / f"real-{args.real}.pcap"
    if not real.exists():
        sources = [SHARED / n for n in ("quickplay.pcap", "1kxun.pcap", "youtubeupload.pcap")]
        sources += args.extra
        n = write_real(real, [p if p.exists() else LOCAL / p.name for p in sources], args.real)
        print(f"wrote {real} ({n} packets)", file=sys.stderr)
    captures.append(real)
    classifier = Classifier()
    load0 = os.getloadavg()
    print(
        f"## analyze\n\nMachine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}; "
        f"ndpiReader {ndpi_version()}. Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. "
        f"Medians of {args.reps} alternating runs. wxnet's hot modules: {_path()}.\n"
    )
    print(
        "| capture | packets | nDPI CPU s | wxnet CPU s | ratio (1 process, CPU) "
        "| nDPI wall s | wxnet --jobs 2 wall s | ratio (--jobs 2, wall) | wxnet --jobs 2 CPU s "
        "| wxnet pure-Python CPU s | ratio (pure) | nDPI proc pps | wxnet proc pps |"
    )
    print("| --- |" + " ---: |" * 12)
    tables = []
    if args.only:
        captures = [c for c in captures if any(o in c.name for o in args.only)]
    for cap in captures:
        big = cap in (synth, real)
        theirs, ours, recs, nflows = measure(cap, classifier, args.reps, jobs=big)
        n = ours.packets
        jobs = (
            f"| {theirs.wall_s:.3f} | {ours.jobs_wall_s:.3f} "
            f"| **{theirs.wall_s / ours.jobs_wall_s:.2f}** | {ours.jobs_cpu_s:.3f} "
            f"| {ours.pure_cpu_s:.3f} | {theirs.cpu_s / ours.pure_cpu_s:.2f} "
            if big
            else "| | | | | | "
        )
        print(
            f"| {cap.name} | {n} | {theirs.cpu_s:.3f} | {ours.cpu_s:.3f} "
            f"| **{theirs.cpu_s / ours.cpu_s:.2f}** {jobs}"
            f"| {theirs.packets / theirs.proc_s:,.0f} | {n / ours.proc_s:,.0f} |"
        )
        tables.append((cap.name, disagreements(recs, nflows), len(recs), len(nflows)))
    ours_start, theirs_start = startup(max(args.reps, 7))
    load1 = os.getloadavg()
    print(
        f"\nStart-up (`wxnet analyze --summary` on youtubeupload.pcap, 137 packets): "
        f"{ours_start * 1000:.0f} ms CPU (median); ndpiReader {theirs_start * 1000:.0f} ms. "
        f"Load average at start {load0[0]:.1f}, at end {load1[0]:.1f}."
    )
    for name, rows, ours_n, theirs_n in tables:
        print(f"\n### Label disagreements: {name} ({ours_n} flows wxnet, {theirs_n} nDPI)\n")
        if not rows:
            print("None about WeChat, QQ, Tencent or push.")
            continue
        # One example row per reason, with how many flows share it.
        groups: dict[str, list[tuple[str, str, str, str]]] = {}
        for row in rows:
            groups.setdefault(row[3], []).append(row)
        print("| flows | example flow | wxnet | nDPI | reason |\n| ---: | --- | --- | --- | --- |")
        for why, members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            flow, ours_txt, theirs_txt, _ = members[0]
            cells = [str(len(members)), flow, ours_txt, theirs_txt, why]
            print("| " + " | ".join(x.replace("|", "/") for x in cells) + " |")


def _path() -> str:
    code = "import wxnet._accel as a; print('compiled (mypyc)' if a.active() else 'pure Python')"
    exe = str(Path(sys.executable))
    return subprocess.run(
        [exe, "-c", code], capture_output=True, text=True, env=_ENV
    ).stdout.strip()


def ndpi_version() -> str:
    exe = shutil.which("ndpiReader")
    if not exe:
        return "missing"
    res = subprocess.run([exe, "-h"], capture_output=True, text=True, errors="replace")
    m = re.search(r"nDPI ([\d.]+)", res.stdout + res.stderr)
    return m.group(1) if m else "?"


if __name__ == "__main__":
    main()
