"""The store's share of a send's latency, run by hand (issue 11, docs/benchmarks.md
"Latency"): what each process-level setting does to it, without a network or clients.

    .venv/bin/python -m bench.writer_latency [--rate 2000] [--messages 20000]
        [--loop-us 150] [--rounds 3] --variant NAME:KEY=VALUE,... [--variant ...]

Each run is a child process pinned to CPU 0 (as the server of bench.server_bench is)
with a fresh SQLite store (FULL durability) of ``--users`` accounts. It stores 1:1
messages open loop at ``--rate`` per second, each one its own task (as requests reach
the engine), and burns ``--loop-us`` of Python on the event loop per message (what the
server does around a send: parse, dispatch, push; it is what the writer thread competes
with for the GIL). Its store latency (``store_messages`` called to returned) and the
writer's own timings are printed per run, and as medians per variant; the variants
alternate, so a loaded machine weighs on all of them alike.

Variant keys: ``checkpoint_interval`` (seconds; 0: inside the writer's commits),
``switch_interval`` (seconds), ``gc_freeze`` (0/1), ``gc_thresholds`` (``a/b/c``), and
``src`` (another checkout: its ``src`` on the child's PYTHONPATH, for a before/after of
the store's code, e.g. ``--variant this: --variant base:src=/tmp/base``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

_CHILD = r"""
import asyncio, gc, json, os, random, sys, tempfile, threading, time
from pathlib import Path
from wxnet.server.probes import GcPauses, tune_process
from wxnet.sync.engine import profile_item
from wxnet.sync.sqlite_store import SQLiteStore
from wxnet.sync.store import NewMessage, SessionRow

users, messages, warmup, rate, loop_us = (
    int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
)
opts = json.loads(sys.argv[6])
lat = []

def switches():  # the writer thread's context switches so far (it blocks: GIL, queue, I/O)
    tid = next(t.native_id for t in threading.enumerate() if t.name == "wxnet-db-writer")
    with open(f"/proc/self/task/{tid}/status") as fh:
        return sum(int(ln.split()[1]) for ln in fh if "ctxt_switches" in ln)

def burn(us):
    end = time.perf_counter() + us / 1e6
    x = []
    while time.perf_counter() < end:
        x.append({"k": len(x)})  # allocates, as request handling does

async def main():
    with tempfile.TemporaryDirectory() as tmp:
        st = SQLiteStore(Path(tmp) / "w.db", "FULL", profile_item=profile_item,
                         checkpoint_interval=float(opts.get("checkpoint_interval", 0.25)))
        await st.start(lambda ch: None)
        now = int(time.time())
        uins = [await st.create_account(f"u{i}", "x", f"u{i}", now) for i in range(users)]
        for u in uins:
            await st.create_session(SessionRow(f"s{u}", u, f"u{u}", "d", "d", "mobile",
                                               now + 3600), now)
        th = tuple(int(t) for t in str(opts.get("gc_thresholds", "")).split("/") if t)
        tune_process(th, bool(int(opts.get("gc_freeze", 0))),
                     float(opts.get("switch_interval", 0.005)))
        pauses = GcPauses()
        pauses.start()
        rng = random.Random(1)
        n = 0
        async def store_one():
            nonlocal n
            n += 1
            a, b = rng.sample(uins, 2)
            cid = f"c{n}"
            m = NewMessage(cid, f"u{b}", 1, None, [a, b],
                           lambda mid, ct, cid=cid: b"\x08\x05*\x10" + cid.encode() * 3)
            t = time.perf_counter()
            burn(loop_us / 2)  # before the write: parse, checks
            await st.store_messages(a, [m], now)
            burn(loop_us / 2)  # after: the reply, the pushes
            lat.append(time.perf_counter() - t)
        async def paced(count):
            loop = asyncio.get_running_loop()
            start = loop.time()
            tasks = []
            for i in range(count):
                d = start + i / rate - loop.time()
                if d > 0:
                    await asyncio.sleep(d)
                tasks.append(asyncio.ensure_future(store_one()))
            await asyncio.gather(*tasks)
        await paced(warmup)
        lat.clear()
        db = st.db
        for t in (db.commit_times, db.wait_times, db.checkpoint_times,
                  *pauses.timings.values(), *pauses.cpu.values()):
            t.counts = [0] * len(t.counts); t.count = 0; t.sum = 0.0
        c0, t0, g0 = time.process_time(), time.perf_counter(), st.statistics()["commits"]
        s0 = switches()
        await paced(messages)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        groups = st.statistics()["commits"] - g0
        sw = switches() - s0
        await st.aclose()
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))] * 1000
    ms = lambda t, p: t.quantile(p) * 1000
    print(json.dumps({
        "cpu": cpu, "wall": wall, "groups": groups, "messages": messages, "switches": sw,
        "p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": lat[-1] * 1000,
        "commit_p50": ms(db.commit_times, 0.5), "commit_p99": ms(db.commit_times, 0.99),
        "commit_max": ms(db.commit_times, 1.0), "checkpoints": db.checkpoint_times.count,
        "ckpt_max": ms(db.checkpoint_times, 1.0), "wal_pages": db.wal_pages,
        "ckpt_ms": db.checkpoint_times.sum * 1000,
        "gc": {g: [t.count, round(t.sum * 1000, 1), ms(t, 1.0)] for g, t in pauses.cpu.items()},
    }))

