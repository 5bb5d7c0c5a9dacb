from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wxnet.analyze import synth as S
from wxnet.cli.common import IO
from wxnet.cli.main import run
from wxnet.proto.framing import encode_packet

CAPTURES = Path(__file__).parent.parent / "data" / "captures"


def call(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), IO(out, err))
    return code, out.getvalue(), err.getvalue()


def test_table_and_summary_for_quickplay() -> None:
    code, out, err = call("analyze", str(CAPTURES / "quickplay.pcap"))
    assert code == 0 and err == ""
    assert "Flows in quickplay.pcap" in out and "Summary by application" in out
    assert out.count("hkextshort.weixin.qq.com") == 4 and "hkminorshort.weixin.qq.com" in out
    summary = out[out.index("Summary by application") :]
    wechat = next(line for line in summary.splitlines() if line.strip().startswith("WeChat "))
    assert wechat.split()[1:3] == ["5", "12"]  # 5 flows, 3+3+2+2+2 packets as in nDPI's .out
    assert "155 packets, 21 flows" in out


def test_json_one_object_per_flow_with_app_filter() -> None:
    code, out, _ = call("analyze", "--json", "--app", "wechat", str(CAPTURES / "quickplay.pcap"))
    assert code == 0
    flows = [json.loads(line) for line in out.splitlines()]
    assert len(flows) == 5 and {f["app"] for f in flows} == {"wechat"}
    assert all(f["evidence"][0]["kind"] == "http-host" for f in flows)
    assert {f["server_port"] for f in flows} == {80}


def test_gzip_capture_and_qq_filter() -> None:
    code, out, _ = call("analyze", "--json", "--app", "qq", str(CAPTURES / "1kxun.pcap.gz"))
    assert code == 0 and len(out.splitlines()) == 5


def test_youtube_has_no_wechat() -> None:
    code, out, _ = call(
        "analyze", "--json", "--app", "wechat", str(CAPTURES / "youtubeupload.pcap")
    )
    assert code == 0 and out == ""
    code, out, _ = call("analyze", "--json", str(CAPTURES / "youtubeupload.pcap"))
    assert len(out.splitlines()) == 3


def test_longlink_packets_are_printed(tmp_path: Path) -> None:
    up = encode_packet(6, 15)
    frames = [
        S.ip("10.0.0.2", "192.0.2.10", 6, S.tcp(40001, 8080, 1000, 0, S.SYN)),
        S.ip("10.0.0.2", "192.0.2.10", 6, S.tcp(40001, 8080, 1001, 1, S.ACK, up)),
    ]
    path = tmp_path / "ll.pcapng"
    path.write_bytes(
        S.pcapng_header(101) + b"".join(S.pcapng_packet(i, f) for i, f in enumerate(frames))
    )
    code, out, _ = call("analyze", str(path))
    assert code == 0 and "Long-link packets (S32)" in out and "cmd 6 (noop)  seq 15" in out
    code, out, _ = call("analyze", "--json", str(path))
    assert json.loads(out)["longlink"] == [
        {"dir": "c2s", "cmd": 6, "name": "noop", "seq": 15, "body": 0}
    ]


def test_truncated_capture_reports_flows_then_fails_with_offset(tmp_path: Path) -> None:
    data = (CAPTURES / "quickplay.pcap").read_bytes()
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[: len(data) // 2])
    code, out, err = call("analyze", "--json", str(path))
    assert code == 1
    assert len(out.splitlines()) >= 5
    assert "truncated or corrupt" in err and "at byte offset" in err


def test_corrupt_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all")
    code, _, err = call("analyze", str(bad))
    assert code == 1 and "unknown file magic" in err and "offset 0" in err
    code, _, err = call("analyze", str(tmp_path / "missing.pcap"))
    assert code == 1 and "cannot open" in err


def test_unknown_app_and_bad_signature_file_are_usage_errors(tmp_path: Path) -> None:
    code, _, err = call("analyze", "--app", "nosuch", str(CAPTURES / "quickplay.pcap"))
    assert code == 2 and "unknown app nosuch" in err
    sig = tmp_path / "x.toml"
    sig.write_text("id = 1\n")
    code, _, err = call("analyze", "--signatures", str(sig), str(CAPTURES / "quickplay.pcap"))
    assert code == 2 and "x.toml" in err


def test_summary_only() -> None:
    code, out, _ = call("analyze", "--summary", str(CAPTURES / "quickplay.pcap"))
    assert code == 0 and "Flows in" not in out and "WeChat" in out


_MODULES = """
import sys
from wxnet.cli.main import run
code = run(["analyze", "--summary", sys.argv[1]])
print(code, " ".join(sorted(sys.modules)))
"""
#: Modules `wxnet analyze --summary` has no use for, which start-up once paid for: the
#: dataclass machinery (inspect, ast, dis), the TOML parser (the bundled signatures load
#: from their cache), pathlib (with urllib.parse), rich, json, the protobuf runtime and
#: the wire enums.
_NOT_AT_START = (
    "dataclasses",
    "inspect",
    "tomllib",
    "pathlib",
    "urllib.parse",
    "rich",
    "json",
    "gzip",
    "google.protobuf",
    "wxnet.proto.enums",
    "datetime",
)


def test_summary_start_up_imports_only_what_it_needs() -> None:
    # Two runs allowed to write caches (bytecode, the signatures' cache); the second is
    # what an installed copy runs every time. (What this buys: docs/benchmarks.md.)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cmd = [sys.executable, "-c", _MODULES, str(CAPTURES / "quickplay.pcap")]
    for _ in range(2):
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    last = res.stdout.strip().splitlines()[-1]
    code, _, names = last.partition(" ")
    loaded = set(names.split())
    assert code == "0" and "wxnet.classify.signatures" in loaded
    assert not loaded & set(_NOT_AT_START), sorted(loaded & set(_NOT_AT_START))


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import wxnet.cli.analyze_cmd as cmd

    monkeypatch.setattr(cmd, "PROGRESS_MIN_BYTES", 0)
    out, err = io.StringIO(), _Tty()
    code = run(["analyze", "--summary", str(CAPTURES / "quickplay.pcap")], IO(out, err))
    assert code == 0 and "WeChat" in out.getvalue()
    assert "analysing" in err.getvalue()  # rich drew the bar on the "terminal"
    plain_out, plain_err = io.StringIO(), io.StringIO()
    run(["analyze", "--summary", str(CAPTURES / "quickplay.pcap")], IO(plain_out, plain_err))
    assert plain_err.getvalue() == ""
    out2, err2 = io.StringIO(), _Tty()
    run(["analyze", "--no-progress", "--summary", str(CAPTURES / "quickplay.pcap")], IO(out2, err2))
    assert err2.getvalue() == ""
