from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
from typing import Any

import pytest

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


def run_into_closed_pipe(*argv: str) -> subprocess.CompletedProcess[bytes]:
    """``wxnet ARGV | head -0``: the reading end is closed before the first write."""
    rd, wr = os.pipe()
    os.close(rd)
    try:
        return subprocess.run(
            [sys.executable, "-m", "wxnet", *argv], stdout=wr, capture_output=False,
            stderr=subprocess.PIPE, timeout=120, check=False,
        )  # fmt: skip
    finally:
        os.close(wr)


@pytest.mark.parametrize(
    "argv",
    [
        ["analyze", "tests/data/captures/quickplay.pcap", "--json"],
        ["analyze", "tests/data/captures/quickplay.pcap"],
        ["proto", "decode", "0000001000100001000000060000000f"],
        ["--help"],
    ],
    ids=" ".join,
)
def test_closed_output_ends_quietly(argv: list[str]) -> None:
    done = run_into_closed_pipe(*argv)
    assert done.stderr == b"", done.stderr.decode()
    # 141 = 128 + SIGPIPE. The table of `analyze` is printed by rich, which ends a closed
    # output itself (quietly, with status 1); argparse's --help may exit 0 first.
    assert done.returncode in (0, 1, 141) if argv[-1] != "--json" else done.returncode == 141


def test_broken_pipe_in_a_command_is_status_141() -> None:
    out = io.StringIO()

    class Closed(io.StringIO):
        def write(self, s: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    err = io.StringIO()
    assert run(["proto", "encode", "--cmd", "6", "--seq", "1"], IO(Closed(), err)) == 141
    assert err.getvalue() == "" and out.getvalue() == ""


def test_version_names_the_store_schema(capsys: pytest.CaptureFixture[str]) -> None:
    from wxnet import __version__
    from wxnet.sync.schema import SCHEMA_VERSION

    assert run(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"wxnet {__version__} (store schema {SCHEMA_VERSION})"
