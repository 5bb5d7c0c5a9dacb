"""``wxnet gate``: the application-aware gateway (run, check, rules, stop, report)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import time
from datetime import datetime
from typing import Any

from wxnet.cli.common import IO, ExitStatus, UsageError
from wxnet.sdnotify import notify

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "gate",
        help="let a network's devices use only some apps, or block them (nftables; root)",
        description="Application-aware gateway. `wxnet gate --config gate.toml` runs it.",
    )
    p.add_argument("--config", help="policy file (same as `wxnet gate run CONFIG`)")
    p.set_defaults(func=cmd_run_default)
    gsub = p.add_subparsers(dest="gate_command", metavar="ACTION")

    r = gsub.add_parser("run", help="apply the policy and run the DNS filter and inspector")
    r.add_argument("config", help="policy file (TOML)")
    r.add_argument("--verbose", "-v", action="store_true", help="log decisions to stderr")
    r.set_defaults(func=cmd_run)

    c = gsub.add_parser("check", help="validate a policy and explain what it does")
    c.add_argument("config", help="policy file (TOML)")
    c.add_argument("--at", help="explain the schedule at this ISO time (default: now)")
    c.add_argument(
        "--policy-only",
        action="store_true",
        help="check the policy alone, not this machine (interfaces, addresses, binds): "
        "for a policy written away from its router; `run` still does every check",
    )
    c.set_defaults(func=cmd_check)

    rules = gsub.add_parser("rules", help="print the nftables script the policy installs")
    rules.add_argument("config", help="policy file (TOML)")
    rules.add_argument("--at", help="render with the groups active at this ISO time")
    rules.set_defaults(func=cmd_rules)

    s = gsub.add_parser("stop", help="remove the gateway's nftables table (opens the network)")
    s.add_argument("config", nargs="?", help="policy file (its table name is used)")
    s.add_argument("--table", help="table name (instead of a policy file)")
    s.set_defaults(func=cmd_stop)

    rep = gsub.add_parser("report", help="top apps per device, blocked attempts, per day")
    rep.add_argument("--db", help="SQLite store (default: the policy's db)")
    rep.add_argument("--config", dest="report_config", help="policy file naming the db")
    rep.add_argument("--days", type=float, default=0, help="only the last N days (0: all)")
    rep.add_argument("--json", action="store_true", help="print JSON instead of tables")
    rep.set_defaults(func=cmd_report)


def _load(path: str) -> tuple[Any, Any]:
    from wxnet.classify import Classifier
    from wxnet.gate.apps import app_catalog
    from wxnet.gate.policy import PolicyError, load_policy

    classifier = Classifier()
    try:
        policy = load_policy(path, app_catalog(classifier.apps()))
    except PolicyError as exc:
        raise UsageError(f"{path}: {exc}") from None
    return policy, classifier


def _when(text: str | None, tz: Any) -> float:
    if not text:
        return time.time()
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--at {text!r} is not an ISO date-time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return dt.timestamp()


def _preflight(path: str, policy: Any, io: IO, bind: bool) -> bool:
    """Print the machine checks' findings; False when the policy must be refused."""
    from wxnet.gate.preflight import preflight

    refuse = False
    for f in preflight(policy, bind=bind):
        io.error(f"{path}: {f}")
        refuse = refuse or f.error or policy.settings.strict
    return not refuse


def cmd_check(args: argparse.Namespace, io: IO) -> int:
    policy, _ = _load(args.config)
    now = _when(args.at, policy.tz)
    if args.policy_only:
        io.print(f"{args.config}: OK as a policy (this machine not checked: --policy-only)")
    elif not _preflight(args.config, policy, io, bind=True):
        return ExitStatus.USAGE
    else:
        io.print(f"{args.config}: OK")
    for line in policy.explain(now):
        io.print(line)
    nxt = policy.next_change(now)
    if nxt is not None:
        io.print(f"next schedule change: {policy.local(nxt).isoformat(timespec='minutes')}")
    return ExitStatus.OK


def cmd_rules(args: argparse.Namespace, io: IO) -> int:
    from wxnet.gate.ruleset import render

    policy, _ = _load(args.config)
    now = _when(args.at, policy.tz)
    io.out.write(render(policy, policy.active_groups(now)))
    return ExitStatus.OK


def cmd_stop(args: argparse.Namespace, io: IO) -> int:
    from wxnet.gate.nft import NftError, run_nft
    from wxnet.gate.ruleset import delete_table

    if args.table:
        table = args.table
    elif args.config:
        policy, _ = _load(args.config)
        table = policy.settings.table
    else:
        raise UsageError("give a policy file or --table")
    try:
        run_nft(delete_table(table))
    except NftError as exc:
        io.error(f"cannot remove table inet {table}: {exc}")
        return ExitStatus.ERROR
    io.print(f"removed table inet {table}")
    return ExitStatus.OK


