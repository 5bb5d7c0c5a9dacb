"""What every command module shares: exit codes, streams, user errors."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, TextIO

__all__ = ["IO", "ExitStatus", "UsageError"]


class ExitStatus(IntEnum):
    OK = 0
    ERROR = 1  # the command ran and failed (server said no, network down, ...)
    USAGE = 2  # bad arguments or input
    INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C stopped a command that was not done
    BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of our output went away (`| head -1`)


class UsageError(Exception):
    """Bad arguments or input: printed as ``wxnet: error: ...`` with exit status 2."""


@dataclass
class IO:
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def json(self, obj: Any) -> None:
        self.print(json.dumps(obj, ensure_ascii=False, sort_keys=True))

    def error(self, text: str) -> None:
        self.err.write(f"wxnet: error: {text}\n")
        self.err.flush()
