"""``wxnet serve``: run the messaging server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from wxnet.cli.common import IO, ExitStatus, UsageError
from wxnet.sdnotify import notify
from wxnet.server.config import ConfigError, ServerConfig, load_config, store_description


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the messaging server (long link, short link, newgetdns, web API)",
        description="Run the wxnet messaging server. Settings come from defaults, then "
        "--config FILE (TOML), then these flags.",
    )
    p.add_argument("--config", type=Path, help="TOML configuration file (docs/server.md)")
    p.add_argument("--data", type=Path, help="data directory (default ./var)")
    p.add_argument(
        "--host",
        help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 or :: "
        "for every address, as a real deployment needs)",
    )
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
    p.add_argument(
        "--contacts",
        choices=["open", "request"],
        help="request (default): adding a contact sends a friend request the other side"
        " accepts; open: both become contacts at once (a closed lab or a demo)",
    )
    p.add_argument(
        "--workers",
        type=int,
        help="serving processes on the same ports (default 1); more than 1 needs the "
        "PostgreSQL store and the Redis bus (docs/scaling.md)",
    )
    p.add_argument("--worker-of", type=int, help=argparse.SUPPRESS)  # the supervisor's pid
    p.add_argument(
        "--check-config",
        action="store_true",
        help="check the configuration, the TLS files and the store, then exit (0 = fine); "
        "changes nothing",
    )
    p.set_defaults(func=cmd_serve, interrupt_is_stop=True)


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
        "workers": args.workers,
    }
    try:
        cfg = load_config(args.config, overrides)
        if args.contacts:
            cfg = dataclasses.replace(
                cfg, sync=dataclasses.replace(cfg.sync, contacts=args.contacts)
            )
        return cfg
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def command_path(argv0: str | None = None) -> str:
    """How to run this same ``wxnet`` again, for the hints we print: a bare ``wxnet`` only
    when that is what the shell finds on PATH, else the path we were started by
    (``.venv/bin/wxnet`` after ``make install``), or ``python -m wxnet``."""
    arg = sys.argv[0] if argv0 is None else argv0
    if not arg or arg.endswith((".py", "-c")) or arg == "-m":
        return f"{sys.executable} -m wxnet"
    found = shutil.which("wxnet")
    if found is not None and os.path.realpath(found) == os.path.realpath(shutil.which(arg) or arg):
        return "wxnet"
    return arg


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def banner(cfg: ServerConfig, long_ports: tuple[int, ...], http_port: int) -> list[str]:
    """What ``wxnet serve`` prints once it listens: where it really listens (first line,
    ``wxnet serving: long link HOST:PORT, ...``; scripts read it), then what to run."""
    host = cfg.host or "0.0.0.0"
    wildcard = host in ("0.0.0.0", "::")
    # A wildcard listens on loopback too: the commands below use that from this machine.
    local = ("::1" if host == "::" else "127.0.0.1") if wildcard else host
    extra = "".join(f", {p}" for p in long_ports[1:])
    url = f"http://{_hostport(local, http_port)}"
    where = " (every address of this machine)" if wildcard else ""
    cmd = command_path()
    user_where = f"--data {cfg.data}"
    if cfg.store.kind == "postgres":
        user_where = "--config FILE (the server's, with its [store])"
    return [
        f"wxnet serving: long link {_hostport(host, long_ports[0])}{extra}, "
        f"HTTP http://{_hostport(host, http_port)}/ (short link, newgetdns, web){where}, "
        f"store {store_description(cfg)}",
        f"add a user: {cmd} user add NAME --password PW {user_where}",
        f"log in:     {cmd} login --server {url} --user NAME --password PW",
    ]


async def _serve(cfg: ServerConfig, io: IO, worker: bool = False) -> int:
    from wxnet.proto.errors import MMError
    from wxnet.server.app import start_server
    from wxnet.sync.db import StoreDamaged
    from wxnet.sync.schema import SchemaError

    try:
        server = await start_server(cfg)
    except StoreDamaged as exc:
        io.error(str(exc))
        return ExitStatus.ERROR
    except OSError as exc:
        io.error(f"cannot listen: {exc}")
        return ExitStatus.ERROR
    except SchemaError as exc:
        io.error(f"{store_description(cfg)}: {exc}")
        return ExitStatus.ERROR
    except MMError as exc:  # the store (or the bus) cannot be reached
        io.error(f"cannot start: {exc.message}")
        return ExitStatus.ERROR
    from wxnet.server.probes import tune_process

    # once listening: what start-up allocated is frozen out of the collector's walks
    # (docs/server.md, "Latency")
    tune_process(cfg.gc_thresholds, cfg.gc_freeze, cfg.switch_interval)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM,) if worker else (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(RuntimeError):  # not the main thread: no signal handlers
            loop.add_signal_handler(sig, stop.set)
    lines = banner(cfg, (server.long_port, *server.extra_long_ports), server.http_port)
    for line in lines[:1] if worker else lines:  # a worker: the line its supervisor reads
        io.print(line)
    if not worker:
        notify("READY=1", f"STATUS=serving: long link {server.long_port}, HTTP {server.http_port}")
    try:
        await stop.wait()
    finally:
        if not worker:
            notify("STOPPING=1")
            io.print("wxnet: shutting down")
        await server.close()
    return ExitStatus.OK


def worker_argv(args: argparse.Namespace, cfg: ServerConfig, ports: tuple[int, ...]) -> list[str]:
    """The command line of one worker: this one's settings, with the ports fixed."""
    argv = [sys.executable, "-m", "wxnet", "serve", "--worker-of", str(os.getpid())]
    if args.config is not None:
        argv += ["--config", str(args.config)]
    argv += ["--data", str(cfg.data), "--host", cfg.host, "--log-level", cfg.log_level]
    argv += ["--long-port", str(ports[0]), "--http-port", str(ports[-1])]
    for port in ports[1:-1]:
        argv += ["--extra-long-port", str(port)]
    if cfg.tls_cert:
        argv += ["--tls-cert", cfg.tls_cert, "--tls-key", cfg.tls_key]
    argv += ["--contacts", cfg.sync.contacts, "--workers", str(cfg.workers)]
    return argv