def cmd_run_default(args: argparse.Namespace, io: IO) -> int:
    if not args.config:
        raise UsageError("give --config gate.toml or an action (run, check, rules, stop, report)")
    args.verbose = False
    return cmd_run(args, io)


def cmd_run(args: argparse.Namespace, io: IO) -> int:
    from wxnet.gate.nft import nft_available

    policy, classifier = _load(args.config)
    if not _preflight(args.config, policy, io, bind=False):  # start() binds them itself
        return ExitStatus.USAGE
    if not nft_available():
        io.error("nft is not installed (apt-get install nftables)")
        return ExitStatus.ERROR
    if os.geteuid() != 0:
        io.error("wxnet gate run needs root (nftables and port 53)")
        return ExitStatus.ERROR
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )

    runner: Any = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        return int(runner(_serve(policy, classifier, io)))
    return ExitStatus.INTERRUPTED


async def _serve(policy: Any, classifier: Any, io: IO) -> int:
    """Run the gateway until a signal or a failure; the exit status."""
    from wxnet.gate.dnsworker import WorkerError
    from wxnet.gate.nft import NftError
    from wxnet.gate.service import GateService

    service = GateService(policy, classifier)
    try:
        await service.start()
    except (NftError, OSError, WorkerError) as exc:
        what = "nftables refused the ruleset: " if isinstance(exc, NftError) else ""
        if isinstance(exc, OSError):
            what = "cannot listen: "
        io.error(f"{what}{exc}")
        t = policy.settings.table
        if service.table_applied:
            io.error(f"table inet {t} left in place (fail closed)")
        else:
            io.error(f"table inet {t} not touched (a table left by an earlier run stays)")
        return ExitStatus.ERROR
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    s = policy.settings
    web = f", web on port {service.http_port}" if service.http_port else ""
    io.print(
        f"ready: table inet {s.table}, DNS on port {s.dns_port}, "
        f"inspector on port {s.inspector_port}{web}"
    )
    notify("READY=1", f"STATUS=table inet {s.table} installed")  # Type=notify units
    failed = asyncio.ensure_future(service.failure.wait())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((failed, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        failed.cancel()
        stopped.cancel()
        notify("STOPPING=1")
        # A failing gate keeps its table: allow-only groups stay closed (fail closed).
        await service.stop(remove_table=not service.failure.is_set())
    if service.failure.is_set():
        io.error(
            f"gate failed: {service.failure_reason}; table inet {s.table} left in place"
            f" (allow-only groups stay closed; `wxnet gate stop --table {s.table}` removes it)"
        )
        return ExitStatus.ERROR
    io.print(f"stopped: table inet {s.table} removed")
    return ExitStatus.OK


def cmd_report(args: argparse.Namespace, io: IO) -> int:
    from wxnet.gate.records import RecordStore, build_report

    db = args.db
    if db is None and args.report_config:
        policy, _ = _load(args.report_config)
        db = policy.settings.db
    if not db:
        raise UsageError("give --db PATH or --config with a db setting")
    if not os.path.exists(db):
        raise UsageError(f"no such database: {db}")
    since = time.time() - args.days * 86400 if args.days > 0 else 0.0
    try:
        store = RecordStore(db)
        report = build_report(store, since)
        store.close()
    except Exception as exc:  # sqlite3.DatabaseError and friends: not our file
        if type(exc).__module__ != "sqlite3":
            raise
        raise UsageError(f"{db}: not a wxnet gate database ({exc})") from None
    if args.json:
        io.json(
            {
                "top_apps": [list(r) for r in report.top_apps],
                "blocked": [list(r) for r in report.blocked],
                "per_day": [list(r) for r in report.per_day],
            }
        )
        return ExitStatus.OK
    _table(io, "Top apps per device", ("device", "app", "flows", "bytes"), report.top_apps)
    _table(io, "Blocked attempts", ("device", "app", "name or address", "count"), report.blocked)
    _table(io, "Per day", ("day", "flows", "blocked", "bytes"), report.per_day)
    return ExitStatus.OK


def _table(io: IO, title: str, head: tuple[str, ...], rows: list[Any]) -> None:
    cells = [head, *[tuple(str(c) for c in r) for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    io.print(title)
    for n, r in enumerate(cells):
        io.print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if n == 0:
            io.print("  " + "  ".join("-" * w for w in widths))
    if not rows:
        io.print("  (none)")
    io.print()
