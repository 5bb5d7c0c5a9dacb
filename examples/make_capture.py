"""Rebuild examples/wechat-sample.pcapng.gz from tests/data/captures/quickplay.pcap.

Keeps the packets of the capture's five WeChat short-link flows and its DNS packets,
unchanged (times, Linux cooked headers and all), and writes them as pcapng, gzip -9:

    .venv/bin/python examples/make_capture.py
"""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
from pathlib import Path

from wxnet.analyze.synth import pcapng_header, pcapng_packet

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests/data/captures/quickplay.pcap"
TARGET = ROOT / "examples/wechat-sample.pcapng.gz"
LINKTYPE_LINUX_SLL = 113


def wechat_ports() -> set[int]:
    out = subprocess.run(
        [sys.executable, "-m", "wxnet", "analyze", str(SOURCE), "--json", "--app", "wechat"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return {json.loads(line)["client_port"] for line in out.splitlines()}


def main() -> None:
    keep = wechat_ports() | {53}
    data = SOURCE.read_bytes()
    magic, _, _, _, _, _, linktype = struct.unpack("<IHHiIII", data[:24])
    assert magic == 0xA1B2C3D4 and linktype == LINKTYPE_LINUX_SLL, "not the expected capture"
    out = bytearray(pcapng_header(linktype=LINKTYPE_LINUX_SLL))
    off, kept = 24, 0
    while off < len(data):
        sec, usec, incl, _orig = struct.unpack("<IIII", data[off : off + 16])
        frame = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        packet = frame[16:]  # after the 16-byte cooked header
        if frame[14:16] != b"\x08\x00" or packet[9] not in (6, 17):
            continue  # IPv4 TCP/UDP only
        ihl = (packet[0] & 0x0F) * 4
        sport, dport = struct.unpack(">HH", packet[ihl : ihl + 4])
        if sport in keep or dport in keep:
            out += pcapng_packet(sec + usec / 1e6, frame)
            kept += 1
    TARGET.write_bytes(gzip.compress(bytes(out), 9, mtime=0))
    print(f"{TARGET.relative_to(ROOT)}: {kept} packets, {TARGET.stat().st_size} bytes")


if __name__ == "__main__":
    main()
