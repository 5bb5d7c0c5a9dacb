"""The ``wxnet`` command: one entry point, one module per command group.

Each command module has ``register(subparsers)``, which adds its parsers and sets
``func`` on them; ``func(args, io)`` returns an :class:`ExitStatus` (or int).
Modules are imported lazily by name so that ``wxnet proto`` does not load aiohttp.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from wxnet import __version__
from wxnet.cli.common import IO, ExitStatus, UsageError

__all__ = ["main", "run"]

#: Command modules, in the order ``wxnet --help`` lists them.
COMMAND_MODULES = (
    "wxnet.cli.serve_cmd",
    "wxnet.cli.user_cmd",
    "wxnet.cli.proto_cmd",
    "wxnet.cli.analyze_cmd",
    "wxnet.cli.scan_cmd",
    "wxnet.cli.client_cmd",
    "wxnet.cli.chat_cmd",
    "wxnet.cli.gate_cmd",
    "wxnet.cli.lab_cmd",
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``command`` (a word the user typed first), only the module
    named after it (``wxnet.cli.<command>_cmd``) when that module registers the command,
    so that e.g. ``wxnet analyze`` does not import aiohttp (about 0.3 s of start-up)."""
    if command is not None and not command.startswith("-"):
        name = f"wxnet.cli.{command}_cmd"
        if name in COMMAND_MODULES:
            parser, sub = _parser()
            importlib.import_module(name).register(sub)
            if command in sub.choices:
                return parser
    parser, sub = _parser()
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _parser() -> tuple[argparse.ArgumentParser, Any]:
    parser = argparse.ArgumentParser(
        prog="wxnet",
        description="wxnet: WeChat-style messaging server and client, gateway, and lab.",
    )
    parser.add_argument("--version", action="version", version=f"wxnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser, sub


def run(argv: Sequence[str] | None = None, io: IO | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit status (never raises
    for user errors, which are printed to ``io.err``)."""
    io = io or IO()
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words[0] if words else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse prints its own message
        return int(exc.code or 0)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(io.out)
        return ExitStatus.USAGE
    try:
        return int(func(args, io))
    except UsageError as exc:
        io.error(str(exc))
        return ExitStatus.USAGE
    except KeyboardInterrupt:
        io.error("interrupted")
        return ExitStatus.INTERRUPTED


def main() -> None:
    sys.exit(run())
