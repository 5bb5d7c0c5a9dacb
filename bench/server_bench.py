"""Messaging-server benchmarks (issue 2), run by hand:

    .venv/bin/python -m bench.server_bench [--links 5000] [--seconds 10] [--rate 5000]

Three measurements, each beside a baseline measured in the same run on the same machine:

1. memory per idle *identified* long link: ``wxnet serve`` vs a bare uvloop server that
   accepts connections and does nothing (the cost of a socket plus an empty protocol);
2. durable 1:1 delivery throughput (ack after commit, recipient synced) vs the same load
   generator against an echo server speaking the same framing (the ceiling of the
   transport and of this load generator);
3. send-to-deliver latency p50/p99 at a fixed offered rate.

The server runs in its own process (uvloop, SQLite durability FULL by default), started
by :mod:`bench.spawn`; the load generator runs here, on the protocol core
(LongLinkConnection under BasicLink, protobuf). Results are printed as Markdown for
docs/benchmarks.md.

``--compare DIR`` measures instead the server CPU per delivered message of this tree
against the checkout in DIR (its ``src`` on the server's PYTHONPATH), the same load
generator driving both, alternating A/B for ``--rounds`` rounds; it prints each round,
the medians and their ratio::

    git archive BASE | tar -x -C /tmp/base
    .venv/bin/python -m bench.server_bench --compare /tmp/base --rounds 5

Each compare run also prints the server's own latency histograms over its timed
messages (send, write wait, group commit, the loop's wake-up, loop lag, GC pauses:
docs/server.md, "Latency"; "-" for a server without them; start-up and the log-ins
left out, :class:`TimedSpan`) and how long each side's threads waited for a CPU per
second of that span (``runq``, server / generator). ``--compare self`` runs this tree on both
sides, the baseline with the extra settings of ``--b-server`` / ``--b-sync``
(``--a-server`` / ``--a-sync`` for this tree), e.g. what the process settings buy::

    .venv/bin/python -m bench.server_bench --compare self --users 200 --push --paced \
        --b-server 'gc_thresholds = []; gc_freeze = false' --b-sync 'checkpoint_interval = 0'

``--profile DIR`` records each compare run's server with ``py-spy record --gil -f raw``
(pinned to the generator's CPU; logins included) into ``DIR/<build>-<round>.txt``; the
sampler does not stop the server (``--nonblocking``), but it shares the machine: read
the CPU figures of those runs as disturbed.

``--baselines C [C ...]`` runs the random-pairs shape (``--users``) on this tree's server
and on the two outside baselines, Mosquitto with MQTT QoS 1 (:mod:`bench.mqtt_load`) and
ejabberd with XMPP (:mod:`bench.xmpp_load`), in one session, the order rotated every
round, each server pinned to CPU 0 and the generator to CPU 1; ``--paced --rate R`` for
the latency at a fixed rate::

    .venv/bin/python -m bench.server_bench --baselines 200 1000 --push --messages 20000
    .venv/bin/python -m bench.server_bench --baselines 200 --push --paced --rate 2000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from bench import loadgen
from bench.spawn import ServerProcess, rss_kib
from wxnet.client.basiclink import BasicLink
from wxnet.proto import commands as C
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.syncdriver import MAX_HELD_BYTES
from wxnet.server.probes import thread_cpu_waits


async def connect(port: int) -> BasicLink:
    return await BasicLink.connect("127.0.0.1", port)


@dataclass
class Dev:
    user: str
    base: pb.BaseRequest
    link: BasicLink


def server_proc(data: Path, extra: str = "", src: str | None = None) -> ServerProcess:
    """A server on a config made for load (caps raised), optionally from checkout ``src``."""
    cfg = data / "bench.toml"
    # connection caps raised for 5,000 links from one address (the round's baseline
    # knows them too: C = 1,000 would sit at the per-address default)
    caps = "max_connections = 100000\nmax_connections_per_address = 100000\n"
    cfg.write_text(
        f'[server]\nhost = "127.0.0.1"\nlong_port = 0\nhttp_port = 0\ndata = "{data}"\n'
        f"max_links_per_account = 100000\nmax_pending_per_link = 1024\n{caps}{extra}"
    )
    if src:
        return ServerProcess.on_config(cfg, python_path=f"{src}/src")
    return ServerProcess(["--config", str(cfg), "--contacts", "open"])


async def login(port: int, user: str, device: str) -> Dev:
    link = await connect(port)
    r = await link.call(
        "manualauth",
        pb.ManualAuthRequest(
            base=pb.BaseRequest(device_id=device), user_name=user, password="secret1"
        ),
        pb.ManualAuthResponse,
    )
    base = pb.BaseRequest(session_key=r.session_key, uin=r.uin, device_id=device)
    return Dev(user, base, link)


async def identify(dev: Dev) -> None:
    await dev.link.call("identify", pb.IdentifyRequest(base=dev.base), pb.IdentifyResponse)


# ------------------------------------------------------------------ 1. idle links
async def bare_bytes_per_link(n: int) -> float:
    """RSS growth per connection of a bare uvloop server holding ``n`` plain connections
    that never send: the cost of a socket, a transport and an empty protocol, the floor
    under any server's idle link (also the baseline of :mod:`bench.idle_links`)."""
    code = (
        "import asyncio, uvloop, sys\n"
        "class P(asyncio.Protocol):\n    pass\n"
        "async def main():\n"
        "    s = await asyncio.get_running_loop().create_server(P, '127.0.0.1', 0, backlog=4096)\n"
        "    print(s.sockets[0].getsockname()[1], flush=True)\n"
        "    await asyncio.Event().wait()\n"
        "uvloop.run(main())\n"
    )
    bare = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert bare.stdout is not None
    port = int(bare.stdout.readline())
    before = rss_kib(bare.pid)
    links = [await connect(port) for _ in range(n)]
    await asyncio.sleep(1.0)
    per_link = (rss_kib(bare.pid) - before) * 1024 / n
    for lk in links:
        lk.close()
    bare.terminate()
    bare.wait()
    return per_link


