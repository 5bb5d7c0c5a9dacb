"""``wxnet user add|list``: manage accounts in the store (also while the server runs); with
``--config`` naming a PostgreSQL store, in that store.

The store must exist (``wxnet serve`` or ``wxnet store init`` creates it): a ``--data``
that holds none is refused with the directory named, not given a new empty store.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from wxnet.cli.common import IO, ExitStatus, UsageError
from wxnet.cli.store_cmd import store_path
from wxnet.proto.errors import MMError
from wxnet.server.config import ConfigError, StoreConfig, load_config
from wxnet.sync.db import connect
from wxnet.sync.engine import add_user_sync, profile_item
from wxnet.sync.schema import SchemaError, init_schema


def register(sub: Any) -> None:
    p = sub.add_parser("user", help="manage accounts in the server's store")
    usub = p.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    a = usub.add_parser("add", help="create an account")
    a.add_argument("name", help="user name: 3-32 characters, lowercase letter first")
    a.add_argument(
        "--password",
        help="the password (at least 6 characters; default: $WXNET_PASSWORD)",
    )
    a.add_argument("--nick", help="display name (default: the user name)")
    a.add_argument("--data", type=Path, default=Path("var"), help="data directory (default ./var)")
    a.add_argument(
        "--config",
        type=Path,
        help='the server\'s TOML file: with [store] kind = "postgres" the account goes there',
    )
    a.add_argument("--json", action="store_true", help="print the result as JSON")
    a.set_defaults(func=cmd_add)
    ls = usub.add_parser("list", help="list accounts")
    ls.add_argument("--data", type=Path, default=Path("var"), help="data directory (default ./var)")
    ls.add_argument(
        "--config",
        type=Path,
        help='the server\'s TOML file: with [store] kind = "postgres" the accounts are read there',
    )
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=cmd_list)


def _open(data: Path) -> sqlite3.Connection:
    path = store_path(data)
    if not path.is_file():
        raise UsageError(
            f"no store in {data.resolve()}: give the server's --data, or create one "
            f"(`wxnet serve --data {data}` or `wxnet store init --data {data}`)"
        )
    try:
        conn = connect(path)
    except (OSError, sqlite3.Error) as exc:
        raise UsageError(f"cannot open the store {path}: {exc}") from None
    try:
        init_schema(conn)  # an older store is migrated, as `wxnet serve` would
    except (SchemaError, sqlite3.Error) as exc:
        conn.close()
        raise UsageError(f"{path}: {exc}") from None
    return conn


def _store_config(path: Path) -> StoreConfig:
    try:
        return load_config(path).store
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


async def _add_shared(args: argparse.Namespace, password: str) -> int:
    """Create the account through the configured shared store (the Store interface)."""
    from wxnet.sync.engine import Engine
    from wxnet.sync.pg_store import PostgresStore

    sc = _store_config(args.config)
    store = PostgresStore(sc.dsn, profile_item=profile_item, min_size=1, max_size=2)
    eng = Engine(args.data, store=store)
    try:
        await eng.start()
        return await eng.add_user(args.name, password, args.nick)
    except MMError as exc:
        raise UsageError(exc.message) from None
    finally:
        await eng.aclose()


def cmd_add(args: argparse.Namespace, io: IO) -> int:
    password = args.password or os.environ.get("WXNET_PASSWORD")
    if not password:
        raise UsageError("give --password (or set WXNET_PASSWORD)")
    if args.config is not None and _store_config(args.config).kind == "postgres":
        uin = asyncio.run(_add_shared(args, password))
    else:
        conn = _open(args.data)
        try:
            uin = add_user_sync(conn, args.name, password, args.nick, time.time())
        except MMError as exc:
            raise UsageError(exc.message) from None
        finally:
            conn.close()
    if args.json:
        io.json({"uin": uin, "user_name": args.name, "nick_name": args.nick or args.name})
    else:
        io.print(f"created user {args.name} (uin {uin})")
    return ExitStatus.OK


#: Accounts read from PostgreSQL per round trip by ``wxnet user list``.
LIST_PAGE = 1000


async def _list_shared(args: argparse.Namespace, io: IO) -> None:
    """Print every account of the configured shared store, a page at a time."""
    from wxnet.sync.pg_store import PostgresStore

    sc = _store_config(args.config)
    store = PostgresStore(sc.dsn, profile_item=profile_item, min_size=1, max_size=1)
    try:
        await store.start(lambda _ch: None)
        after = 0
        while page := await store.list_accounts(after, LIST_PAGE):
            for a in page:
                _print_account(args, io, a.uin, a.user_name, a.nick_name, a.created)
            after = page[-1].uin
    except MMError as exc:
        raise UsageError(exc.message) from None
    finally:
        await store.aclose()


def cmd_list(args: argparse.Namespace, io: IO) -> int:
    if args.config is not None and _store_config(args.config).kind == "postgres":
        asyncio.run(_list_shared(args, io))
        return ExitStatus.OK
    conn = _open(args.data)
    try:
        rows = conn.execute(
            "SELECT uin, user_name, nick_name, created FROM accounts ORDER BY uin"
        ).fetchall()
    finally:
        conn.close()
    for uin, name, nick, created in rows:
        _print_account(args, io, uin, name, nick, created)
    return ExitStatus.OK


def _print_account(
    args: argparse.Namespace, io: IO, uin: int, name: str, nick: str, created: int
) -> None:
    if args.json:
        io.json({"uin": uin, "user_name": name, "nick_name": nick, "created": created})
    else:
        io.print(f"{uin:>8}  {name:<32} {nick}")
