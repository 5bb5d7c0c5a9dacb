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
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import uvloop

from wxnet.proto import commands as C
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.framing import PacketDecoder, encode_packet
from wxnet.proto.synckey import SyncKey


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
    key: SyncKey = field(default_factory=SyncKey)
    syncing: bool = False
    again: bool = False


class ServerProc:
    def __init__(self, data: Path, extra: str = "") -> None:
        cfg = data / "bench.toml"
        cfg.write_text(
            f'[server]\nhost = "127.0.0.1"\nlong_port = 0\nhttp_port = 0\ndata = "{data}"\n'
            f"max_links_per_account = 100000\nmax_pending_per_link = 1024\n{extra}"
        )
        self.cfg = cfg
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wxnet", "serve", "--config", str(self.cfg)],
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


def add_users(data: Path, names: list[str]) -> None:
    for n in names:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "wxnet",
                "user",
                "add",
                n,
                "--password",
                "secret1",
                "--data",
                str(data),
            ],
            check=True,
            capture_output=True,
        )


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
        add_users(data, users)
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
def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) used so far by process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_delivery(
    server_pid: int, pairs: list[tuple[Dev, Dev]], seconds: float, rate: float | None, batch: int
) -> dict[str, float]:
    """Senders send to their receivers; receivers sync on notify. Returns stats."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    delivered = 0
    acked = 0
    stop_at = loop.time() + seconds
    measuring = True

    async def sync(dev: Dev) -> None:
        nonlocal delivered
        if dev.syncing:
            dev.again = True
            return
        dev.syncing = True
        try:
            while True:
                dev.again = False
                r = await call(
                    dev.link,
                    "newsync",
                    pb.NewSyncRequest(base=dev.base, key_buf=dev.key.to_bytes(), selector=2),
                    pb.NewSyncResponse,
                )
                now = time.perf_counter()
                dev.key = SyncKey.from_bytes(r.key_buf)
                for item in r.cmd_list:
                    if item.WhichOneof("body") == "add_msg" and measuring:
                        delivered += 1
                        sent = float(item.add_msg.content)
                        latencies.append(now - sent)
                if not r.continue_flag and not dev.again:
                    break
        finally:
            dev.syncing = False

    tasks: set[asyncio.Task[None]] = set()

    def on_notify(link: Link, sel: int) -> None:
        dev = receivers_by_link.get(id(link))
        if dev is not None:
            t = loop.create_task(sync(dev))
            tasks.add(t)
            t.add_done_callback(tasks.discard)

    receivers_by_link: dict[int, Dev] = {}
    for _, r in pairs:
        r.link.on_notify = on_notify
        receivers_by_link[id(r.link)] = r

    run_id = os.urandom(3).hex()
    counter = 0

    async def send_one(s: Dev, r: Dev) -> None:
        nonlocal acked, counter
        msgs = []
        for _ in range(batch):
            counter += 1
            msgs.append(
                pb.MicroMsg(
                    to_user=r.user,
                    content=repr(time.perf_counter()),
                    msg_type=1,
                    client_msg_id=f"{run_id}-{counter}",
                )
            )
        resp = await call(
            s.link, "newsendmsg", pb.SendMsgRequest(base=s.base, list=msgs), pb.SendMsgResponse
        )
        acked += sum(1 for x in resp.list if x.ret == 0)

    async def sender(s: Dev, r: Dev, interval: float | None) -> None:
        if interval is None:  # flat out: one request in flight per sender
            while loop.time() < stop_at:
                await send_one(s, r)
            return
        # paced: offer the rate whatever the latency (a client pipelines its sends)
        inflight: set[asyncio.Task[None]] = set()
        next_t = loop.time()
        while loop.time() < stop_at:
            t = loop.create_task(send_one(s, r))
            inflight.add(t)
            t.add_done_callback(inflight.discard)
            next_t += interval
            delay = next_t - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        if inflight:
            await asyncio.gather(*inflight)

    interval = None if rate is None else batch * len(pairs) / rate
    cpu0 = time.process_time()
    srv_cpu0 = proc_cpu(server_pid)
    t0 = loop.time()
    await asyncio.gather(*(sender(s, r, interval) for s, r in pairs))
    elapsed = loop.time() - t0
    deadline = loop.time() + 10
    while delivered < acked and loop.time() < deadline:
        await asyncio.sleep(0.01)
    measuring = False
    cpu = time.process_time() - cpu0
    srv_cpu = proc_cpu(server_pid) - srv_cpu0
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    return {
        "acked": acked,
        "delivered": delivered,
        "seconds": elapsed,
        "delivered_per_s": delivered / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": statistics.fmean(lat) * 1000 if lat else float("nan"),
        "loadgen_cpu": cpu / (loop.time() - t0),
        "server_cpu": srv_cpu / (loop.time() - t0),
    }


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
    n_pairs: int, seconds: float, rate: float, batch: int, durability: str
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        names = [f"u{i:04d}" for i in range(2 * n_pairs)]
        add_users(data, names)
        srv = ServerProc(data, f'[sync]\ndurability = "{durability}"\n')
        srv.start()
        try:
            pairs = []
            for i in range(n_pairs):
                s = await login(srv.port, names[2 * i], f"s{i}")
                r = await login(srv.port, names[2 * i + 1], f"r{i}")
                await identify(r)
                add = await call(
                    s.link,
                    "verifyuser",
                    pb.AddContactRequest(base=s.base, user_name=r.user),
                    pb.AddContactResponse,
                )
                assert add.base.ret == 0
                init = await call(
                    r.link, "newinit", pb.NewInitRequest(base=r.base), pb.NewInitResponse
                )
                r.key = SyncKey.from_bytes(init.current_synckey)
                pairs.append((s, r))
            await asyncio.sleep(0.5)
            assert srv.proc is not None
            c0, w0 = srv.metric("wxnet_db_commits"), srv.metric("wxnet_db_writes")
            out["max"] = await run_delivery(srv.proc.pid, pairs, seconds, None, batch)
            c1, w1 = srv.metric("wxnet_db_commits"), srv.metric("wxnet_db_writes")
            out["max"]["jobs_per_commit"] = (w1 - w0) / max(1.0, c1 - c0)
            out["paced"] = await run_delivery(srv.proc.pid, pairs, seconds, rate, 1)
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
    echo = await echo_baseline(args.seconds, args.pairs, args.batch)
    for durability in args.durability:
        d = await bench_delivery(args.pairs, args.seconds, args.rate, args.batch, durability)
        m, p = d["max"], d["paced"]
        table(
            f"durable 1:1 delivery, durability={durability}, {args.pairs} pairs, "
            f"batch {args.batch}, {args.seconds:.0f} s",
            [
                ("echo baseline (send + sync round trips, no store)", f"{echo:,.0f} msg/s"),
                (
                    "delivered (ack after commit, recipient synced)",
                    f"{m['delivered_per_s']:,.0f} msg/s",
                ),
                ("ratio delivered/echo", f"{m['delivered_per_s'] / echo:.2f}"),
                ("acked / delivered", f"{m['acked']:.0f} / {m['delivered']:.0f}"),
                ("latency at max load p50 / p99", f"{m['p50_ms']:.1f} / {m['p99_ms']:.1f} ms"),
                (
                    f"paced at {args.rate:,.0f} msg/s offered: achieved",
                    f"{p['delivered_per_s']:,.0f} msg/s",
                ),
                ("paced send-to-deliver p50 / p99", f"{p['p50_ms']:.2f} / {p['p99_ms']:.2f} ms"),
                ("write jobs per group commit at max load", f"{m['jobs_per_commit']:.1f}"),
                (
                    "CPU at max load: server / load generator",
                    f"{m['server_cpu']:.2f} / {m['loadgen_cpu']:.2f}",
                ),
                (
                    "CPU paced: server / load generator",
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
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=5000.0)
    ap.add_argument("--durability", nargs="+", default=["FULL", "NORMAL"])
    args = ap.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
