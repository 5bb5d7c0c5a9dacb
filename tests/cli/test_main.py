from __future__ import annotations

import argparse
import io
import subprocess
import sys
from typing import Any

from wxnet.cli.common import IO
from wxnet.cli.main import COMMAND_MODULES, build_parser, run


def _sub(parser: argparse.ArgumentParser) -> Any:
    return next(a for a in parser._actions if a.dest == "command")


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    return set(_sub(parser).choices)


def test_named_command_loads_only_its_module() -> None:
    # A fresh interpreter: `wxnet analyze` must not pay for aiohttp (the client commands).
    code = (
        "import sys\n"
        "from wxnet.cli.main import build_parser\n"
        "build_parser('analyze')\n"
        "print('aiohttp' in sys.modules, 'wxnet.cli.client_cmd' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.split() == ["False", "False"]
    assert _commands(build_parser("analyze")) == {"analyze"}


def test_other_words_build_the_whole_parser() -> None:
    full = _commands(build_parser())
    assert len(full) >= len(COMMAND_MODULES) and {"analyze", "proto", "login"} <= full
    # "login" lives in client_cmd, "--help" is an option, "nosuch" is no command.
    for word in ("login", "--help", "nosuch", None):
        assert _commands(build_parser(word)) == full


def test_unknown_command_still_reports_the_choices() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run(["nosuch"], IO(out, err)) == 2


def test_analyze_help_is_the_same_either_way() -> None:
    one = build_parser("analyze")
    full = build_parser()
    assert _sub(one).choices["analyze"].format_help() == _sub(full).choices["analyze"].format_help()
