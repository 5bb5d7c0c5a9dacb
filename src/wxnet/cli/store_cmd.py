"""``wxnet store init|version``: create the server's store explicitly, or say what it is.

Only ``wxnet serve`` and ``wxnet store init`` create a store; ``wxnet user`` refuses a
directory without one (a typo in ``--data`` must not make a second, empty store).
"""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path
from typing import Any

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
    i.set_defaults(func=cmd_init)
    v = ssub.add_parser("version", help="the store's schema version (changes nothing)")
    v.add_argument("--data", type=Path, default=Path("var"), help="data directory (default ./var)")
    v.set_defaults(func=cmd_version)


def store_path(data: Path) -> Path:
    return data / STORE_FILE


def cmd_init(args: argparse.Namespace, io: IO) -> int:
    from wxnet.sync.db import connect, private_dir

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
