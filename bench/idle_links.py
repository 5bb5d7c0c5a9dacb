"""Memory per idle identified long link, with accounts in real use (issue 11), run by hand:

    .venv/bin/python -m bench.idle_links [--accounts 2000 10000] [--compare DIR] [--rounds R]
        [--active-accounts A] [--tail-total-bytes B] [--page-cache-kib K]

For each N: N accounts, each on its own long link of a real ``wxnet serve`` (uvloop,
SQLite), logged in over the real protocol the way a phone does it (``manualauth``, a
``newinit`` through the shared sync driver, ``identify`` asking for push with data);
then every account adds ``--contacts`` contacts (``verifyuser``, the server in
``contacts = "open"`` mode, so each account has twice that many), sends ``--messages``
messages to them (``newsendmsg``; the recipients get pushes) and syncs and commits its
key (``newsync``), so every per-account cache of the server is as warm as in use (up to
its bound, ``[sync] active_accounts``, which ``--active-accounts`` sets). Then
the links stay idle for ``--settle`` seconds and the server's resident set (VmRSS) is
read. The result is the RSS growth per link over those N accounts, measured after a
warm-up of ``--warmup`` accounts that went through the same steps first (so one-off
costs, such as the first use of a code path, are not counted per link).

The baseline in the same run is a bare uvloop server holding N plain connections
(:func:`bench.server_bench.bare_bytes_per_link`): the cost of a socket and a transport,
under which no server's idle link can go. ``--compare DIR`` also measures the server of
the checkout in DIR (its ``src`` on the server's PYTHONPATH, its own code creating the
store), alternating which goes first per round, and prints the medians and the ratio.

Accounts are created straight in the store by the server's own ``add_user_sync`` with
one precomputed argon2id hash of cheap parameters (argon2 keeps its parameters in the
hash, and the server verifies whatever a stored hash says), so 10,000 logins over the
protocol take seconds instead of the ~10 minutes that 10,000 default-cost hashes take
on two cores. The memory a hash takes while it runs is freed when it ends, so this does
not change what an idle link holds.

The bench and the server each hold N sockets: the descriptor limit is raised to the
hard limit (at least N + 1,000 is needed; ``ulimit -Hn``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import uvloop

from bench import loadgen
from bench.server_bench import bare_bytes_per_link
from bench.spawn import ServerProcess
from wxnet.proto import wxnet_pb2 as pb

__all__ = ["main", "make_accounts", "measure"]

PASSWORD = "idle-links-pw"

_MAKE_ACCOUNTS = """
import sys, time
from pathlib import Path
from argon2 import PasswordHasher
import wxnet.sync.model as model
from wxnet.sync.db import connect
from wxnet.sync.schema import init_schema
data, password, prefix, n = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
pw_hash = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(password)
model.hash_password = lambda _pw: pw_hash  # one hash for every account
data.mkdir(parents=True, exist_ok=True)
conn = connect(data / "wxnet.db")
init_schema(conn)
conn.execute("PRAGMA synchronous=OFF")  # a bench set-up: no fsync per account
for i in range(n):
    model.add_user_sync(conn, f"{prefix}{i:05d}", password, None, time.time())
conn.close()
"""


def make_accounts(data: Path, prefix: str, n: int, src: str | None = None) -> None:
    """N accounts ``PREFIX00000``.. in a new store in ``data``, made by the code of the
    server that will serve them (``src``'s, or this tree's), one precomputed hash."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = f"{src}/src"
    subprocess.run(
        [sys.executable, "-c", _MAKE_ACCOUNTS, str(data), PASSWORD, prefix, str(n)],
        env=env,
        check=True,
    )


def _config(
    data: Path,
    n: int,
    active_accounts: int | None = None,
    tail_total_bytes: int | None = None,
    page_cache_kib: int | None = None,
) -> Path:
    cfg = data / "idle.toml"
    cfg.write_text(
        f'[server]\nhost = "127.0.0.1"\nlong_port = 0\nhttp_port = 0\ndata = "{data}"\n'
        f"max_connections = {n + 2000}\nmax_connections_per_address = {n + 2000}\n"
        f'[sync]\ncontacts = "open"\nlogin_workers = 2\nlogin_queue = {n + 2000}\n'
        + ("" if active_accounts is None else f"active_accounts = {active_accounts}\n")
        + ("" if tail_total_bytes is None else f"tail_total_bytes = {tail_total_bytes}\n")
        + ("" if page_cache_kib is None else f"page_cache_kib = {page_cache_kib}\n")
    )
    return cfg


