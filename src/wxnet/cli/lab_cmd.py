"""``wxnet lab``: the seed's experiment (S7), automated in network namespaces (root)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from wxnet.cli.common import IO, ExitStatus, UsageError
from wxnet.lab.faults import BlockMode, FaultError, parse_matrix

__all__ = ["SEED_NAMES", "cmd_lab", "register"]

#: The service names the seed saw (S8, S10); the gate's WeChat signature knows them.
SEED_NAMES = {
    "long_name": "long.weixin.qq.com",
    "short_name": "short.weixin.qq.com",
    "dns_name": "dns.weixin.qq.com",
}


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be in (0, 3600]: {text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be 1..100: {text}")
    return value


def register(sub: Any) -> None:
    p = sub.add_parser(
        "lab",
        help="rerun the seed's fault experiment in network namespaces (root)",
        description="Build phone, gateway and internet namespaces, run wxnet serve and "
        "the lab's clients, cut traffic on the gateway with nftables case by case (S7), "
        "and check the seed's observations (S9, S12, S13, S14). Exit status 0 when every "
        "expectation holds, 1 when one fails. See docs/lab.md.",
    )
    p.add_argument(
        "--cases",
        action="append",
        metavar="SPEC",
        help="cases to run, comma-separated: none, a fault (dns, tcp80, tcp8080, tcp14000, "
        "alltcp), faults joined by + (dns+tcp80), or full / singles / short "
        "(default: full = no fault, each fault, each pair)",
    )
    p.add_argument("--time-limit", type=_positive, default=20.0, metavar="S",
                   help="time limit per case in seconds (default 20)")  # fmt: skip
    p.add_argument("--messages", type=_count, default=3, metavar="N",
                   help="texts sent each way per case (default 3)")  # fmt: skip
    p.add_argument("--block", choices=[m.value for m in BlockMode], default="reject",
                   help="how the gateway blocks: reject (fast, default) or drop "
                   "(as the seed's iptables -j DROP; cases take longer)")  # fmt: skip
    p.add_argument("--no-extra-port", action="store_true",
                   help="do not configure the extra long-link port 14000 (S14)")  # fmt: skip
    p.add_argument("--client", choices=["sdk", "core"],
                   help="who plays the phone: sdk (wxnet's client SDK; the default when "
                   "installed) or core (the lab's own small client)")  # fmt: skip
    p.add_argument("--with-gate", action="store_true",
                   help="run wxnet gate (allow-only WeChat) on the gateway, use the seed's "
                   "names (*.weixin.qq.com), and check that a browser cannot reach the web "
                   "site in any case (S1)")  # fmt: skip
    p.add_argument("--warm", action="store_true",
                   help="start each case from a profile that cached newgetdns in a "
                   "fault-free login (an app restarting); needs --client sdk")  # fmt: skip
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="where the report and logs go (default artifacts/lab-RUNID)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the JSON report instead of a table")
    p.add_argument("--list", action="store_true",
                   help="list the cases and what the seed predicts; needs no root")  # fmt: skip
    p.set_defaults(func=cmd_lab)


def cmd_lab(args: argparse.Namespace, io: IO) -> int:
    try:
        cases = parse_matrix(args.cases or ["full"])
    except FaultError as exc:
        raise UsageError(str(exc)) from None
    extra_port = None if args.no_extra_port else 14000
    if args.list:
        return _list(cases, extra_port is not None, args.json, io)
    from wxnet.lab.results import CaseResult
    from wxnet.lab.runner import LabConfig, run_lab, terminate_on_signals
    from wxnet.lab.sdkphone import sdk_available
    from wxnet.lab.topology import LabError, new_run_id

    if os.geteuid() != 0:
        io.error("wxnet lab needs root (network namespaces and nftables); try --list")
        return ExitStatus.ERROR
    client = args.client or ("sdk" if sdk_available() else "core")
    if args.warm and client != "sdk":
        raise UsageError("--warm needs the client SDK (--client sdk)")
    run_id = new_run_id()
    out: Path = args.out or Path("artifacts") / f"lab-{run_id}"
    names = SEED_NAMES if args.with_gate else {}
    cfg = LabConfig(
        cases=cases,
        workdir=out,
        time_limit=args.time_limit,
        messages=args.messages,
        block=BlockMode(args.block),
        extra_port=extra_port,
        run_id=run_id,
        client=client,
        with_gate=args.with_gate,
        warm=args.warm,
        long_name=names.get("long_name", LabConfig.long_name),
        short_name=names.get("short_name", LabConfig.short_name),
        dns_name=names.get("dns_name", LabConfig.dns_name),
    )

    def progress(r: CaseResult) -> None:
        if not args.json:
            io.print(f"  {r.case:<22} {r.outcome!s:<8} {r.path:<26} {r.seconds:6.2f}s")

    if not args.json:
        io.print(f"wxnet lab {run_id}: {len(cases)} case(s), up to {args.time_limit:g} s each")
    restore = terminate_on_signals()
    try:
        report = run_lab(cfg, progress)
    except LabError as exc:
        io.error(str(exc))
        return ExitStatus.ERROR
    finally:
        restore()
    _write_report(report, out, args.json, io)
    return ExitStatus.OK if not report.failed_checks else ExitStatus.ERROR


def _write_report(report: Any, out: Path, as_json: bool, io: IO) -> None:
    """report.md, report.json and matrix.svg in ``out``; the table (or JSON) on stdout."""
    from wxnet.lab.report import render_json, render_markdown, render_svg, render_table

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    (out / "report.json").write_text(render_json(report), encoding="utf-8")
    (out / "matrix.svg").write_text(render_svg(report), encoding="utf-8")
    if as_json:
        io.print(render_json(report).rstrip())
    else:
        io.print()
        io.print(render_table(report).rstrip())
        io.print(f"report: {out / 'report.md'}, {out / 'report.json'}, {out / 'matrix.svg'}")


def _list(cases: list[Any], extra_port: bool, as_json: bool, io: IO) -> int:
    from wxnet.lab.expectations import predict

    rows = []
    for case in cases:
        p = predict(case, extra_port)
        want = f"works via {p.link}:{p.port}" if p.works else "fails; network poor"
        rows.append({"case": case.name, "title": case.title, "expect": want,
                     "claims": list(p.claims)})  # fmt: skip
    for row in rows:
        if as_json:
            io.json(row)
        else:
            io.print(f"{row['case']:<22} {row['expect']:<26} {','.join(row['claims']):<8} "
                     f"{row['title']}")  # fmt: skip
    return ExitStatus.OK
