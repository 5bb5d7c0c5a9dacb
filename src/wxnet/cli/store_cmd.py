"""``wxnet store init|version|migrate``: create the server's store explicitly, say what
it is, or copy an SQLite store into PostgreSQL.

Only ``wxnet serve`` and ``wxnet store init`` create a store; ``wxnet user`` refuses a
directory without one (a typo in ``--data`` must not make a second, empty store). With
``--config FILE`` whose ``[store] kind = "postgres"``, init and version act on that
PostgreSQL store instead of the data directory.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from wxnet.cli.common import IO, ExitStatus, UsageError
from wxnet.sync.schema import SCHEMA_VERSION, SchemaError, init_schema, read_schema_version

__all__ = ["STORE_FILE", "register", "store_path"]

#: The store's file inside the data directory.
STORE_FILE = "wxnet.db"


def register(sub: Any) -> None:
    p = sub.add_parser("store", help="create the server's store, or show its schema version")
    ssub = p.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    i = ssub.add_parser(
        "init", help="create an empty store in the data directory (or migrate an older one)"
    )
    i.add_argument("--data", type=Path, default=Path("var"), help="data directory (default ./var)")
    i.add_argument("--config", type=Path, help="the server's TOML file: its [store] is used")
    i.set_defaults(func=cmd_init)
    v = ssub.add_parser("version", help="the store's schema version (changes nothing)")
    v.add_argument("--data", type=Path, default=Path("var"), help="data directory (default ./var)")
    v.add_argument("--config", type=Path, help="the server's TOML file: its [store] is used")
    v.set_defaults(func=cmd_version)
    m = ssub.add_parser(
        "migrate",
        help="copy an SQLite store into PostgreSQL (resumable), then verify the copy",
        description="Copy the SQLite store of a data directory into a PostgreSQL database "
        "(created there if missing), table by table in batches. Run it again after an "
        "interruption: it goes on where it stopped. Then every table's rows are counted on "
        "both sides and every account's log is synced from PostgreSQL and compared. Stop "
        "the server that uses the directory first; media files stay in the directory.",
    )
    m.add_argument("--from", dest="source", type=Path, required=True, help="data directory")
    m.add_argument("--to", dest="dsn", required=True, help="postgresql://user@host:port/db")
    m.add_argument("--batch", type=int, default=2000, help="rows per transaction (2000)")
    m.add_argument("--timeout", type=float, default=10.0, help="seconds to connect (10)")
    m.set_defaults(func=cmd_migrate)


def store_path(data: Path) -> Path:
    return data / STORE_FILE


def _postgres(config: Path | None) -> tuple[str, float] | None:
    """(dsn, timeout) when ``--config`` names a PostgreSQL store, else None."""
    if config is None:
        return None
    from wxnet.server.config import ConfigError, load_config

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    return (cfg.store.dsn, cfg.store.timeout) if cfg.store.kind == "postgres" else None


def _init_postgres(dsn: str, timeout: float, io: IO) -> int:
    from wxnet.proto.errors import MMError
    from wxnet.server.config import redact
    from wxnet.sync.migrate import MigrateError, init_postgres
    from wxnet.sync.schema import SchemaError

    try:
        before, version = asyncio.run(init_postgres(dsn, timeout))
    except (MigrateError, SchemaError) as exc:
        io.error(f"{redact(dsn)}: {exc}")
        return ExitStatus.ERROR
    except MMError as exc:
        io.error(f"{redact(dsn)}: {exc.message}")
        return ExitStatus.ERROR
    if before is None:
        io.print(f"created store {redact(dsn)} (schema {version})")
    elif before < version:
        io.print(f"store {redact(dsn)}: migrated from schema {before} to {version}")
    else:
        io.print(f"store {redact(dsn)} exists (schema {version})")
    return ExitStatus.OK


def cmd_init(args: argparse.Namespace, io: IO) -> int:
    from wxnet.sync.db import connect, private_dir

    pg = _postgres(args.config)
    if pg is not None:
        return _init_postgres(*pg, io)
    path = store_path(args.data)
    try:
        before = read_schema_version(path)
        private_dir(args.data)  # 0700, as `wxnet serve` makes it
        conn = connect(path)
        try:
            version = init_schema(conn)
        finally:
            conn.close()
    except SchemaError as exc:
        raise UsageError(f"{path}: {exc}") from None
    except (OSError, sqlite3.Error) as exc:
        raise UsageError(f"cannot create the store in {args.data.resolve()}: {exc}") from None
    if before is None:
        io.print(f"created store {path} (schema {version})")
    elif before < version:
        io.print(f"store {path}: migrated from schema {before} to {version}")
    else:
        io.print(f"store {path} exists (schema {version})")
    return ExitStatus.OK


def cmd_version(args: argparse.Namespace, io: IO) -> int:
    pg = _postgres(args.config)
    if pg is not None:
        from wxnet.server.config import redact
        from wxnet.sync.migrate import MigrateError, pg_version
        from wxnet.sync.pg_schema import SCHEMA_VERSION as PG_VERSION

        try:
            found = asyncio.run(pg_version(*pg))
        except MigrateError as exc:
            io.error(f"{redact(pg[0])}: {exc}")
            return ExitStatus.ERROR
        if found is None:
            io.error(f"no store in {redact(pg[0])} (`wxnet store init --config FILE`)")
            return ExitStatus.ERROR
        note = f" (this wxnet migrates it to {PG_VERSION})" if found < PG_VERSION else ""
        io.print(f"store {redact(pg[0])}: schema {found}{note}")
        return ExitStatus.OK
    path = store_path(args.data)
    try:
        version = read_schema_version(path)
    except SchemaError as exc:
        io.error(f"{path}: {exc}")
        return ExitStatus.ERROR
    if version is None:
        io.error(f"no store in {args.data.resolve()} (`wxnet store init --data {args.data}`)")
        return ExitStatus.ERROR
    note = "" if version == SCHEMA_VERSION else f" (this wxnet migrates it to {SCHEMA_VERSION})"
    io.print(f"store {path}: schema {version}{note}")
    return ExitStatus.OK


class ProgressBar:
    """One line per table on ``stream``: redrawn in place on a terminal (at most ten
    times a second), printed once when the table is done otherwise."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self._drawn = 0.0

    def __call__(self, p: Any) -> None:
        now = time.monotonic()
        if not p.done and (not self.tty or now - self._drawn < 0.1):
            return
        self._drawn = now
        frac = p.copied / p.total if p.total else 1.0
        fill = int(frac * self.width)
        bar = "#" * fill + "." * (self.width - fill)
        line = f"{p.table:<13} [{bar}] {p.copied:>9}/{p.total:<9} {int(frac * 100):3d}%"
        self.stream.write(("\r" if self.tty else "") + line + ("\n" if p.done else ""))
        self.stream.flush()


