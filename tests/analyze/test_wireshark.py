"""contrib/wireshark/wxnet.lua in tshark: S32 long-link packets (several in a segment,
split across segments) and MMTLS record heads on 80/8080/443, and no change to what
Wireshark says of other traffic. (A capture recorded from wxnet's own client and server
is checked in test_live.py.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from wxnet.analyze import synth as S
from wxnet.proto import commands as C
from wxnet.proto.framing import encode_packet

ROOT = Path(__file__).resolve().parents[2]
LUA = ROOT / "contrib" / "wireshark" / "wxnet.lua"
CAPTURES = ROOT / "tests" / "data" / "captures"

needs_tshark = pytest.mark.skipif(
    shutil.which("tshark") is None, reason="needs tshark (make sysdeps installs it)"
)


def tshark_fields(path: Path, *fields: str, lua: bool = True) -> list[list[str]]:
    """One row per frame: the fields asked for (multiple values comma-separated)."""
    argv = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=a"]
    if lua:
        argv[1:1] = ["-X", f"lua_script:{LUA}"]
    for f in fields:
        argv += ["-e", f]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert "Lua" not in res.stderr and "error" not in res.stderr.lower(), res.stderr
    return [line.split("\t") for line in res.stdout.splitlines()]


def test_lua_command_names_are_the_command_table() -> None:
    text = LUA.read_text()
    block = text[text.index("local COMMANDS = {") : text.index("local SPECIAL")]
    names = {int(k): v for k, v in re.findall(r"\[(\d+)\] = \"([a-z]+)\"", block)}
    assert names == {cmd: c.name for cmd, c in C.BY_CMD.items()}
    special = text[text.index("local SPECIAL = {") : text.index("local function cmd_name")]
    assert f'[{C.CMD_NOOP}] = "noop"' in special
    assert f'[{C.CMD_NOTIFY}] = "notify"' in special
    assert f'[{C.CMD_PROTOCOL_ERROR}] = "protocol error"' in special


def _capture(path: Path) -> None:
    c, s = "10.0.0.2", "192.0.2.10"
    frames: list[bytes] = []

    def seg(sp: int, dp: int, seq: int, payload: bytes = b"", flags: int = S.ACK | S.PSH) -> None:
        src, dst = (c, s) if sp > 1024 else (s, c)
        frames.append(S.ether(S.ip(src, dst, 6, S.tcp(sp, dp, seq, 1, flags, payload))))

    def handshake(cp: int, sp: int) -> None:
        seg(cp, sp, 999, flags=S.SYN)
        seg(sp, cp, 4999, flags=S.SYN | S.ACK)

    # 1. Long link on 8080: two packets in one segment, then one split in three.
    handshake(40001, 8080)
    two = encode_packet(6, 15) + encode_packet(205, 7, b"x" * 20)
    seg(40001, 8080, 1000, two)  # frame 3
    big = encode_packet(121, 8, b"y" * 100)
    seg(40001, 8080, 1000 + len(two), big[:10])  # frame 4: the head itself is cut
    seg(40001, 8080, 1010 + len(two), big[10:60])  # frame 5
    seg(40001, 8080, 1060 + len(two), big[60:])  # frame 6
    seg(8080, 40001, 5000, encode_packet(C.reply_cmd(C.CMD_NOOP), 15))  # frame 7
    # 2. MMTLS long link on 443 (two records in a segment) and on 8080.
    handshake(40002, 443)
    records = bytes.fromhex("16f1040010") + bytes(16) + bytes.fromhex("17f1030004") + b"abcd"
    seg(40002, 443, 1000, records)  # frame 10
    handshake(40003, 8080)
    seg(40003, 8080, 1000, bytes.fromhex("19f1040008") + bytes(8))  # frame 13
    # 3. Not ours: HTTP on 80 and a real TLS ClientHello on 443.
    handshake(40004, 80)
    http = b"GET / HTTP/1.1\r\nHost: www.example.org\r\n\r\n"
    seg(40004, 80, 1000, http)  # frame 16
    handshake(40005, 443)
    seg(40005, 443, 1000, S.tls_client_hello("upload.youtube.com"))  # frame 19
    path.write_bytes(
        S.pcap_header(1) + b"".join(S.pcap_record(i * 0.01, f) for i, f in enumerate(frames))
    )


@needs_tshark
def test_tshark_shows_long_link_packets_and_mmtls_records(tmp_path: Path) -> None:
    path = tmp_path / "wx.pcap"
    _capture(path)
    rows = tshark_fields(
        path, "frame.number", "_ws.col.Protocol", "wxnet.cmd", "wxnet.seq", "wxnet.cmd_name",
        "mmtls.type", "mmtls.version", "mmtls.length",
    )  # fmt: skip
    by = {int(r[0]): r[1:] for r in rows}
    assert by[3] == ["WXNET", "6,205", "15,7", "noop,identify", "", "", ""]
    assert by[4][0] == "TCP" and by[5][0] == "TCP"  # held for reassembly
    assert by[6] == ["WXNET", "121", "8", "newsync", "", "", ""]
    assert by[7] == ["WXNET", "1000000006", "15", "noop reply", "", "", ""]
    assert by[10] == ["MMTLS", "", "", "", "0x16,0x17", "0xf104,0xf103", "16,4"]
    assert by[13] == ["MMTLS", "", "", "", "0x19", "0xf104", "8"]
    assert by[16][0] == "HTTP" and by[16][1:] == ["", "", "", "", "", ""]
    assert by[19][0].startswith("TLS") and by[19][1:] == ["", "", "", "", "", ""]
    # Without the plugin Wireshark knows none of it.
    plain = {
        int(r[0]): r[1] for r in tshark_fields(path, "frame.number", "_ws.col.Protocol", lua=False)
    }
    assert "WXNET" not in plain.values() and "MMTLS" not in plain.values()
    assert plain[16] == "HTTP" and plain[19].startswith("TLS")


@needs_tshark
@pytest.mark.parametrize("name", ["quickplay.pcap", "youtubeupload.pcap", "1kxun.pcap.gz"])
def test_development_captures_are_unchanged_and_have_no_false_positives(name: str) -> None:
    """No WeChat long link or MMTLS in these captures: the plugin must find none and
    leave every frame's protocol as Wireshark has it."""
    path = CAPTURES / name
    fields = ("frame.number", "_ws.col.Protocol", "wxnet.cmd", "mmtls.type")
    with_lua = tshark_fields(path, *fields)
    without = tshark_fields(path, *fields[:2], lua=False)
    assert not [r for r in with_lua if r[2] or r[3]]
    assert [r[:2] for r in with_lua] == without
    assert any(r[1].startswith(("HTTP", "TLS")) for r in without)  # ports 80/443 in use
