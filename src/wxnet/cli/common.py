"""What every command module shares: exit codes, streams, user errors."""

from __future__ import annotations

import argparse
import os
import sys
from enum import IntEnum
from typing import Any, TextIO

__all__ = ["IO", "ExitStatus", "HelpFormatter", "UsageError"]


class ExitStatus(IntEnum):
    OK = 0
    ERROR = 1  # the command ran and failed (server said no, network down, ...)
    USAGE = 2  # bad arguments or input
    INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C stopped a command that was not done
    BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of our output went away (`| head -1`)


class UsageError(Exception):
    """Bad arguments or input: printed as ``wxnet: error: ...`` with exit status 2."""


class IO:
    """Where a command writes: ``out`` and ``err`` (default: the process's stdout and
    stderr at construction). A plain class, not a dataclass: making one at import costs
    every command's start-up (``exec`` per method and ``inspect``)."""

    __slots__ = ("err", "out")

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out: TextIO = sys.stdout if out is None else out
        self.err: TextIO = sys.stderr if err is None else err

    def __repr__(self) -> str:
        return f"IO(out={self.out!r}, err={self.err!r})"

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def json(self, obj: Any) -> None:
        import json  # here, not at the top: commands that print no JSON start faster

        self.print(json.dumps(obj, ensure_ascii=False, sort_keys=True))

    def error(self, text: str) -> None:
        self.err.write(f"wxnet: error: {text}\n")
        self.err.flush()


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with the terminal width read as ``shutil.get_terminal_size``
    reads it but without importing ``shutil`` (and its bz2/lzma imports): argparse makes a
    formatter for every ``add_argument``, so every command's start-up paid for that."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            width = _columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


def _columns() -> int:
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80