async def bench_idle_links(n: int) -> dict[str, float]:
    out: dict[str, float] = {"baseline_bytes_per_link": await bare_bytes_per_link(n)}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        users = [f"idle{i:03d}" for i in range(10)]
        loadgen.create_users(data, users, "secret1")
        srv = server_proc(data).start()
        try:
            devs = [await login(srv.long_port, u, f"{u}-d0") for u in users]
            for d in devs:
                await identify(d)
            await asyncio.sleep(0.5)
            before = srv.rss_kib()
            extra: list[Dev] = []
            for i in range(n):
                d0 = devs[i % len(devs)]
                lk = await connect(srv.long_port)
                dev = Dev(d0.user, d0.base, lk)
                await identify(dev)
                extra.append(dev)
            await asyncio.sleep(1.0)
            after = srv.rss_kib()
            out["wxnet_bytes_per_link"] = (after - before) * 1024 / n
            for dev in extra + devs:
                dev.link.close()
        finally:
            srv.stop()
    return out


# ------------------------------------------------------------------ 2/3. delivery
async def echo_baseline(seconds: float, conns: int, batch: int) -> float:
    """Requests of the same size echoed by a uvloop server: messages/s ceiling."""
    code = (
        "import asyncio, uvloop\n"
        "from wxnet.proto.framing import PacketDecoder, encode_packet\n"
        "class P(asyncio.Protocol):\n"
        "    def connection_made(self, t): self.t = t; self.d = PacketDecoder()\n"
        "    def data_received(self, data):\n"
        "        self.t.write(b''.join(encode_packet(p.cmd + 1000000000, p.seq, p.body)"
        " for p in self.d.packets(data)))\n"
        "async def main():\n"
        "    s = await asyncio.get_running_loop().create_server(P, '127.0.0.1', 0)\n"
        "    print(s.sockets[0].getsockname()[1], flush=True)\n"
        "    await asyncio.Event().wait()\n"
        "uvloop.run(main())\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    links = [await connect(port) for _ in range(conns)]
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + seconds
    done = 0
    req = pb.SendMsgRequest(
        base=pb.BaseRequest(session_key="x" * 32, uin=1, device_id="d"),
        list=[
            pb.MicroMsg(
                to_user="user0001",
                content=repr(time.perf_counter()),
                msg_type=1,
                client_msg_id="b123456",
            )
            for _ in range(batch)
        ],
    ).SerializeToString()

    send, sync = C.BY_NAME["newsendmsg"], C.BY_NAME["newsync"]

    async def one(lk: BasicLink) -> None:
        nonlocal done
        while loop.time() < stop_at:
            await lk.send(send, req)[1]
            # the echo server also has to carry the receiver's sync of the same bytes
            await lk.send(sync, req)[1]
            done += batch

    t0 = loop.time()
    await asyncio.gather(*(one(lk) for lk in links))
    rate = done / (loop.time() - t0)
    proc.terminate()
    proc.wait()
    return rate


async def bench_delivery(
    pairs: int, messages: int, rate: float, window: int, durability: str
) -> dict[str, dict[str, Any]]:
    """Flat out, then paced at ``rate``, with bench.loadgen on a fresh server."""
    out: dict[str, dict[str, Any]] = {}
    for mode, r in (("max", 0.0), ("paced", rate)):
        with tempfile.TemporaryDirectory() as tmp:  # fresh ids: no dedup between runs
            data = Path(tmp)
            names = [f"{p}{i}" for p in ("lgs", "lgr") for i in range(pairs)]
            loadgen.create_users(data, names, "loadgen-pw")
            srv = server_proc(data, f'[sync]\ndurability = "{durability}"\n').start()
            try:
                c0, w0 = srv.metric("wxnet_db_commits"), srv.metric("wxnet_db_writes")
                n = messages if r == 0 else int(r * 8)
                res = await loadgen.run_load(
                    "127.0.0.1",
                    srv.long_port,
                    pairs,
                    n,
                    rate=r,
                    window=window,
                    prefix="lg",
                    server_pid=srv.pid,
                )
                summary = res.summary()
                summary["server_cpu"] = (res.server_cpu_seconds or 0.0) / res.elapsed
                summary["loadgen_cpu"] = res.cpu_seconds / res.elapsed
                c1, w1 = srv.metric("wxnet_db_commits"), srv.metric("wxnet_db_writes")
                summary["jobs_per_commit"] = (w1 - w0) / max(1.0, c1 - c0)
                out[mode] = summary
            finally:
                srv.stop()
    return out


async def main_async(args: argparse.Namespace) -> None:
    res = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (res[1], res[1]))
    print(f"# wxnet server benchmarks, {time.strftime('%Y-%m-%d')}")
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}, uvloop"
    )
    idle = await bench_idle_links(args.links)
    base, ours = idle["baseline_bytes_per_link"], idle["wxnet_bytes_per_link"]
    table(
        f"idle identified long links ({args.links})",
        [
            ("bare uvloop server, bytes per link (baseline)", f"{base:.0f}"),
            ("wxnet serve, bytes per identified link", f"{ours:.0f}"),
            ("ratio wxnet/baseline", f"{ours / base:.2f}"),
        ],
    )
    echo = await echo_baseline(args.seconds, args.pairs, 1)
    for durability in args.durability:
        d = await bench_delivery(args.pairs, args.messages, args.rate, args.window, durability)
        m, p = d["max"], d["paced"]
        table(
            f"durable 1:1 delivery, durability={durability}, {args.pairs} pairs "
            f"(bench.loadgen, {args.window} sends in flight per sender)",
            [
                ("echo baseline (send + sync round trips, no store)", f"{echo:,.0f} msg/s"),
                (
                    "delivered flat out (ack after commit, recipient synced)",
                    f"{m['delivered_per_s']:,.0f} msg/s",
                ),
                ("ratio delivered/echo", f"{m['delivered_per_s'] / echo:.3f}"),
                (
                    "acked / delivered / lost / duplicates",
                    f"{m['acked']} / {m['delivered']} / {m['lost']} / {m['duplicates']}",
                ),
                (
                    "flat out send-to-deliver p50 / p99",
                    f"{m['latency_ms']['p50']:.1f} / {m['latency_ms']['p99']:.1f} ms",
                ),
                (
                    f"paced at {args.rate:,.0f} msg/s offered: delivered",
                    f"{p['delivered_per_s']:,.0f} msg/s",
                ),
                (
                    "paced send-to-deliver p50 / p99",
                    f"{p['latency_ms']['p50']:.2f} / {p['latency_ms']['p99']:.2f} ms",
                ),
                (
                    "write jobs per group commit (flat out / paced)",
                    f"{m['jobs_per_commit']:.1f} / {p['jobs_per_commit']:.1f}",
                ),
                (
                    "CPU flat out: server / load generator (cores)",
                    f"{m['server_cpu']:.2f} / {m['loadgen_cpu']:.2f}",
                ),
                (
                    "CPU paced: server / load generator (cores)",
                    f"{p['server_cpu']:.2f} / {p['loadgen_cpu']:.2f}",
                ),
            ],
        )