async def _each(items: Sequence[Any], fn: Callable[[Any], Awaitable[None]], width: int) -> None:
    """``fn(item)`` for every item, ``width`` at a time."""
    it = iter(items)

    async def worker() -> None:
        for x in it:
            await fn(x)

    await asyncio.gather(*(worker() for _ in range(width)))


async def _use(port: int, names: Sequence[str], contacts: int, messages: int) -> list[Any]:
    """Log ``names`` in (one identified link each), add contacts, send, sync: the
    accounts in use. Returns the users (their links stay open)."""
    users: dict[str, loadgen.User] = {}

    async def login(name: str) -> None:
        users[name] = await loadgen._login("127.0.0.1", port, name, PASSWORD, push=True)

    await _each(names, login, 32)
    ring = list(names)
    n = len(ring)

    async def befriend(i: int) -> None:
        u = users[ring[i]]
        for k in range(1, contacts + 1):
            await u.link.call(
                "verifyuser",
                pb.AddContactRequest(base=u.base(), user_name=ring[(i + k) % n]),
                pb.AddContactResponse,
            )

    await _each(range(n), befriend, 64)

    async def send(i: int) -> None:
        u = users[ring[i]]
        msgs = [
            pb.MicroMsg(
                to_user=ring[(i + 1 + m % contacts) % n],
                content=f"idle-links message {m} from {u.name}",
                msg_type=1,
                client_msg_id=f"il-{u.name}-{m}",
            )
            for m in range(messages)
        ]
        for m in msgs:
            r = await u.link.call(
                "newsendmsg", pb.SendMsgRequest(base=u.base(), list=[m]), pb.SendMsgResponse
            )
            if r.list[0].ret:
                raise loadgen.LoadError(f"send from {u.name}: {r.list[0].err_msg}")

    await _each(range(n), send, 64)

    async def sync(name: str) -> None:
        await loadgen._sync(users[name])

    await _each(names, sync, 64)
    return list(users.values())