async def _supervise(args: argparse.Namespace, cfg: ServerConfig, io: IO) -> int:
    """``--workers N``: fix the ports, start N workers, supervise them (workers.py)."""
    from wxnet.server.workers import Supervisor, reserve_port

    held = []
    ports: list[int] = []
    try:
        for port in (cfg.long_port, *cfg.extra_long_ports, cfg.http_port):
            if port == 0:
                port, sock = reserve_port(cfg.host)
                held.append(sock)
            ports.append(port)
        fixed = tuple(ports)
        sup = Supervisor(lambda _i: worker_argv(args, cfg, fixed), cfg.workers, io)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(RuntimeError):
                loop.add_signal_handler(sig, sup.stop.set)
        try:
            if not await sup.start():
                return ExitStatus.OK if sup.stop.is_set() else ExitStatus.ERROR
            for line in banner(cfg, fixed[:-1], fixed[-1]):
                io.print(line)
            pids = ", ".join(str(p) for p in sup.pids)
            io.print(f"workers: {cfg.workers} (pids {pids}), supervisor pid {os.getpid()}")
            notify("READY=1", f"STATUS=serving with {cfg.workers} workers")
            await sup.supervise()
        finally:
            notify("STOPPING=1")
            io.print("wxnet: shutting down the workers")
            await sup.shutdown()
        return ExitStatus.OK
    finally:
        for sock in held:
            sock.close()


def check_config(cfg: ServerConfig, io: IO) -> int:
    """``wxnet serve --check-config``: what would stop ``serve`` before it listens.

    Reads the TLS files, checks the data directory can hold the store and the store's
    schema (a newer wxnet's store is refused). Creates and changes nothing.
    """
    import ssl

    from wxnet.sync.schema import SCHEMA_VERSION, SchemaError, read_schema_version

    problems: list[str] = []
    if cfg.tls_cert:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                cfg.tls_cert, cfg.tls_key
            )
        except (OSError, ssl.SSLError) as exc:
            problems.append(f"TLS: cannot load {cfg.tls_cert} / {cfg.tls_key}: {exc}")
    data = Path(cfg.data)
    existing = data if data.exists() else next((p for p in data.parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        problems.append(f"data: {existing} is not a directory")
    elif existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        problems.append(f"data: {existing} is not writable by this user")
    store = data / "wxnet.db"
    state = "new (created at start)"
    try:
        version = read_schema_version(store)
    except SchemaError as exc:
        problems.append(f"store {store}: {exc}")
    else:
        if version is not None:
            state = f"schema {version}" + (
                f" (migrated to {SCHEMA_VERSION} at start)" if version < SCHEMA_VERSION else ""
            )
    for text in problems:
        io.error(text)
    if problems:
        return ExitStatus.ERROR
    ports = ", ".join(str(p) for p in (cfg.long_port, *cfg.extra_long_ports))
    io.print(
        f"config ok: listen {cfg.host} (long link {ports}, HTTP {cfg.http_port}), "
        f"store {store}: {state}"
    )
    return ExitStatus.OK


def cmd_serve(args: argparse.Namespace, io: IO) -> int:
    from wxnet.server.logs import setup_logging

    cfg = config_from_args(args)
    if args.check_config:
        return check_config(cfg, io)
    setup_logging(cfg.log_level)
    if args.worker_of is not None:
        from wxnet.server.workers import die_with_parent

        die_with_parent(args.worker_of)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor too
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    if cfg.workers > 1 and args.worker_of is None:
        return int(runner(_supervise(args, cfg, io)))
    return int(runner(_serve(cfg, io, worker=args.worker_of is not None)))
