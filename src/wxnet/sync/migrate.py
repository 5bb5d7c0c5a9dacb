"""Copy an embedded SQLite store into PostgreSQL (``wxnet store migrate``), and create
a PostgreSQL store (``wxnet store init --config``).

The copy goes table by table in primary-key order, in batches. Each batch and the
position it reached (table ``wx_migration``) commit in one PostgreSQL transaction, so an
interrupted migration (Ctrl-C, a crash, PostgreSQL restarting) goes on from the last
committed batch when run again, and never copies a row twice. After the last table the
derived state is rebuilt: the per-account log heads from the logs, and the id sequences
(accounts, items, message-id blocks) moved past the copied ids.

Then :func:`verify` checks it: the row count of every table on both sides, and a sync of
every account (its whole log read through :class:`PostgresStore`, the server's own read
path, compared item by item with the SQLite log, and its heads). The source is only
read; the server using it must be stopped first (rows it changed during the copy would
show up as a count mismatch).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from wxnet.sync.pg_schema import ID_BLOCK
from wxnet.sync.schema import SCHEMA_VERSION, read_schema_version
from wxnet.sync.sqlite_store import FIRST_MSG_ID

__all__ = [
    "TABLES",
    "MigrateError",
    "Progress",
    "init_postgres",
    "migrate",
    "pg_version",
    "verify",
]

#: (table, primary-key columns), in copy order (sessions reference accounts).
TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("accounts", ("uin",)),
    ("sessions", ("sid",)),
    ("devices", ("uin", "device_id")),
    ("contacts", ("owner", "peer")),
    ("contact_marks", ("owner", "peer")),
    ("chatrooms", ("name",)),
    ("room_members", ("room", "member")),
    ("messages", ("msg_id",)),
    ("items", ("id",)),
    ("sync_log", ("uin", "key", "seq")),
    ("web_sessions", ("key",)),
    ("uploads", ("owner", "client_id", "kind")),
)

#: SQLite keeps booleans as 0/1 integers; PostgreSQL has a type for them.
_BOOLEANS = {
    "messages": ("revoked",),
    "web_sessions": ("alive",),
    "contact_marks": ("pinned",),
}
_KEYS = (1, 2, 3, 11)

_PROGRESS_DDL = """
CREATE TABLE IF NOT EXISTS wx_migration (
    tbl text PRIMARY KEY,
    last text,            -- JSON of the last copied row's primary key
    copied bigint NOT NULL,
    done boolean NOT NULL
);
CREATE TABLE IF NOT EXISTS wx_migration_source (
    one int PRIMARY KEY CHECK (one = 1),
    source text NOT NULL
);
"""


class MigrateError(RuntimeError):
    """The migration cannot start or go on; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a copy is: ``table`` has ``copied`` of ``total`` rows in PostgreSQL."""

    table: str
    copied: int
    total: int
    done: bool


async def _connect(dsn: str, timeout: float) -> asyncpg.Connection:
    from wxnet.sync.pg_store import connect_error

    try:
        return await asyncpg.connect(dsn, timeout=timeout, command_timeout=timeout * 30)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise MigrateError(f"cannot connect to PostgreSQL: {connect_error(exc)}") from None


async def init_postgres(dsn: str, timeout: float = 10.0) -> tuple[int | None, int]:
    """Create the PostgreSQL store's schema if missing; (version before, version now).

    Raises:
        MigrateError: PostgreSQL cannot be reached.
        StoreUnavailable, StoreTooNew: as :meth:`PostgresStore.start`.
    """
    conn = await _connect(dsn, timeout)
    try:
        before = await _pg_version(conn)
    finally:
        await conn.close()
    store = _pg_store(dsn, timeout)
    await store.start(lambda _changes: None)
    try:
        return before, store.schema_version()
    finally:
        await store.aclose()


async def pg_version(dsn: str, timeout: float = 10.0) -> int | None:
    """The schema version of the PostgreSQL store at ``dsn`` (None: no store there)."""
    conn = await _connect(dsn, timeout)
    try:
        return await _pg_version(conn)
    finally:
        await conn.close()


async def _pg_version(conn: asyncpg.Connection) -> int | None:
    if await conn.fetchval("SELECT to_regclass('meta')") is None:
        return None
    v = await conn.fetchval("SELECT v FROM meta WHERE k='schema_version'")
    return None if v is None else int(v)


def _pg_store(dsn: str, timeout: float) -> Any:
    from wxnet.sync.engine import profile_item
    from wxnet.sync.pg_store import PostgresStore

    return PostgresStore(dsn, profile_item=profile_item, min_size=1, max_size=2, timeout=timeout)


def _open_source(path: Path) -> sqlite3.Connection:
    version = read_schema_version(path)  # raises SchemaError (not a store, too new)
    if version is None:
        raise MigrateError(f"no store at {path}")
    if version != SCHEMA_VERSION:
        raise MigrateError(
            f"{path} has schema {version}; bring it to {SCHEMA_VERSION} first "
            f"(`wxnet store init --data {path.parent}`)"
        )
    return sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)


def _columns(src: sqlite3.Connection, table: str) -> list[str]:
    return [str(r[1]) for r in src.execute(f"PRAGMA table_info({table})")]


async def _claim_target(conn: asyncpg.Connection, source: str) -> None:
    """Refuse a target that holds another store, or another source's migration."""
    await conn.execute(_PROGRESS_DDL)
    had = await conn.fetchval("SELECT source FROM wx_migration_source")
    if had is not None and had != source:
        raise MigrateError(f"the target holds a migration from {had}, not from {source}")
    if had is None:
        if await conn.fetchval("SELECT count(*) FROM accounts") > 0:
            raise MigrateError(
                "the target already holds accounts: migrate into an empty database (or schema)"
            )
        await conn.execute("INSERT INTO wx_migration_source VALUES (1, $1)", source)


