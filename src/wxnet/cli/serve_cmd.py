"""``wxnet serve``: run the messaging server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Any

from wxnet.cli.common import IO, ExitStatus, UsageError
from wxnet.server.config import ConfigError, ServerConfig, load_config


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the messaging server (long link, short link, newgetdns, web API)",
        description="Run the wxnet messaging server. Settings come from defaults, then "
        "--config FILE (TOML), then these flags.",
    )
    p.add_argument("--config", type=Path, help="TOML configuration file (docs/server.md)")
    p.add_argument("--data", type=Path, help="data directory (default ./var)")
    p.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--long-port", type=int, help="long-link port (default 8080; 0 = any)")
    p.add_argument("--http-port", type=int, help="HTTP port (default 8000; 0 = any)")
    p.add_argument(
        "--extra-long-port",
        type=int,
        action="append",
        dest="extra_long_ports",
        help="another long-link port, e.g. 14000 (S14); repeatable",
    )
    p.add_argument("--tls-cert", help="PEM certificate: serve the long link over TLS (S21)")
    p.add_argument("--tls-key", help="PEM private key for --tls-cert")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_serve)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    overrides = {
        "data": args.data,
        "host": args.host,
        "long_port": args.long_port,
        "http_port": args.http_port,
        "extra_long_ports": tuple(args.extra_long_ports) if args.extra_long_ports else None,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "log_level": args.log_level,
    }
    try:
        return load_config(args.config, overrides)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


async def _serve(cfg: ServerConfig, io: IO) -> int:
    from wxnet.proto.errors import MMError
    from wxnet.server.app import start_server, store_description

    try:
        server = await start_server(cfg)
    except OSError as exc:
        io.error(f"cannot listen: {exc}")
        return ExitStatus.ERROR
    except MMError as exc:  # the store (or the bus) cannot be reached
        io.error(f"cannot start: {exc.message}")
        return ExitStatus.ERROR
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(RuntimeError):  # not the main thread: no signal handlers
            loop.add_signal_handler(sig, stop.set)
    host = cfg.host if cfg.host not in ("0.0.0.0", "::") else "127.0.0.1"
    extra = "".join(f", {p}" for p in server.extra_long_ports)
    io.print(
        f"wxnet serving: long link {host}:{server.long_port}{extra}, "
        f"HTTP http://{host}:{server.http_port}/ (short link, newgetdns, web), "
        f"store {store_description(cfg)}"
    )
    where = f"--data {cfg.data}"
    if cfg.store.kind == "postgres":
        where = "--config FILE (the server's, with its [store])"
    io.print(
        f"add a user: wxnet user add NAME --password PW {where}; "
        f"log in: wxnet login --server http://{host}:{server.http_port} --user NAME --password PW"
    )
    try:
        await stop.wait()
    finally:
        io.print("wxnet: shutting down")
        await server.close()
    return ExitStatus.OK


def cmd_serve(args: argparse.Namespace, io: IO) -> int:
    from wxnet.server.logs import setup_logging

    cfg = config_from_args(args)
    setup_logging(cfg.log_level)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    return int(runner(_serve(cfg, io)))