_CREATE_USERS = """
import sys, time
from pathlib import Path
from wxnet.sync import model
from wxnet.sync.db import connect
from wxnet.sync.schema import init_schema
pw_hash = sys.argv[3]
model.hash_password = lambda _password: pw_hash
data = Path(sys.argv[1]); data.mkdir(parents=True, exist_ok=True)
conn = connect(data / "wxnet.db", synchronous="OFF"); init_schema(conn)
for name in sys.argv[4:]:
    model.add_user_sync(conn, name, sys.argv[2], None, time.time())
conn.close()
"""


def create_users_with(src: str | None, data: Path, names: list[str], password: str) -> None:
    """Accounts made by the server's own code (``src``'s schema, not necessarily ours),
    all with one cheap hash of ``password`` (:func:`bench.loadgen.bench_hash`)."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = f"{src}/src"
    pw_hash = loadgen.bench_hash(password)
    subprocess.run(
        [sys.executable, "-c", _CREATE_USERS, str(data), password, pw_hash, *names],
        env=env,
        check=True,
    )


#: The server's own latency histograms that a compare run reads at its end (a server
#: that lacks one, an older checkout, shows "-"): name -> the quantiles printed.
PROBES = {
    "wxnet_send_seconds": (50, 99),
    "wxnet_db_write_wait_seconds": (50, 99),
    "wxnet_db_commit_seconds": (50, 99),
    "wxnet_db_wake_seconds": (50, 99),
    "wxnet_loop_lag_seconds": (99, 100),
}


def histogram_quantiles(
    text: str, name: str, label: str = ""
) -> tuple[list[float], list[int]] | None:
    """The bucket bounds and cumulative counts of one histogram series in a /metrics
    text (``label``: e.g. 'generation="2"'), as (bounds, counts...) or None if absent."""
    import re

    sel = f"{label}," if label else ""
    pat = re.compile(rf'^{re.escape(name)}_bucket\{{{re.escape(sel)}le="([^"]+)"\}} (\S+)$', re.M)
    found = [(float(b), float(c)) for b, c in pat.findall(text)]
    if not found:
        return None
    found.sort()
    return [b for b, _ in found], [int(c) for _, c in found]


def bucket_quantile(bounds: list[float], cum: list[int], q: float) -> float:
    """The upper bound of the bucket that holds quantile ``q`` (percent; 100: the
    highest non-empty bucket)."""
    total = cum[-1]
    if not total:
        return 0.0
    rank = total if q >= 100 else q / 100 * total
    for b, c in zip(bounds, cum, strict=True):
        if c >= rank:
            return b
    return bounds[-1]


def metrics_text(srv: ServerProcess) -> str:
    """The server's /metrics, as text."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{srv.http_port}/metrics", timeout=10) as r:
        body: bytes = r.read()
    return body.decode()


