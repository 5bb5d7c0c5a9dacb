"""How to insert a group commit's rows into PostgreSQL (issue 13), run by hand:

    .venv/bin/python -m bench.pg_insert [--groups 300] [--size 32] [--rounds 3]

One group = ``size`` messages: ``size`` item bodies (150 bytes) and 2 x ``size``
sync_log rows (sender and recipient), in one transaction, inserted three ways:
``executemany`` (one statement per row, pipelined by asyncpg), ``unnest`` (one
statement per table with array arguments, as ``wx_commit`` does) and ``COPY``
(``copy_records_to_table``, one per table). Reports, medians over alternating rounds, the
client's CPU and the PostgreSQL backend's CPU per 10,000 messages and the wall time per
group. PostgreSQL is a private server started here from the Debian packages (as the tests
do).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

from tests.engines import PostgresServer

DDL = """
CREATE TABLE items (id bigint PRIMARY KEY, body bytea NOT NULL);
CREATE TABLE sync_log (uin bigint, key int, seq bigint, item bigint,
                       PRIMARY KEY (uin, key, seq));
"""

if TYPE_CHECKING:
    Conn = asyncpg.Connection[Any]
Rows = tuple[list[tuple[int, bytes]], list[tuple[int, int, int, int]]]


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rows(group: int, size: int) -> Rows:
    base = group * size
    items = [(base + i, b"x" * 150) for i in range(size)]
    log = [(u, 2, base + i, base + i) for i in range(size) for u in (1 + i % 40, 41 + i % 40)]
    return items, log


async def by_executemany(c: Conn, r: Rows) -> None:
    await c.executemany("INSERT INTO items VALUES ($1, $2)", r[0])
    await c.executemany("INSERT INTO sync_log VALUES ($1, $2, $3, $4)", r[1])


async def by_unnest(c: Conn, r: Rows) -> None:
    await c.execute(
        "INSERT INTO items SELECT * FROM unnest($1::bigint[], $2::bytea[])",
        [i for i, _ in r[0]],
        [b for _, b in r[0]],
    )
    await c.execute(
        "INSERT INTO sync_log SELECT * FROM unnest($1::bigint[], $2::int[], $3::bigint[],"
        " $4::bigint[])",
        *([row[k] for row in r[1]] for k in range(4)),
    )


async def by_copy(c: Conn, r: Rows) -> None:
    await c.copy_records_to_table("items", records=r[0])
    await c.copy_records_to_table("sync_log", records=r[1])


WAYS: dict[str, Callable[[Conn, Rows], Awaitable[None]]] = {
    "executemany": by_executemany,
    "unnest": by_unnest,
    "COPY": by_copy,
}


async def one(pg: PostgresServer, way: str, groups: int, size: int) -> dict[str, float]:
    dsn = pg.new_database()
    c: Conn = await asyncpg.connect(dsn)
    try:
        await c.execute(DDL)
        backend = int(await c.fetchval("SELECT pg_backend_pid()"))
        fn = WAYS[way]
        data = [rows(g, size) for g in range(groups)]
        cpu0, pg0, t0 = time.process_time(), _cpu(backend), time.perf_counter()
        for r in data:
            async with c.transaction():
                await fn(c, r)
        cpu1, pg1, t1 = time.process_time(), _cpu(backend), time.perf_counter()
    finally:
        await c.close()
    per = 10_000 / (groups * size)
    return {
        "client": (cpu1 - cpu0) * per,
        "pg": (pg1 - pg0) * per,
        "ms": (t1 - t0) / groups * 1000,
    }


async def main_async(args: argparse.Namespace) -> None:
    pg = PostgresServer()
    pg.start()
    runs: dict[str, list[dict[str, float]]] = {w: [] for w in WAYS}
    try:
        for _ in range(args.rounds):
            for way in WAYS:  # alternate
                runs[way].append(await one(pg, way, args.groups, args.size))
    finally:
        pg.close()
    load = os.getloadavg()
    print(
        f"{args.groups} groups of {args.size} messages ({args.size} items, {2 * args.size} "
        f"log rows), {args.rounds} rounds alternating, medians; load {load[0]:.1f}\n"
    )
    print("| way | client CPU-s / 10k msgs | PostgreSQL CPU-s / 10k msgs | ms per group |")
    print("| --- | --- | --- | --- |")
    for way, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(f"| {way} | {med['client']:.3f} | {med['pg']:.3f} | {med['ms']:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=300)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
