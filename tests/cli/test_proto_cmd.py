from __future__ import annotations

import io
import json

from wxnet.cli.common import IO
from wxnet.cli.main import run


def call(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), IO(out, err))
    return code, out.getvalue(), err.getvalue()


def test_encode_prints_the_seed_header() -> None:
    assert call("proto", "encode", "--cmd", "6", "--seq", "15") == (
        0,
        "0000001000100001000000060000000f\n",
        "",
    )


def test_decode_prints_packets_as_json() -> None:
    code, out, _ = call("proto", "decode", "00 00 00 10 00 10 00 01 00 00 00 06 00 00 00 0f")
    assert code == 0
    assert json.loads(out) == {
        "offset": 0,
        "cmd": 6,
        "name": "noop",
        "seq": 15,
        "body_len": 0,
        "body": None,
    }


def test_decode_two_packets_and_a_notify_body() -> None:
    code, out, _ = call(
        "proto",
        "decode",
        "0000001000100001000000060000000f" + "00000014001000010000001800000000" + "00000002",
    )
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert [r["name"] for r in rows] == ["noop", "notify"]
    assert rows[1]["body"] == {"selector": 2} and rows[1]["offset"] == 16


def test_decode_reports_bad_input() -> None:
    assert call("proto", "decode", "zz")[0] == 2
    code, _, err = call("proto", "decode", "0000001000100002000000060000000f")
    assert code == 1 and "version 2" in err
    code, _, err = call("proto", "decode", "00000010001000")
    assert code == 1 and "trailing" in err


def test_encode_rejects_bad_values() -> None:
    code, _, err = call("proto", "encode", "--cmd", "99999999999", "--seq", "1")
    assert code == 2 and "32 bits" in err