asyncio.run(main())
"""


def run_child(args: argparse.Namespace, opts: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [
            "taskset",
            "-c",
            str(args.cpu),
            sys.executable,
            "-c",
            _CHILD,
            str(args.users),
            str(args.messages),
            str(args.warmup),
            str(args.rate),
            str(args.loop_us),
            json.dumps(opts),
        ],
        env=(
            {**os.environ, "PYTHONPATH": f"{opts['src']}/src"}
            if "src" in opts
            else dict(os.environ)
        ),
        check=True,
        capture_output=True,
        text=True,
    )
    got: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return got


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, rest = text.partition(":")
    opts = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
    return name, opts


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--warmup", type=int, default=2_000)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--loop-us", type=float, default=150.0, help="loop CPU per message (us)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cpu", type=int, default=0, help="the CPU the child is pinned to")
    ap.add_argument("--variant", action="append", default=[], help="NAME:KEY=VALUE,...")
    args = ap.parse_args()
    variants = [parse_variant(v) for v in args.variant] or [("defaults", {})]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    print(
        "| round | variant | p50 / p99 / p99.9 / max ms | commit p50 / p99 / max ms"
        " | checkpoints (max ms) | GC by generation: count/CPU ms/max CPU ms | CPU-s per 10k"
        " | messages per group, writer context switches per group | load average |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in range(args.rounds):
        for name, opts in variants if r % 2 == 0 else variants[::-1]:
            got = run_child(args, opts)
            runs[name].append(got)
            gc = got["gc"]
            assert isinstance(gc, dict)
            gcs = " ".join(f"{g}:{c}/{s:g}/{m:g}" for g, (c, s, m) in sorted(gc.items()))
            print(
                f"| {r + 1} | {name} | {got['p50']:.2f} / {got['p99']:.2f} / {got['p999']:.1f}"
                f" / {got['max']:.1f} | {got['commit_p50']:g} / {got['commit_p99']:g}"
                f" / {got['commit_max']:g} | {got['checkpoints']} ({got['ckpt_max']:g},"
                f" {got['ckpt_ms']:.0f} ms, {got['wal_pages']} pages)"
                f" | {gcs} | {float(got['cpu']) / int(got['messages']) * 1e4:.2f}"
                f" | {got['messages'] / max(1, got['groups']):.1f},"
                f" {got['switches'] / max(1, got['groups']):.1f}"
                f" | {os.getloadavg()[0]:.1f} |",
                flush=True,
            )
    print()
    for name, rs in runs.items():
        med = {
            k: statistics.median(float(x[k]) for x in rs)
            for k in ("p50", "p99", "p999", "max", "commit_p99", "commit_max")
        }
        print(
            f"{name}: median p50 {med['p50']:.2f}, p99 {med['p99']:.2f}, p99.9 "
            f"{med['p999']:.1f}, max {med['max']:.1f} ms; commit p99 {med['commit_p99']:g},"
            f" max {med['commit_max']:g} ms"
        )


if __name__ == "__main__":
    main()