def cmd_migrate(args: argparse.Namespace, io: IO) -> int:
    from wxnet.server.config import redact
    from wxnet.sync.migrate import MigrateError, migrate, verify
    from wxnet.sync.schema import SchemaError

    if not args.dsn.startswith(("postgres://", "postgresql://")):
        raise UsageError("--to must be a PostgreSQL URI: postgresql://user@host:port/db")
    if args.batch < 1:
        raise UsageError("--batch must be at least 1")
    source = store_path(args.source)
    where = redact(args.dsn)
    bar = ProgressBar(io.err if io.err is not None else sys.stderr)
    try:
        counts = asyncio.run(
            migrate(source, args.dsn, batch=args.batch, timeout=args.timeout, on_progress=bar)
        )
        io.print(
            f"copied {source} into {where}: " + ", ".join(f"{n} {t}" for t, n in counts.items())
        )
        problems = asyncio.run(verify(source, args.dsn, timeout=args.timeout))
    except (MigrateError, SchemaError) as exc:
        io.error(f"cannot migrate: {exc}")
        return ExitStatus.ERROR
    except KeyboardInterrupt:
        io.error("interrupted: run the same command again to go on where it stopped")
        return ExitStatus.INTERRUPTED
    for text in problems:
        io.error(f"verify: {text}")
    if problems:
        return ExitStatus.ERROR
    io.print(
        f"verified: every table has the same rows in both stores, and the logs of all "
        f"{counts['accounts']} accounts sync the same from {where}"
    )
    return ExitStatus.OK
