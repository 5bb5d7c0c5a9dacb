"""The SQLite store's write path alone: CPU per stored message (issue 11), run by hand.

    .venv/bin/python -m bench.writer_bench --compare /tmp/base [--messages 20000]
        [--inflight 1000] [--users 200] [--rounds 3] [--group-wait-ms 0 2] [--s17]

No network and no engine: ``users`` accounts, then ``inflight`` tasks in a closed loop,
each storing one 1:1 message at a time (``SQLiteStore.store_messages``, FULL
durability, a fresh file per run) from a random user to a random other user, both in
its recipients, as ``Engine.send`` stores them. Each run is a child process
(``PYTHONPATH=DIR/src`` for the baseline), so the process CPU over the timed messages
(event loop and writer thread together; warm-up excluded) is the write path's. Prints
CPU-s per 10,000 messages, messages per group commit, the writer thread's context
switches per group (each time it blocked: on the queue, an fsync, or a wait to get the
GIL back after a SQLite step) and the load average, per run and as medians, alternating
which build goes first.

``--rate R`` stores instead at a fixed R messages/s (open loop, each message its own
task, as requests reach the engine), which is what the group size depends on in the
server; it also reports the store's p50/p99 latency.

``--group-wait-ms`` runs this tree once per value (the writer-group experiment: how long
the writer waits for more writes before it commits a group; only a tree with that knob,
such as 65ffaaf, takes a value other than 0: the knob lost and was taken out again).
``--s17`` stores the messages as sends of a device alone on its account (this tree then
puts the sender's row in its sent log instead of its message log; a baseline without
S17 ignores it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys

_CHILD = r"""
import asyncio, inspect, json, os, random, sys, tempfile, threading, time
from pathlib import Path
from wxnet.sync.engine import profile_item
from wxnet.sync.sqlite_store import SQLiteStore
from wxnet.sync.store import NewMessage, SessionRow

users, messages, warmup, inflight, wait_ms, s17, rate = (
    int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
    float(sys.argv[5]), sys.argv[6] == "1", float(sys.argv[7]),
)
lat = []

def switches():  # the writer thread's context switches so far (it blocks: GIL, queue, I/O)
    tid = next(t.native_id for t in threading.enumerate() if t.name == "wxnet-db-writer")
    with open(f"/proc/self/task/{tid}/status") as fh:
        return sum(int(ln.split()[1]) for ln in fh if "ctxt_switches" in ln)

async def main():
    with tempfile.TemporaryDirectory() as tmp:
        kw = {}
        if wait_ms:
            if "group_wait" not in inspect.signature(SQLiteStore).parameters:
                raise SystemExit("this build has no group_wait (the experiment's tree: 65ffaaf)")
            kw["group_wait"] = wait_ms / 1000
        st = SQLiteStore(Path(tmp) / "w.db", "FULL", profile_item=profile_item, **kw)
        await st.start(lambda ch: None)
        now = int(time.time())
        uins = [await st.create_account(f"u{i}", "x", f"u{i}", now) for i in range(users)]
        for u in uins:
            await st.create_session(SessionRow(f"s{u}", u, f"u{u}", "d", "d", "mobile",
                                               now + 3600), now)
        device = s17 and "device" in inspect.signature(st.store_messages).parameters
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
            if device:
                await st.store_messages(a, [m], now, "d")
            else:
                await st.store_messages(a, [m], now)
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
        async def run(count):
            nonlocal n
            if rate > 0:
                return await paced(count)
            target = n + count
            async def worker():
                nonlocal n
                while n < target:
                    n += 1
                    a, b = rng.sample(uins, 2)
                    cid = f"c{n}"
                    m = NewMessage(cid, f"u{b}", 1, None, [a, b],
                                   lambda mid, ct, cid=cid: b"\x08\x05*\x10" + cid.encode() * 3)
                    if device:
                        await st.store_messages(a, [m], now, "d")
                    else:
                        await st.store_messages(a, [m], now)
            await asyncio.gather(*(worker() for _ in range(inflight)))
        await run(warmup)
        lat.clear()
        c0, t0, g0 = time.process_time(), time.perf_counter(), st.statistics()["commits"]
        s0 = switches()
        await run(messages)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        groups = st.statistics()["commits"] - g0
        sw = switches() - s0
        await st.aclose()
    lat.sort()
    p50, p99 = (lat[int(len(lat) * q)] * 1000 if lat else 0.0 for q in (0.5, 0.99))
    print(json.dumps({"cpu": cpu, "wall": wall, "groups": groups, "messages": messages,
                      "p50": p50, "p99": p99, "switches": sw}))

asyncio.run(main())
"""


def run_child(src: str | None, args: argparse.Namespace, wait_ms: float) -> dict[str, float]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = f"{src}/src"
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(args.users),
            str(args.messages),
            str(args.warmup),
            str(args.inflight),
            str(wait_ms),
            "1" if args.s17 else "0",
            str(args.rate),
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    got: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return got


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--compare", metavar="DIR", help="the baseline checkout")
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--warmup", type=int, default=2_000)
    ap.add_argument("--inflight", type=int, default=1_000)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--group-wait-ms", type=float, nargs="+", default=[0.0])
    ap.add_argument("--rate", type=float, default=0.0, help="open loop at this many msg/s")
    ap.add_argument("--s17", action="store_true", help="sends of a device alone on its account")
    args = ap.parse_args()
    builds: list[tuple[str, str | None, float]] = [
        (f"this tree, group_wait_ms {w:g}", None, w) for w in args.group_wait_ms
    ]
    if args.compare:
        builds.append(("baseline", args.compare, 0.0))
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in builds}
    print(
        "| round | build | CPU-s per 10k messages | messages per commit | msg/s"
        " | p50 / p99 ms | writer thread's context switches per group | load average |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    rng = random.Random(7)
    for r in range(args.rounds):
        order = builds[:] if r % 2 == 0 else builds[::-1]
        if r > 1:
            rng.shuffle(order)
        for name, src, wait in order:
            got = run_child(src, args, wait)
            runs[name].append(got)
            print(
                f"| {r + 1} | {name} | {got['cpu'] / got['messages'] * 1e4:.2f} "
                f"| {got['messages'] / max(got['groups'], 1):.1f} "
                f"| {got['messages'] / got['wall']:,.0f} | {got['p50']:.1f} / {got['p99']:.1f} "
                f"| {got.get('switches', 0) / max(got['groups'], 1):.1f} "
                f"| {os.getloadavg()[0]:.1f} |",
                flush=True,
            )
    print()
    base = runs.get("baseline")
    bmed = statistics.median(x["cpu"] / x["messages"] for x in base) if base else None
    for name, rs in runs.items():
        med = statistics.median(x["cpu"] / x["messages"] for x in rs)
        ratio = f", ratio to the baseline {med / bmed:.2f}" if bmed else ""
        print(f"{name}: median {med * 1e4:.2f} CPU-s per 10k messages{ratio}")


if __name__ == "__main__":
    main()