async def migrate(
    source: Path,
    dsn: str,
    *,
    batch: int = 2000,
    timeout: float = 10.0,
    on_progress: Callable[[Progress], None] | None = None,
) -> dict[str, int]:
    """Copy the SQLite store at ``source`` into the PostgreSQL store at ``dsn`` (created
    if missing), resuming a migration interrupted before; returns the rows per table.

    Raises:
        MigrateError: the source or target cannot be used (message says why).
        SchemaError: the source is not a wxnet store, or is newer than this wxnet.
    """
    src = _open_source(source)
    try:
        await init_postgres(dsn, timeout)
        conn = await _connect(dsn, timeout)
        try:
            await _claim_target(conn, str(source.resolve()))
            counts = {}
            for table, pk in TABLES:
                counts[table] = await _copy_table(src, conn, table, pk, batch, on_progress)
            await _rebuild_derived(conn)
            return counts
        finally:
            await conn.close()
    finally:
        src.close()


async def _copy_table(
    src: sqlite3.Connection,
    conn: asyncpg.Connection,
    table: str,
    pk: tuple[str, ...],
    batch: int,
    on_progress: Callable[[Progress], None] | None,
) -> int:
    total = int(src.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    row = await conn.fetchrow("SELECT last, copied, done FROM wx_migration WHERE tbl=$1", table)
    last: list[Any] | None = json.loads(row["last"]) if row and row["last"] else None
    copied = int(row["copied"]) if row else 0
    if row and row["done"]:
        if on_progress:
            on_progress(Progress(table, copied, total, True))
        return copied
    cols = _columns(src, table)
    flags = [c in _BOOLEANS.get(table, ()) for c in cols]
    at = [cols.index(c) for c in pk]
    order = ", ".join(pk)
    after = f"WHERE ({order}) > ({', '.join('?' * len(pk))})"
    while True:
        sql = f"SELECT {', '.join(cols)} FROM {table} {after if last else ''} ORDER BY {order}"
        rows = src.execute(f"{sql} LIMIT ?", (*(last or ()), batch)).fetchall()
        if not rows:
            break
        records = [
            tuple(
                bool(v) if flag and v is not None else v for v, flag in zip(r, flags, strict=True)
            )
            for r in rows
        ]
        last = [rows[-1][i] for i in at]
        copied += len(rows)
        async with conn.transaction():
            await conn.copy_records_to_table(table, records=records, columns=cols)
            await conn.execute(
                "INSERT INTO wx_migration VALUES ($1, $2, $3, false) ON CONFLICT (tbl)"
                " DO UPDATE SET last=EXCLUDED.last, copied=EXCLUDED.copied",
                table,
                json.dumps(last),
                copied,
            )
        if on_progress:
            on_progress(Progress(table, copied, total, False))
    await conn.execute(
        "INSERT INTO wx_migration VALUES ($1, NULL, $2, true) ON CONFLICT (tbl)"
        " DO UPDATE SET done=true, copied=EXCLUDED.copied",
        table,
        copied,
    )
    if on_progress:
        on_progress(Progress(table, copied, total, True))
    return copied


async def _rebuild_derived(conn: asyncpg.Connection) -> None:
    """What the PostgreSQL store keeps beside the tables: heads and id sequences."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO heads SELECT uin, key, max(seq) FROM sync_log GROUP BY uin, key"
            " ON CONFLICT (uin, key) DO UPDATE SET seq=EXCLUDED.seq"
        )
        await conn.execute(
            "INSERT INTO heads SELECT a.uin, k, 0 FROM accounts a, unnest($1::int[]) k"
            " ON CONFLICT DO NOTHING",
            list(_KEYS),
        )
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('accounts', 'uin'),"
            " greatest((SELECT max(uin) FROM accounts), 1))"
        )
        await conn.execute("SELECT setval('item_ids', greatest((SELECT max(id) FROM items), 1))")
        top = await conn.fetchval("SELECT max(msg_id) FROM messages")
        if top is not None:
            # the next block a process takes starts above every copied id
            block = max(0, (int(top) - FIRST_MSG_ID) // ID_BLOCK + 1)
            await conn.execute("SELECT setval('msg_id_blocks', $1, false)", block)


async def verify(
    source: Path,
    dsn: str,
    *,
    timeout: float = 10.0,
    on_account: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Compare the copy with its source; returns the differences (empty: verified).

    Counts every table on both sides, then syncs every account from PostgreSQL through
    :class:`PostgresStore` (its whole log, in windows as a client would) and compares it
    with the SQLite log, and the heads. ``on_account(done, total)`` reports progress.
    """
    src = _open_source(source)
    problems: list[str] = []
    try:
        conn = await _connect(dsn, timeout)
        try:
            for table, _pk in TABLES:
                a = int(src.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
                b = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
                if a != b:
                    problems.append(f"{table}: {a} rows in SQLite, {b} in PostgreSQL")
        finally:
            await conn.close()
        store = _pg_store(dsn, timeout)
        await store.start(lambda _changes: None)
        try:
            uins = [int(r[0]) for r in src.execute("SELECT uin FROM accounts ORDER BY uin")]
            for n, uin in enumerate(uins, 1):
                problems += await _verify_account(src, store, uin)
                if on_account:
                    on_account(n, len(uins))
        finally:
            await store.aclose()
    finally:
        src.close()
    return problems


async def _verify_account(src: sqlite3.Connection, store: Any, uin: int) -> list[str]:
    want = [
        (int(k), int(s), bytes(b))
        for k, s, b in src.execute(
            "SELECT l.key, l.seq, i.body FROM sync_log l JOIN items i ON i.id = l.item"
            " WHERE l.uin=? ORDER BY l.key, l.seq",
            (uin,),
        )
    ]
    got: list[tuple[int, int, bytes]] = []
    pos = dict.fromkeys(_KEYS, 0)
    for key in {k for k, _, _ in want} - set(_KEYS):
        pos[key] = 0
    while True:  # newsync's loop: windows until no key has more
        items, more = await store.read_log(uin, sorted(pos.items()), 500, 1 << 20)
        for k, s, body in items:
            got.append((k, s, body))
            pos[k] = s
        if not more:
            break
    got.sort(key=lambda x: (x[0], x[1]))
    if got != want:
        return [f"account {uin}: its log differs ({len(want)} items in SQLite, {len(got)} synced)"]
    for key in pos:
        top = max((s for k, s, _ in want if k == key), default=0)
        head = await store.head(uin, key, fresh=True)
        if head != top:
            return [f"account {uin}: head of log {key} is {head}, the last item {top}"]
    return []
