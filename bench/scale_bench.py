"""Scale-out benchmark (issue 13), run by hand:

    .venv/bin/python -m bench.scale_bench [--pairs 50] [--messages 20000] [--rounds 2]
        [--rate 2000] [--rate-messages 10000] [--compare DIR]

Durable 1:1 delivery (ack after commit, recipient synced; bench.loadgen) flat out, on
``wxnet serve`` with the embedded SQLite store (the baseline), with the PostgreSQL store
and the Redis bus in one worker, and in two workers (``--workers 2``), alternating within
one run on a fresh store each time; then the same three at a fixed ``--rate`` for the
send-to-deliver latency. Mosquitto with MQTT QoS 1 (bench.mqtt_load) and ejabberd with
XMPP (bench.xmpp_load), the same random-pairs load, are measured in the same run as the
outside baselines. Reports
delivered messages/s and the CPU seconds per 10,000 deliveries of the wxnet processes
(the supervisor and its workers), of PostgreSQL (every process of its cluster) and of
Redis separately, medians over the rounds, and the ratios the issue sets targets for.
The login queue is raised (``login_queue``) so that the 2 x pairs logins at once are
queued, not refused; the wxnet CPU is that of the timed span (logins excluded), the
PostgreSQL and Redis CPU that of the whole run (their share of the logins included).
PostgreSQL and Redis are private servers started here from the Debian packages (as the
tests do); results are printed as Markdown for docs/benchmarks.md. ``--compare DIR``
adds, in every round, the one-worker PostgreSQL run of the checkout in DIR (its ``src``
on the server's PYTHONPATH; its users created by its own code, so with its own schema
version) as the "before" of this tree's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import loadgen
from bench.server_bench import server_proc
from tests.engines import PostgresServer, RedisServer

PW = "loadgen-pw"


def _cpu_of(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> float:
    """CPU seconds used so far by ``root`` and its live children."""
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


def cluster_cpu(pg: PostgresServer) -> float:
    """CPU seconds used so far by the postmaster and its live children (the backends
    of this run stay connected to the end, so their time is counted)."""
    return tree_cpu(int((pg.data / "postmaster.pid").read_text().split()[0]))


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


async def pg_users_of(src: str, dsn: str, data: Path, names: list[str]) -> None:
    """:func:`pg_users` run by checkout ``src``, so that the store is made with its own
    schema (a store made by this tree may have a schema newer than it reads)."""
    code = (
        "import asyncio, json, sys\nfrom pathlib import Path\n"
        "from bench.scale_bench import pg_users\n"
        "asyncio.run(pg_users(sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])))"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, dsn, str(data), json.dumps(names),
        cwd=src, env={**os.environ, "PYTHONPATH": f"{src}/src:{src}"},
    )  # fmt: skip
    if await proc.wait() != 0:
        raise RuntimeError(f"creating the users with {src} failed ({proc.returncode})")


KINDS = ("sqlite", "pg1", "pg2")
BASE = "pg1-base"  # --compare: the other checkout's one-worker PostgreSQL server
LABELS = {
    "sqlite": "SQLite, 1 process",
    "pg1": "PostgreSQL + Redis, 1 worker",
    "pg2": "PostgreSQL + Redis, 2 workers",
    BASE: "PostgreSQL + Redis, 1 worker, before (--compare)",
    "mqtt": "Mosquitto, MQTT QoS 1",
    "xmpp": "ejabberd, XMPP (XEP-0198 acks)",
}
#: seconds for a server's banner: two workers each start Python and connect to both
#: engines, which took over 30 s on a loaded machine
START_TIMEOUT = 120.0


async def one_run(
    kind: str,
    pg: PostgresServer,
    redis: RedisServer,
    args: argparse.Namespace,
    rate: float = 0.0,
) -> dict[str, float]:
    messages = args.rate_messages if rate else args.messages
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        names = [f"{p}{i}" for p in ("lgs", "lgr") for i in range(args.pairs)]
        extra = (
            '[sync]\ndurability = "FULL"\nlogin_queue = 1000\nlogin_workers = 2\n'
            'contacts = "open"\n'  # server_proc gives only this tree --contacts open
        )
        if kind == "sqlite":
            loadgen.create_users(data, names, PW)
        else:
            dsn = pg.new_database()
            if kind == BASE:
                await pg_users_of(args.compare, dsn, data, names)
            else:
                await pg_users(dsn, data, names)
            workers = 2 if kind == "pg2" else 1
            extra = (
                f"workers = {workers}\n{extra}"
                f'[store]\nkind = "postgres"\ndsn = "{dsn}"\npool_size = 10\n'
                f'[bus]\nkind = "redis"\nurl = "{redis.url}"\n'
            )
        src = args.compare if kind == BASE else None
        with server_proc(data, extra, src).start(START_TIMEOUT) as srv:
            pg0, rd0 = cluster_cpu(pg), redis_cpu(redis)
            res = await loadgen.run_load(
                "127.0.0.1", srv.long_port, args.pairs, messages, rate=rate,
                window=args.window, prefix="lg", password=PW, server_pid=srv.pid,
            )  # fmt: skip
            wx = res.server_cpu_seconds or 0.0  # the timed span only (not the logins)
            pg_cpu = cluster_cpu(pg) - pg0 if kind != "sqlite" else 0.0
            rd_cpu = redis_cpu(redis) - rd0 if kind != "sqlite" else 0.0
    return _figures(res, wx, pg_cpu, rd_cpu)


def redis_cpu(redis: RedisServer) -> float:
    return _cpu_of(redis.proc.pid) if redis.proc is not None else 0.0


def _figures(res: loadgen.LoadResult, wx: float, pg: float, rd: float) -> dict[str, float]:
    per = 10_000 / max(1, res.delivered)
    s = res.summary()
    return {
        "rate": float(s["delivered_per_s"]),
        "wxnet": wx * per,
        "pg": pg * per,
        "redis": rd * per,
        "loadgen": res.cpu_seconds * per,
        "lost": float(s["lost"]),
        "dups": float(s["duplicates"]),
        "p50": float(s["latency_ms"]["p50"]),
        "p99": float(s["latency_ms"]["p99"]),
    }


async def mqtt_run(args: argparse.Namespace) -> dict[str, float]:
    from bench import mqtt_load

    with mqtt_load.Broker() as broker:
        res = await mqtt_load.run_mqtt(
            "127.0.0.1", broker.port, 2 * args.pairs, args.messages, window=args.window * 50,
            broker_pid=broker.pid,
        )  # fmt: skip
    return _figures(res, res.server_cpu_seconds or 0.0, 0.0, 0.0)


async def xmpp_run(args: argparse.Namespace) -> dict[str, float]:
    from bench import xmpp_load

    with xmpp_load.Ejabberd() as server:
        res = await xmpp_load.run_xmpp(
            "127.0.0.1", server.port, 2 * args.pairs, args.messages, window=args.window * 50,
            server_pid=server.pid,
        )  # fmt: skip
    return _figures(res, res.server_cpu_seconds or 0.0, 0.0, 0.0)


def _shown(kind: str, r: dict[str, float]) -> dict[str, float]:
    """Print one run's figures at once (stderr), so a later failure loses nothing."""
    print(f"{kind}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()), file=sys.stderr)
    return r


def _med(runs: list[dict[str, float]]) -> dict[str, float]:
    return {f: statistics.median(r[f] for r in runs) for f in runs[0]}


async def main_async(args: argparse.Namespace) -> None:
    pg = PostgresServer()
    pg.start()
    redis = RedisServer()
    redis.start()
    kinds = (*KINDS, BASE) if args.compare else KINDS
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in (*kinds, "mqtt", "xmpp")}
    paced: dict[str, dict[str, float]] = {}
    try:
        for _ in range(args.rounds):
            for kind in kinds:  # alternate A/B/C
                runs[kind].append(_shown(kind, await one_run(kind, pg, redis, args)))
            runs["mqtt"].append(_shown("mqtt", await mqtt_run(args)))
            runs["xmpp"].append(_shown("xmpp", await xmpp_run(args)))
        for kind in KINDS:
            try:
                paced[kind] = _shown(kind, await one_run(kind, pg, redis, args, rate=args.rate))
            except loadgen.LoadError as exc:  # a loaded machine: say so, keep the rest
                print(f"paced run of {kind} failed: {exc}", file=sys.stderr)
    finally:
        redis.close()
        pg.close()
    med = {k: _med(v) for k, v in runs.items()}
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
    print(
        "| server | delivered msg/s | wxnet CPU-s / 10k | PostgreSQL CPU-s / 10k |"
        " Redis CPU-s / 10k | lost / dups |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for k in (*kinds, "mqtt", "xmpp"):
        m = med[k]
        eng = k.startswith("pg")
        pgc, rdc = (f"{m['pg']:.2f}", f"{m['redis']:.2f}") if eng else ("-", "-")
        print(
            f"| {LABELS[k]} | {m['rate']:,.0f} | {m['wxnet']:.2f} | {pgc} | {rdc} | "
            f"{m['lost']:.0f} / {m['dups']:.0f} |"
        )
    sq, p1, p2 = med["sqlite"]["wxnet"], med["pg1"]["wxnet"], med["pg2"]["wxnet"]
    engines = med["pg2"]["pg"] + med["pg2"]["redis"]
    print(f"\nwxnet CPU per delivery, PostgreSQL 1 worker / SQLite: {p1 / sq:.2f} (target <= 1.3)")
    print(f"wxnet CPU per delivery, 2 workers / 1 worker: {p2 / p1:.2f} (target <= 1.2)")
    if args.compare:
        b = med[BASE]["wxnet"]
        print(f"wxnet CPU per delivery, PostgreSQL 1 worker, this tree / before: {p1 / b:.2f}")
    print(
        f"PostgreSQL + Redis per 10k with 2 workers: {engines:.2f} s vs wxnet {p2:.2f} s "
        "(target: less)"
    )
    total = p2 + engines
    print(
        f"cores per 10,000 msg/s (2 workers, wxnet + PostgreSQL + Redis): {total:.2f}; "
        f"the same for Mosquitto: {med['mqtt']['wxnet']:.2f}, for ejabberd: "
        f"{med['xmpp']['wxnet']:.2f}"
    )
    print(f"\nat {args.rate:,.0f} msg/s offered, {args.rate_messages} messages:\n")
    print("| server | delivered msg/s | p50 ms | p99 ms |")
    print("| --- | --- | --- | --- |")
    for k in (k for k in KINDS if k in paced):
        m = paced[k]
        print(f"| {LABELS[k]} | {m['rate']:,.0f} | {m['p50']:.1f} | {m['p99']:.1f} |")
    print("\nper-round values:")
    for k, v in runs.items():
        print(f"- {k}: " + ", ".join(f"{r['rate']:,.0f} msg/s {r['wxnet']:.2f} s" for r in v))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--rate-messages", type=int, default=10_000)
    ap.add_argument("--compare", metavar="DIR", help="also the PostgreSQL server of checkout DIR")
    args = ap.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
