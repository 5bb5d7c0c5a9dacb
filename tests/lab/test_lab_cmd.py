from __future__ import annotations

import io
import json

from wxnet.cli.common import IO
from wxnet.cli.main import run


def call(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), IO(out, err))
    return code, out.getvalue(), err.getvalue()


def test_list_prints_the_matrix_with_predictions() -> None:
    code, out, _ = call("lab", "--list")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 16
    assert lines[0].split()[:4] == ["none", "works", "via", "long:8080"]
    assert any(line.startswith("tcp80+tcp8080") and "extra:14000" in line for line in lines)


def test_list_json_and_no_extra_port() -> None:
    code, out, _ = call("lab", "--list", "--json", "--no-extra-port", "--cases", "tcp80+tcp8080")
    assert code == 0
    assert json.loads(out)["expect"] == "fails; network poor"


def test_bad_cases_are_usage_errors() -> None:
    code, _, err = call("lab", "--list", "--cases", "dns+ftp")
    assert code == 2 and "unknown fault 'ftp'" in err
    code, _, _ = call("lab", "--time-limit", "-1")
    assert code == 2


def test_warm_needs_the_sdk() -> None:
    code, _, err = call("lab", "--warm", "--client", "core", "--cases", "dns")
    assert code == 2 and "--warm needs the client SDK" in err
