"""Build synthetic frames and capture files (for tests, benchmarks and the lab).

Frames are built field by field: Ethernet II (optionally 802.1Q-tagged), Linux cooked
SLL/SLL2, IPv4 (header checksum filled in), IPv6, TCP and UDP (checksums left zero,
which capture readers do not check). Files are pcap (micro- or nanosecond, either byte
order) or pcapng (one section, one interface).
"""

from __future__ import annotations

import ipaddress
import struct

__all__ = [
    "ether",
    "ip",
    "ipv4",
    "ipv6",
    "pcap_header",
    "pcap_record",
    "pcapng_header",
    "pcapng_packet",
    "sll",
    "sll2",
    "tcp",
    "tls_client_hello",
    "udp",
]

SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp(
    sport: int, dport: int, seq: int, ack: int = 0, flags: int = ACK, payload: bytes = b""
) -> bytes:
    return (
        struct.pack(">HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack, 5 << 4, flags, 65535, 0, 0)
        + payload
    )


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


def ipv4(src: str, dst: str, proto: int, l4: bytes, ident: int = 0, frag: int = 0) -> bytes:
    head = struct.pack(
        ">BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(l4),
        ident & 0xFFFF,
        frag,
        64,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    head = head[:10] + struct.pack(">H", _checksum(head)) + head[12:]
    return head + l4


def ipv6(src: str, dst: str, proto: int, l4: bytes) -> bytes:
    return (
        struct.pack(">IHBB", 6 << 28, len(l4), proto, 64)
        + ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + l4
    )


def ip(src: str, dst: str, proto: int, l4: bytes) -> bytes:
    """IPv4 or IPv6 by the address family of ``src``."""
    if ":" in src:
        return ipv6(src, dst, proto, l4)
    return ipv4(src, dst, proto, l4)


def ether(packet: bytes, vlans: tuple[int, ...] = ()) -> bytes:
    etype = 0x86DD if packet[0] >> 4 == 6 else 0x0800
    head = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01"
    for i, vid in enumerate(vlans):
        tpid = 0x88A8 if i == 0 and len(vlans) > 1 else 0x8100
        head += struct.pack(">HH", tpid, vid & 0x0FFF)
    return head + struct.pack(">H", etype) + packet


def sll(packet: bytes) -> bytes:
    etype = 0x86DD if packet[0] >> 4 == 6 else 0x0800
    return struct.pack(">HHH8sH", 0, 1, 6, b"\x02\0\0\0\0\1\0\0", etype) + packet


def sll2(packet: bytes) -> bytes:
    etype = 0x86DD if packet[0] >> 4 == 6 else 0x0800
    return struct.pack(">HHIHBB8s", etype, 0, 2, 1, 0, 6, b"\x02\0\0\0\0\1\0\0") + packet


def pcap_header(
    linktype: int = 1, nano: bool = False, big: bool = False, snaplen: int = 262144
) -> bytes:
    order = ">" if big else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    return struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(ts: float, frame: bytes, nano: bool = False, big: bool = False) -> bytes:
    order = ">" if big else "<"
    sec = int(ts)
    frac = round((ts - sec) * (1e9 if nano else 1e6))
    return struct.pack(order + "IIII", sec, frac, len(frame), len(frame)) + frame


def _block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def pcapng_header(linktype: int = 1, tsresol: int | None = None) -> bytes:
    """A Section Header Block and one Interface Description Block."""
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    opts = b""
    if tsresol is not None:
        opts = struct.pack("<HHB3x", 9, 1, tsresol) + struct.pack("<HH", 0, 0)
    idb = _block(1, struct.pack("<HHI", linktype, 0, 262144) + opts)
    return shb + idb


def pcapng_packet(ts: float, frame: bytes, ticks_per_second: int = 1_000_000) -> bytes:
    t = round(ts * ticks_per_second)
    body = struct.pack("<IIIII", 0, t >> 32, t & 0xFFFFFFFF, len(frame), len(frame)) + frame
    return _block(6, body)


def tls_client_hello(
    sni: str, alpn: tuple[str, ...] = ("h2",), pad: int = 0, record: int = 16384
) -> bytes:
    """A TLS ClientHello (RFC 8446 4.1.2) asking for ``sni``, in records of ``record`` bytes."""
    name = sni.encode()
    sni_ext = struct.pack(">HBH", len(name) + 3, 0, len(name)) + name
    alpn_list = b"".join(bytes([len(a)]) + a.encode() for a in alpn)
    alpn_ext = struct.pack(">H", len(alpn_list)) + alpn_list
    exts = struct.pack(">HH", 0, len(sni_ext)) + sni_ext
    exts += struct.pack(">HH", 16, len(alpn_ext)) + alpn_ext
    exts += struct.pack(">HH", 21, pad) + bytes(pad)
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    body += struct.pack(">H", len(exts)) + exts
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    out = b""
    for i in range(0, len(hs), record):
        part = hs[i : i + record]
        out += b"\x16\x03\x01" + struct.pack(">H", len(part)) + part
    return out
