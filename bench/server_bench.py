"""Messaging-server benchmarks (issue 2), run by hand:

    .venv/bin/python -m bench.server_bench [--links 5000] [--seconds 10] [--rate 5000]

Three measurements, each beside a baseline measured in the same run on the same machine:

1. memory per idle *identified* long link: ``wxnet serve`` vs a bare uvloop server that
   accepts connections and does nothing (the cost of a socket plus an empty protocol);
2. durable 1:1 delivery throughput (ack after commit, recipient synced) vs the same load
   generator against an echo server speaking the same framing (the ceiling of the
   transport and of this load generator);
3. send-to-deliver latency p50/p99 at a fixed offered rate.

The server runs in its own process (uvloop, SQLite durability FULL by default); the load
generator runs here, on the protocol core (framing + protobuf) over raw asyncio sockets.
Results are printed as Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from bench import loadgen
from wxnet.proto import commands as C
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.framing import PacketDecoder, encode_packet


def rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"VmRSS:\s+(\d+) kB", text)
    assert m
    return int(m.group(1))


class Link(asyncio.Protocol):
    """A minimal client link: replies by seq, notifies to a callback."""

    def __init__(self, on_notify: Callable[[Link, int], None] | None = None) -> None:
        self.dec = PacketDecoder()
        self.waiting: dict[int, asyncio.Future[bytes]] = {}
        self.seq = 0
        self.on_notify = on_notify
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for p in self.dec.packets(data):
            if p.cmd == C.CMD_NOTIFY:
                if self.on_notify:
                    self.on_notify(self, int.from_bytes(p.body, "big"))
            else:
                fut = self.waiting.pop(p.seq, None)
                if fut is not None and not fut.done():
                    fut.set_result(p.body)

    def connection_lost(self, exc: Exception | None) -> None:
        for f in self.waiting.values():
            if not f.done():
                f.set_exception(ConnectionError("closed"))

    def request(self, cmd: int, body: bytes) -> asyncio.Future[bytes]:
        self.seq += 1
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.waiting[self.seq] = fut
        assert self.transport is not None
        self.transport.write(encode_packet(cmd, self.seq, body))
        return fut


async def connect(port: int, on_notify: Callable[[Link, int], None] | None = None) -> Link:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: Link(on_notify), "127.0.0.1", port)
    return proto


async def call(link: Link, name: str, req: pb.Message, resp: type[pb.Message]) -> pb.Message:  # type: ignore[name-defined]
    body = await link.request(C.BY_NAME[name].cmd, req.SerializeToString())
    out = resp()
    out.ParseFromString(body)
    return out


@dataclass
class Dev:
    user: str
    base: pb.BaseRequest
    link: Link


class ServerProc:
    def __init__(self, data: Path, extra: str = "") -> None:
        cfg = data / "bench.toml"
        cfg.write_text(
            f'[server]\nhost = "127.0.0.1"\nlong_port = 0\nhttp_port = 0\ndata = "{data}"\n'
            f"max_links_per_account = 100000\nmax_pending_per_link = 1024\n"
            f"max_connections = 100000\nmax_connections_per_address = 100000\n{extra}"
        )
        self.cfg = cfg
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wxnet",
                "serve",
                "--config",
                str(self.cfg),
                "--contacts",
                "open",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        m = re.search(r"long link [\d.]+:(\d+)", line)
        h = re.search(r"http://[\d.]+:(\d+)", line)
        assert m and h, line
        self.port, self.http_port = int(m.group(1)), int(h.group(1))

    def metric(self, name: str) -> float:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics") as r:
            text = r.read().decode()
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(m.group(1)) if m else float("nan")

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(30)


async def login(port: int, user: str, device: str) -> Dev:
    link = await connect(port)
    r = await call(
        link,
        "manualauth",
        pb.ManualAuthRequest(
            base=pb.BaseRequest(device_id=device), user_name=user, password="secret1"
        ),
        pb.ManualAuthResponse,
    )
    assert r.base.ret == 0, r.base.err_msg
    base = pb.BaseRequest(session_key=r.session_key, uin=r.uin, device_id=device)
    return Dev(user, base, link)


async def identify(dev: Dev) -> None:
    r = await call(dev.link, "identify", pb.IdentifyRequest(base=dev.base), pb.IdentifyResponse)
    assert r.base.ret == 0, r.base.err_msg


# ------------------------------------------------------------------ 1. idle links
async def bench_idle_links(n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    # baseline: bare server
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
    out["baseline_bytes_per_link"] = (rss_kib(bare.pid) - before) * 1024 / n
    for lk in links:
        assert lk.transport is not None
        lk.transport.close()
    bare.terminate()
    bare.wait()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        users = [f"idle{i:03d}" for i in range(10)]
        loadgen.create_users(data, users, "secret1")
        srv = ServerProc(data)
        srv.start()
        try:
            devs = [await login(srv.port, u, f"{u}-d0") for u in users]
            for d in devs:
                await identify(d)
            await asyncio.sleep(0.5)
            assert srv.proc is not None
            before = rss_kib(srv.proc.pid)
            extra: list[Dev] = []
            for i in range(n):
                d0 = devs[i % len(devs)]
                lk = await connect(srv.port)
                dev = Dev(d0.user, d0.base, lk)
                await identify(dev)
                extra.append(dev)
            await asyncio.sleep(1.0)
            after = rss_kib(srv.proc.pid)
            out["wxnet_bytes_per_link"] = (after - before) * 1024 / n
            for dev in extra + devs:
                assert dev.link.transport is not None
                dev.link.transport.close()
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

    async def one(lk: Link) -> None:
        nonlocal done
        while loop.time() < stop_at:
            await lk.request(522, req)
            # the echo server also has to carry the receiver's sync of the same bytes
            await lk.request(121, req)
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
            srv = ServerProc(data, f'[sync]\ndurability = "{durability}"\n')
            srv.start()
            try:
                assert srv.proc is not None
                c0, w0 = srv.metric("wxnet_db_commits"), srv.metric("wxnet_db_writes")
                n = messages if r == 0 else int(r * 8)
                res = await loadgen.run_load(
                    "127.0.0.1",
                    srv.port,
                    pairs,
                    n,
                    rate=r,
                    window=window,
                    prefix="lg",
                    server_pid=srv.proc.pid,
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
    ap.add_argument("--window", type=int, default=8, help="sends in flight per sender")
    ap.add_argument("--seconds", type=float, default=10.0, help="echo baseline duration")
    ap.add_argument("--rate", type=float, default=5000.0)
    ap.add_argument("--durability", nargs="+", default=["FULL", "NORMAL"])
    args = ap.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