def histogram_since(
    text: str, before: str | None, name: str, label: str = ""
) -> tuple[list[float], list[int]] | None:
    """One histogram series of ``text`` less what it already held in ``before`` (an
    earlier scrape of the same server; None: all of it): its samples in between."""
    h = histogram_quantiles(text, name, label)
    b = histogram_quantiles(before, name, label) if before is not None else None
    if h is None or b is None or b[0] != h[0]:
        return h
    return h[0], [n - m for n, m in zip(h[1], b[1], strict=True)]


def counter_since(text: str, before: str | None, sample: str) -> float:
    """One counter sample (``name{labels}``) of ``text`` less its value in ``before``."""
    import re

    def value(t: str) -> float:
        m = re.search(rf"^{re.escape(sample)} (\S+)$", t, re.M)
        return float(m.group(1)) if m else float("nan")

    return value(text) - (value(before) if before is not None else 0.0)


def read_probes(text: str, before: str | None = None) -> dict[str, str]:
    """Quantiles (bucket upper bounds, ms) of :data:`PROBES`, and the GC pauses, in the
    /metrics ``text``, over what happened since ``before`` (see :class:`TimedSpan`)."""
    out: dict[str, str] = {}
    for name, qs in PROBES.items():
        h = histogram_since(text, before, name)
        short = name.removeprefix("wxnet_").removesuffix("_seconds")
        if h is None:
            out[short] = "-"
            continue
        bounds, cum = h
        out[short] = "/".join(f"{bucket_quantile(bounds, cum, q) * 1000:g}" for q in qs)
    gcs = []
    for gen in "012":
        h = histogram_since(text, before, "wxnet_gc_pause_seconds", f'generation="{gen}"')
        if h is not None:
            bounds, cum = h
            sample = f'wxnet_gc_cpu_seconds_total{{generation="{gen}"}}'
            cpu_ms = counter_since(text, before, sample) * 1000
            gcs.append(f"{gen}:{cum[-1]}/{cpu_ms:.0f}/{bucket_quantile(bounds, cum, 100) * 1000:g}")
    out["gc"] = " ".join(gcs) or "-"
    return out


