"""The ``wxnet`` command: one entry point, one module per command group.

Each command module has ``register(subparsers)``, which adds its parsers and sets
``func`` on them; ``func(args, io)`` returns an :class:`ExitStatus` (or int).
Modules are imported lazily by name so that ``wxnet proto`` does not load aiohttp.

Two endings are handled here, once for every command:

* the output was closed (``wxnet analyze … --json | head -1``): the command stops at
  once, prints nothing more, and exits 141 (128 + SIGPIPE, as ``yes | head -1`` does);
* Ctrl-C: a command that runs until it is stopped (``listen``; parsers that set
  ``interrupt_is_stop=True``) exits 0 without a message; any other command was cut
  short, so it says ``interrupted`` and exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from wxnet import __version__
from wxnet.cli.common import IO, ExitStatus, HelpFormatter, UsageError

__all__ = ["main", "run"]

#: Command modules, in the order ``wxnet --help`` lists them.
COMMAND_MODULES = (
    "wxnet.cli.serve_cmd",
    "wxnet.cli.user_cmd",
    "wxnet.cli.store_cmd",
    "wxnet.cli.proto_cmd",
    "wxnet.cli.analyze_cmd",
    "wxnet.cli.scan_cmd",
    "wxnet.cli.client_cmd",
    "wxnet.cli.media_cmd",
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
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser, sub


class _Version(argparse.Action):
    """``--version``, with the text made only when asked: it imports the store schema
    (sqlite3 and more, ~10 ms), which other commands' start-up need not pay."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(version_text())  # stdout, as argparse's own "version" action does
        parser.exit()


def version_text() -> str:
    """``wxnet --version``: the package version and the store schema this build writes."""
    from wxnet.sync.schema import SCHEMA_VERSION

    return f"wxnet {__version__} (store schema {SCHEMA_VERSION})"


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
        if getattr(args, "interrupt_is_stop", False):
            return ExitStatus.OK
        io.error("interrupted")
        return ExitStatus.INTERRUPTED
    except BrokenPipeError:
        _discard_output(io.out)
        return ExitStatus.BROKEN_PIPE


def _discard_output(stream: TextIO) -> None:
    """After EPIPE: point the stream's descriptor at /dev/null, so that the flush at exit
    does not fail a second time (the recipe of Python's ``signal`` docs)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # an in-memory stream: nothing to do
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def main() -> None:
    sys.exit(run())
