"""Scale-out benchmark (issue 13), run by hand:

    .venv/bin/python -m bench.scale_bench [--pairs 50] [--messages 20000] [--rounds 2]

Durable 1:1 delivery (ack after commit, recipient synced; bench.loadgen) flat out, on
``wxnet serve`` with the embedded SQLite store (the baseline) and with the PostgreSQL
store, alternating A/B within one run on a fresh store each time. Reports delivered
messages/s and the CPU seconds per 10,000 deliveries of the wxnet process and of
PostgreSQL (every process of its cluster) separately, medians over the rounds, and the
ratio to the baseline. PostgreSQL is a private cluster started here from the Debian
package (as the tests do); results are printed as Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from bench import loadgen
from bench.server_bench import server_proc
from tests.engines import PostgresServer

PW = "loadgen-pw"


def _cpu_of(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cluster_cpu(pg: PostgresServer) -> float:
    """CPU seconds used so far by the postmaster and its live children (the backends
    of this run stay connected to the end, so their time is counted)."""
    root = int((pg.data / "postmaster.pid").read_text().split()[0])
    total = _cpu_of(root)
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == root:
                total += _cpu_of(int(d.name))
    return total


async def pg_users(dsn: str, data: Path, names: list[str]) -> None:
    from wxnet.sync.engine import Engine, profile_item
    from wxnet.sync.pg_store import PostgresStore

    eng = Engine(data, store=PostgresStore(dsn, profile_item=profile_item))
    await eng.start()
    try:
        for n in names:
            await eng.add_user(n, PW)
    finally:
        await eng.aclose()


async def one_run(kind: str, pg: PostgresServer, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        names = [f"{p}{i}" for p in ("lgs", "lgr") for i in range(args.pairs)]
        extra = '[sync]\ndurability = "FULL"\n'
        if kind == "sqlite":
            loadgen.create_users(data, names, PW)
        else:
            dsn = pg.new_database()
            await pg_users(dsn, data, names)
            extra += f'[store]\nkind = "postgres"\ndsn = "{dsn}"\npool_size = 10\n'
        with server_proc(data, extra).start() as srv:
            pg0 = cluster_cpu(pg)
            res = await loadgen.run_load(
                "127.0.0.1", srv.long_port, args.pairs, args.messages, window=args.window,
                prefix="lg", password=PW, server_pid=srv.pid,
            )  # fmt: skip
            pg_cpu = cluster_cpu(pg) - pg0 if kind == "postgres" else 0.0
    per = 10_000 / max(1, res.delivered)
    s = res.summary()
    return {
        "rate": float(s["delivered_per_s"]),
        "wxnet": (res.server_cpu_seconds or 0.0) * per,
        "pg": pg_cpu * per,
        "loadgen": res.cpu_seconds * per,
        "lost": float(s["lost"]),
        "dups": float(s["duplicates"]),
    }


async def main_async(args: argparse.Namespace) -> None:
    pg = PostgresServer()
    pg.start()
    try:
        runs: dict[str, list[dict[str, float]]] = {"sqlite": [], "postgres": []}
        for _ in range(args.rounds):
            for kind in ("sqlite", "postgres"):  # alternate A/B
                runs[kind].append(await one_run(kind, pg, args))
    finally:
        pg.close()
    med = {k: {f: statistics.median(r[f] for r in v) for f in v[0]} for k, v in runs.items()}
    load = os.getloadavg()
    print(f"# scale-out benchmark, {time.strftime('%Y-%m-%d %H:%M')}")
    print(
        f"machine: {platform.node()} {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load average at the end {load[0]:.1f} / {load[1]:.1f}"
    )
    print(
        f"\n{args.pairs} pairs, {args.messages} messages per run, {args.window} in flight per "
        f"sender, {args.rounds} rounds alternating, medians; durability FULL\n"
    )
    print("| store | delivered msg/s | wxnet CPU-s / 10k | PostgreSQL CPU-s / 10k | lost / dups |")
    print("| --- | --- | --- | --- | --- |")
    for k in ("sqlite", "postgres"):
        m = med[k]
        pgc = f"{m['pg']:.2f}" if k == "postgres" else "-"
        print(
            f"| {k} (1 process) | {m['rate']:,.0f} | {m['wxnet']:.2f} | {pgc} | "
            f"{m['lost']:.0f} / {m['dups']:.0f} |"
        )
    ratio = med["postgres"]["wxnet"] / med["sqlite"]["wxnet"]
    print(f"\nwxnet CPU per delivery, PostgreSQL / SQLite: {ratio:.2f} (target <= 1.3)")
    print("per-round values:")
    for k, v in runs.items():
        print(f"- {k}: " + ", ".join(f"{r['rate']:,.0f} msg/s {r['wxnet']:.2f} s" for r in v))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