def runq_wait(pid: int) -> float:
    """Seconds the threads of process ``pid`` have spent ready to run but waiting for a
    CPU (:func:`wxnet.server.probes.thread_cpu_waits`): time other work held the CPU."""
    return sum(thread_cpu_waits(pid).values())


class TimedSpan:
    """What a compare run reads at the start and the end of its timed phase (the
    generator calls :meth:`mark` at both, :func:`loadgen.run_random`'s ``on_span``):
    the server's /metrics at the start, so that the probe columns cover the timed
    messages only (not start-up, whose ``gc.collect()`` before ``gc.freeze()`` is the
    one generation-2 collection of a run, nor the log-ins), and the run-queue waits of
    the server and of this generator (:func:`runq_wait`): a run whose processes waited
    for a CPU measured the machine's other work as much as the server."""

    def __init__(self, srv: ServerProcess) -> None:
        self.srv = srv
        self.before: str | None = None
        self.waits: list[tuple[float, float, float]] = []  # (time, server, generator)

    def mark(self) -> None:
        if self.before is None:
            self.before = metrics_text(self.srv)
        self.waits.append((time.monotonic(), runq_wait(self.srv.pid), runq_wait(os.getpid())))

    def runq_ms_per_s(self) -> str:
        """The waits over the span, ms per second of it: "server / generator"."""
        if len(self.waits) < 2:
            return "-"
        (t0, s0, g0), (t1, s1, g1) = self.waits[0], self.waits[-1]
        span = max(t1 - t0, 1e-9)
        return f"{(s1 - s0) / span * 1000:.0f} / {(g1 - g0) / span * 1000:.0f}"