async def measure(
    n: int,
    src: str | None,
    *,
    warmup: int = 200,
    contacts: int = 2,
    messages: int = 3,
    settle: float = 5.0,
    active_accounts: int | None = None,
    tail_total_bytes: int | None = None,
    page_cache_kib: int | None = None,
) -> dict[str, Any]:
    """RSS per idle identified link of N accounts in use, on a fresh server of ``src``
    (None: this tree); also the growth after each step and the server's /metrics.
    ``active_accounts`` sets ``[sync] active_accounts`` and ``tail_total_bytes``
    ``[sync] tail_total_bytes``, ``page_cache_kib`` ``[sync] page_cache_kib`` (None:
    the server's defaults)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        make_accounts(data, "il", warmup + n, src)
        cfg = _config(data, n, active_accounts, tail_total_bytes, page_cache_kib)
        srv = ServerProcess.on_config(cfg, python_path=f"{src}/src" if src else None)
        await srv.astart()
        links: list[Any] = []
        try:
            names = [f"il{i:05d}" for i in range(warmup + n)]
            links += await _use(srv.long_port, names[:warmup], contacts, messages)
            await asyncio.sleep(settle)
            before = srv.rss_kib()
            t0, cpu0 = time.monotonic(), srv.cpu()
            links += await _use(srv.long_port, names[warmup:], contacts, messages)
            busy = time.monotonic() - t0
            cpu = srv.cpu() - cpu0
            await asyncio.sleep(settle)
            after = srv.rss_kib()
            metrics = {
                m: srv.metric(m)
                for m in (
                    "wxnet_identified_links",
                    "wxnet_messages_total",
                    "wxnet_sync_tail_bytes",
                    "wxnet_sync_tail_releases",
                    "wxnet_sqlite_memory_bytes",
                    "wxnet_engine_cache_entries",
                )
            }
        finally:
            for u in links:
                u.link.close()
            await srv.astop()
    return {
        "n": n,
        "bytes_per_link": (after - before) * 1024 / n,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "setup_s": round(busy, 1),
        "server_cpu_s": round(cpu, 1),
        "load": os.getloadavg()[0],
        **metrics,
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    builds: list[tuple[str, str | None]] = [("this tree", None)]
    if args.compare:
        builds.append(("baseline", args.compare))
    for n in args.accounts:
        for r in range(args.rounds):
            bare = await bare_bytes_per_link(n)
            rows.append({"n": n, "round": r + 1, "build": "bare uvloop", "bytes_per_link": bare})
            _print(rows[-1])
            for name, src in builds if r % 2 == 0 else builds[::-1]:
                got = await measure(
                    n,
                    src,
                    warmup=args.warmup,
                    contacts=args.contacts,
                    messages=args.messages,
                    settle=args.settle,
                    active_accounts=args.active_accounts if src is None else None,
                    tail_total_bytes=args.tail_total_bytes if src is None else None,
                    page_cache_kib=args.page_cache_kib if src is None else None,
                )
                got.update(round=r + 1, build=name, bare=bare)
                rows.append(got)
                _print(got)
    print("\nmedians (bytes per idle identified link; ratio to the same run's bare server):")
    for n in args.accounts:
        for build in ("bare uvloop", *(b for b, _ in builds)):
            vals = [x["bytes_per_link"] for x in rows if x["n"] == n and x["build"] == build]
            bare = statistics.median(
                x["bytes_per_link"] for x in rows if x["n"] == n and x["build"] == "bare uvloop"
            )
            med = statistics.median(vals)
            print(f"N={n} {build}: {med:,.0f} B ({med / 1024:.2f} KiB), x{med / bare:.2f}")
    return rows


def _print(row: dict[str, Any]) -> None:
    extra = ""
    if "rss_after_kib" in row:
        extra = (
            f", RSS {row['rss_before_kib']} -> {row['rss_after_kib']} KiB, set-up"
            f" {row['setup_s']} s, server CPU {row['server_cpu_s']} s, tail"
            f" {row['wxnet_sync_tail_bytes']:.0f} B (released"
            f" {row['wxnet_sync_tail_releases']:.0f} times), SQLite"
            f" {row['wxnet_sqlite_memory_bytes']:.0f} B, cached entries"
            f" {row['wxnet_engine_cache_entries']:.0f}, load {row['load']:.2f}"
        )
    print(
        f"N={row['n']} round {row['round']} {row['build']}: {row['bytes_per_link']:,.0f} B"
        f" per link{extra}",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.idle_links",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--accounts", type=int, nargs="+", default=[2000, 10000], help="N")
    ap.add_argument("--warmup", type=int, default=200, help="accounts used before 'before'")
    ap.add_argument("--contacts", type=int, default=2, help="contacts each account adds")
    ap.add_argument("--messages", type=int, default=3, help="messages each account sends")
    ap.add_argument("--settle", type=float, default=5.0, help="idle seconds before RSS")
    ap.add_argument(
        "--active-accounts",
        type=int,
        metavar="A",
        help="[sync] active_accounts of this tree's server (default: the server's own)",
    )
    ap.add_argument(
        "--tail-total-bytes",
        type=int,
        metavar="B",
        help="[sync] tail_total_bytes of this tree's server (default: the server's own)",
    )
    ap.add_argument(
        "--page-cache-kib",
        type=int,
        metavar="K",
        help="[sync] page_cache_kib of this tree's server (default: the server's own)",
    )
    ap.add_argument("--compare", metavar="DIR", help="also measure the server of checkout DIR")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", type=Path, help="write every row to this file")
    args = ap.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < max(args.accounts) + args.warmup + 1000:
        ap.error(f"the descriptor limit {hard} is too low for {max(args.accounts)} links")
    print(
        f"# idle links, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{platform.node()} {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        rows = uvloop.run(run(args))
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