async def cpu_per_message(
    src: str | None, args: argparse.Namespace, side: str = "a"
) -> dict[str, float]:
    """One delivery run (flat out, or ``--paced`` at ``--rate``) on a fresh server from
    ``src`` (None: this tree), the server pinned to CPU 0 and this generator to CPU 1.

    With ``args.users`` the load is the random-pairs shape (:func:`loadgen.run_random`),
    else ``args.pairs`` fixed pairs (:func:`loadgen.run_load`); ``args.push``: the
    receivers take push with data."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        if args.users:
            names = [f"lgu{i}" for i in range(args.users)]
        else:
            names = [f"lg{k}{i}" for i in range(args.pairs) for k in "sr"]
        create_users_with(src, data, names, "loadgen-pw")
        if args.users:
            conn = sqlite3.connect(data / "wxnet.db", isolation_level=None)
            loadgen.mesh_contacts(conn)
            conn.close()
        durability = args.durability[0]
        # every generator user logs in at once (untimed): room for all of them in the login
        # queue and two hashing workers (on a loaded machine the defaults, 16 and 1, answer
        # ERR_BUSY or take longer than the generator's 30 s, which ends the run)
        server_keys, sync_keys = (
            _lines(getattr(args, f"{side}_server", "")),
            _lines(getattr(args, f"{side}_sync", "")),
        )
        sync = (
            f'{server_keys}[sync]\ndurability = "{durability}"\nlogin_queue = {2 * len(names)}\n'
            'login_workers = 2\ncontacts = "open"\n'  # the base may have consent (issue 15)
            f"{sync_keys}"
        )
        srv = server_proc(data, sync, src).start()
        span = TimedSpan(srv)
        probes: dict[str, str] = {}
        spy: subprocess.Popen[bytes] | None = None
        try:
            loadgen.pin(srv.pid, {0})
            loadgen.pin(0, {1})
            if getattr(args, "profile", None):
                spy = start_profile(srv.pid, Path(args.profile) / f"{args.profile_name}.txt")
            if args.users:
                res = await loadgen.run_random(
                    "127.0.0.1",
                    srv.long_port,
                    args.users,
                    args.messages,
                    window=args.window,
                    warmup=args.warmup,
                    rate=args.rate if args.paced else 0.0,
                    server_pid=srv.pid,
                    push=args.push,
                    push_hold=args.push_hold,
                    login_slice=64,  # the login queue above holds them all
                    on_span=span.mark,
                )
            else:
                res = await loadgen.run_load(
                    "127.0.0.1",
                    srv.long_port,
                    args.pairs,
                    args.messages,
                    rate=args.rate if args.paced else 0.0,
                    window=args.window,
                    prefix="lg",
                    server_pid=srv.pid,
                    push=args.push,
                    push_hold=args.push_hold,
                )
            probes = read_probes(metrics_text(srv), span.before)  # fixed pairs: whole run
            probes["runq"] = span.runq_ms_per_s()
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            srv.stop()
            loadgen.pin(0, set(range(os.cpu_count() or 1)))
    return {**figures(res), "probes": probes}  # type: ignore[dict-item]


def start_profile(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """``py-spy record --gil -f raw`` of ``pid`` into ``out`` until SIGINT, pinned to CPU 1
    (the generator's), so that the server's core is not shared with the sampler."""
    exe = Path(sys.executable).with_name("py-spy")
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [str(exe), "record", "--gil", "--nonblocking", "-f", "raw", "-o", str(out), "-p", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    loadgen.pin(spy.pid, {1})
    return spy


def figures(res: loadgen.LoadResult) -> dict[str, float]:
    """One run's figures, after checking that every acked message was delivered once."""
    if res.delivered != res.acked or res.send_errors or res.duplicates:
        raise RuntimeError(f"a compare run lost messages: {res.summary()}")
    lat = sorted(res.latencies)
    return {
        "us_per_msg": (res.server_cpu_seconds or 0.0) / res.delivered * 1e6,
        "msg_per_s": res.delivered / res.elapsed,
        "server_cores": (res.server_cpu_seconds or 0.0) / res.elapsed,
        "loadgen_cores": res.cpu_seconds / res.elapsed,
        "p50_ms": loadgen.percentile(lat, 50) * 1000,
        "p99_ms": loadgen.percentile(lat, 99) * 1000,
        "newsync_per_msg": res.requests["newsync"] / max(1, res.taken),
        "syncdone_per_msg": res.requests["syncdone"] / max(1, res.taken),
        "push_share": res.taken_by_push / max(1, res.taken),
        "gen_gc": len(res.gc_pauses),
        "gen_gc_ms": sum(res.gc_pauses) * 1000,
        "gen_gc_max_ms": max(res.gc_pauses, default=0.0) * 1000,
    }


async def outside_run(kind: str, users: int, args: argparse.Namespace) -> dict[str, float]:
    """One random-pairs run through Mosquitto (``kind`` "mqtt") or ejabberd ("xmpp"),
    each started here on loopback and pinned to CPU 0, this generator to CPU 1, with the
    same driver and sizes as :func:`cpu_per_message`."""
    from bench import mqtt_load, xmpp_load

    rate = args.rate if args.paced else 0.0
    everything = set(range(os.cpu_count() or 1))
    try:
        if kind == "mqtt":
            with mqtt_load.Broker() as broker:
                loadgen.pin(broker.pid, {0})
                loadgen.pin(0, {1})
                res = await mqtt_load.run_mqtt(
                    "127.0.0.1", broker.port, users, args.messages, args.window,
                    args.warmup, rate, broker.pid,
                )  # fmt: skip
        else:
            with xmpp_load.Ejabberd(cpus={0}) as server:
                loadgen.pin(0, {1})
                res = await xmpp_load.run_xmpp(
                    "127.0.0.1", server.port, users, args.messages, args.window,
                    args.warmup, rate, server.pid,
                )  # fmt: skip
    finally:
        loadgen.pin(0, everything)
    return figures(res)


OUTSIDE = {"wxnet": "wxnet (this tree)", "mqtt": "Mosquitto, MQTT QoS 1", "xmpp": "ejabberd, XMPP"}


async def baselines(args: argparse.Namespace) -> None:
    """``--baselines``: the random-pairs shape on this tree's server, Mosquitto and
    ejabberd in one session, for each of ``--users`` (C), ``--rounds`` rounds with the
    order rotated each round; with ``--paced``, at ``--rate`` instead of flat out.
    Prints one Markdown row per run, then the medians and the ratios to Mosquitto."""
    print(
        "| run | server | C | server CPU-s per 10k delivered | delivered msg/s |"
        " server / generator cores | p50 / p99 ms | load average |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    n = 0
    kinds = ["wxnet", "mqtt", "xmpp"]
    for users in args.baselines:
        for r in range(args.rounds):
            for kind in kinds[r % 3 :] + kinds[: r % 3]:
                if kind == "wxnet":
                    sub = argparse.Namespace(**{**vars(args), "users": users})
                    got = await cpu_per_message(None, sub)
                else:
                    got = await outside_run(kind, users, args)
                runs.setdefault((kind, users), []).append(got)
                n += 1
                print(
                    f"| {n} | {OUTSIDE[kind]} | {users} | {got['us_per_msg'] / 100:.2f} | "
                    f"{got['msg_per_s']:,.0f} | {got['server_cores']:.2f} / "
                    f"{got['loadgen_cores']:.2f} | {got['p50_ms']:.1f} / {got['p99_ms']:.1f} | "
                    f"{os.getloadavg()[0]:.1f} |",
                    flush=True,
                )
    print()
    for users in args.baselines:
        med = {k: statistics.median(x["us_per_msg"] for x in runs[(k, users)]) / 100 for k in kinds}
        print(
            f"- C = {users}: median CPU-s per 10k: wxnet {med['wxnet']:.2f}, Mosquitto "
            f"{med['mqtt']:.2f}, ejabberd {med['xmpp']:.2f}; to Mosquitto: wxnet "
            f"{med['wxnet'] / med['mqtt']:.1f}x, ejabberd {med['xmpp'] / med['mqtt']:.1f}x; "
            f"wxnet / ejabberd {med['wxnet'] / med['xmpp']:.2f}"
        )


async def compare(args: argparse.Namespace) -> None:
    """Server CPU per delivered message, this tree vs ``args.compare``, alternating."""
    runs: dict[str, list[dict[str, float]]] = {"this tree": [], "baseline": []}
    probe_cols = [
        *(n.removeprefix("wxnet_").removesuffix("_seconds") for n in PROBES),
        "gc",
        "runq",
    ]
    print(
        "| round | build | server CPU-s per 10k delivered | delivered msg/s | server / generator"
        " cores | p50 / p99 ms | newsync / syncdone per msg, by push | load average | "
        + " | ".join(probe_cols)
        + " | generator GC: count/ms/max ms |"
    )
    print("| --- " * (9 + len(probe_cols)) + "|")
    baseline = None if args.compare == "self" else args.compare
    for r in range(args.rounds):
        order = [("this tree", None, "a"), ("baseline", baseline, "b")]
        for name, src, side in order if r % 2 == 0 else order[::-1]:
            args.profile_name = f"{'this' if side == 'a' else 'base'}-{r + 1}"
            got = await cpu_per_message(src, args, side)
            runs[name].append(got)
            load = os.getloadavg()[0]
            print(
                f"| {r + 1} | {name} | {got['us_per_msg'] / 100:.2f} | {got['msg_per_s']:,.0f} "
                f"| {got['server_cores']:.2f} / {got['loadgen_cores']:.2f} "
                f"| {got['p50_ms']:.1f} / {got['p99_ms']:.1f} "
                f"| {got['newsync_per_msg']:.3f} / {got['syncdone_per_msg']:.3f}, "
                f"{got['push_share']:.1%} | {load:.2f} | "
                + " | ".join(str(got["probes"].get(c, "-")) for c in probe_cols)  # type: ignore[attr-defined]
                + f" | {got['gen_gc']:.0f}/{got['gen_gc_ms']:.0f}/{got['gen_gc_max_ms']:.1f} |",
                flush=True,
            )
    med = {k: statistics.median(x["us_per_msg"] for x in v) for k, v in runs.items()}
    rate = {k: statistics.median(x["msg_per_s"] for x in v) for k, v in runs.items()}
    print(
        f"\nmedian server CPU per message: this tree {med['this tree']:.1f} us, baseline "
        f"{med['baseline']:.1f} us, ratio {med['this tree'] / med['baseline']:.3f}; "
        f"median delivered: {rate['this tree']:,.0f} vs {rate['baseline']:,.0f} msg/s"
    )


def _lines(text: str) -> str:
    """``--a-server 'k = v; k2 = v2'``: TOML lines."""
    return "".join(f"{ln.strip()}\n" for ln in text.split(";") if ln.strip())


def table(title: str, rows: list[tuple[str, str]]) -> None:
    print(f"\n## {title}\n\n| measurement | value |\n| --- | --- |")
    for k, v in rows:
        print(f"| {k} | {v} |")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--links", type=int, default=5000)
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--messages", type=int, default=100_000, help="flat-out run size")
    ap.add_argument(
        "--window", type=int, default=0, help="in flight per sender (8), or in total (1000)"
    )
    ap.add_argument(
        "--users",
        type=int,
        default=0,
        help="--compare on the random-pairs shape with this many users (server and"
        " generator pinned to separate CPUs); 0 = fixed pairs",
    )
    ap.add_argument("--warmup", type=int, default=2000, help="untimed messages (--users)")
    ap.add_argument(
        "--paced", action="store_true", help="--compare at --rate sends/s in total (latency)"
    )
    ap.add_argument(
        "--push",
        action="store_true",
        help="the generator's receivers ask for push with data (cmd 122); a server that"
        " does not know it sends notifies",
    )
    ap.add_argument(
        "--push-hold",
        type=int,
        default=MAX_HELD_BYTES,
        help="--push: bytes of pushes a receiver holds during its own sync; 0: none (a push"
        " during a sync means one more sync, the rule before PushInbox)",
    )
    ap.add_argument("--seconds", type=float, default=10.0, help="echo baseline duration")
    ap.add_argument("--rate", type=float, default=5000.0)
    ap.add_argument("--durability", nargs="+", default=["FULL", "NORMAL"])
    ap.add_argument(
        "--compare",
        metavar="DIR",
        help="A/B server CPU per message vs DIR ('self': this tree again, with --b-server/"
        "--b-sync)",
    )
    for side in "ab":
        which = "this tree" if side == "a" else "the baseline"
        ap.add_argument(
            f"--{side}-server",
            default="",
            metavar="TOML",
            help=f"extra [server] lines for {which} (e.g. 'gc_freeze = true')",
        )
        ap.add_argument(
            f"--{side}-sync", default="", metavar="TOML", help=f"extra [sync] lines for {which}"
        )
    ap.add_argument("--rounds", type=int, default=5, help="A/B rounds for --compare")
    ap.add_argument(
        "--profile", metavar="DIR", help="--compare: py-spy --gil raw profiles of each run here"
    )
    ap.add_argument(
        "--baselines",
        type=int,
        nargs="+",
        metavar="C",
        help="random pairs with C users on this tree, Mosquitto and ejabberd, rotating",
    )
    args = ap.parse_args()
    args.window = args.window or (1000 if args.users or args.baselines else 8)
    with contextlib.suppress(KeyboardInterrupt):
        if args.baselines:
            uvloop.run(baselines(args))
        else:
            uvloop.run(compare(args) if args.compare else main_async(args))


if __name__ == "__main__":
    main()
