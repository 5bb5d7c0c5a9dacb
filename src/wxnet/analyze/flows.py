"""The analyser's flow state and header decoding (compiled with the packet loop: see
``wxnet/_accel.py``): flow records, statistics, per-flow reassembly state, the general
link/network/transport decoder and the long-link decoder used when a flow is reported.
"""

from __future__ import annotations

import struct
from _socket import AF_INET, AF_INET6, inet_ntop
from collections.abc import Callable
from typing import ClassVar, Final, final

from wxnet.classify import Verdict
from wxnet.proto.errors import RemoteProtocolError
from wxnet.proto.framing import PacketDecoder
from wxnet.proto.sniff import LonglinkHead, sniff_longlink
from wxnet.proto.value import Value

__all__ = ["FlowRecord", "LonglinkPacket", "Stats"]

_TCP = 6
_UDP = 17
_ETH = 1
_SLL = 113
_SLL2 = 276
_RAW = frozenset({101, 12, 14})
_RAW4 = 228
_RAW6 = 229
_NULL = 0
_V6_EXT = frozenset({0, 43, 60})
_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
# Ethernet II + IPv4 (+ TCP): ethertype, version/IHL, total length, flags/fragment
# offset, protocol, and the bytes at 46 and 47 (TCP data offset and flags, when it is TCP).
_ETH_IP4 = struct.Struct(">12xHBxH2xHxB22xBB")
# Ethernet + IPv4 for sharding: ethertype, version/IHL, total length, flags/fragment,
# protocol, addresses, ports, and byte 46 (the TCP data offset).
_SHARD4 = struct.Struct(">12xHBxH2xHxB2xIIHH8xB")
_MAX_OOO = 16
_END = float("inf")
_LONGLINK_SHOWN = 20


# LonglinkPacket and FlowRecord are written out on :class:`wxnet.proto.value.Value` rather
# than made by ``@dataclass(frozen=True, slots=True)`` (why: that module).


@final
class LonglinkPacket(Value):
    """One decoded S32 packet: direction, command, its name where known, seq, body size."""

    __slots__ = ("body_len", "cmd", "direction", "name", "seq")
    FIELDS = ("direction", "cmd", "name", "seq", "body_len")

    def __init__(self, direction: str, cmd: int, name: str, seq: int, body_len: int) -> None:
        self.direction: Final = direction
        self.cmd: Final = cmd
        self.name: Final = name
        self.seq: Final = seq
        self.body_len: Final = body_len

    def _key(self) -> tuple[str, int, str, int, int]:
        return (self.direction, self.cmd, self.name, self.seq, self.body_len)


@final
class FlowRecord(Value):
    """One finished flow: its 5-tuple (client first), first and last packet times, the
    verdict, packets and bytes each way, and the decoded long-link packets, if any."""

    __slots__ = (
        "client",
        "client_bytes",
        "client_packets",
        "client_port",
        "end",
        "longlink",
        "server",
        "server_bytes",
        "server_packets",
        "server_port",
        "start",
        "transport",
        "verdict",
    )
    FIELDS = (
        "transport",
        "client",
        "client_port",
        "server",
        "server_port",
        "start",
        "end",
        "verdict",
        "client_packets",
        "server_packets",
        "client_bytes",
        "server_bytes",
        "longlink",
    )

    def __init__(
        self,
        transport: str,
        client: str,
        client_port: int,
        server: str,
        server_port: int,
        start: float,
        end: float,
        verdict: Verdict,
        client_packets: int,
        server_packets: int,
        client_bytes: int,
        server_bytes: int,
        longlink: tuple[LonglinkPacket, ...] = (),
    ) -> None:
        self.transport: Final = transport
        self.client: Final = client
        self.client_port: Final = client_port
        self.server: Final = server
        self.server_port: Final = server_port
        self.start: Final = start
        self.end: Final = end
        self.verdict: Final = verdict
        self.client_packets: Final = client_packets
        self.server_packets: Final = server_packets
        self.client_bytes: Final = client_bytes
        self.server_bytes: Final = server_bytes
        self.longlink: Final = longlink

    def _key(self) -> tuple[object, ...]:
        return (
            self.transport,
            self.client,
            self.client_port,
            self.server,
            self.server_port,
            self.start,
            self.end,
            self.verdict,
            self.client_packets,
            self.server_packets,
            self.client_bytes,
            self.server_bytes,
            self.longlink,
        )

    @property
    def packets(self) -> int:
        return self.client_packets + self.server_packets

    @property
    def bytes(self) -> int:
        return self.client_bytes + self.server_bytes

    @property
    def duration(self) -> float:
        """Seconds from the flow's first packet to its last."""
        return max(0.0, self.end - self.start)

    def to_json(self) -> dict[str, object]:
        v = self.verdict
        out: dict[str, object] = {
            "transport": self.transport,
            "client": self.client,
            "client_port": self.client_port,
            "server": self.server,
            "server_port": self.server_port,
            "start": round(self.start, 6),
            "end": round(self.end, 6),
            "duration": round(self.duration, 6),
            "app": v.app,
            "label": v.label,
            "confirmed": v.confirmed,
            "spoofed": v.spoofed,
            "evidence": [{"kind": e.kind, "detail": e.detail} for e in v.evidence],
            "packets": self.packets,
            "bytes": self.bytes,
            "client_packets": self.client_packets,
            "server_packets": self.server_packets,
            "client_bytes": self.client_bytes,
            "server_bytes": self.server_bytes,
        }
        if self.longlink:
            out["longlink"] = [
                {"dir": p.direction, "cmd": p.cmd, "name": p.name, "seq": p.seq, "body": p.body_len}
                for p in self.longlink
            ]
        return out


class Stats:
    """A run's counters (mutable; the engine adds to them). Written out rather than made
    by ``@dataclass(slots=True)``: making a dataclass at import costs start-up."""

    __slots__ = (
        "bytes",
        "dns_answers",
        "evicted",
        "first_ts",
        "flows",
        "fragments",
        "last_ts",
        "linktypes",
        "malformed",
        "max_live_flows",
        "not_ip",
        "other_transport",
        "packets",
    )
    #: the fields, in constructor order
    FIELDS: ClassVar[tuple[str, ...]] = (
        "packets",
        "bytes",
        "not_ip",
        "other_transport",
        "malformed",
        "fragments",
        "flows",
        "max_live_flows",
        "first_ts",
        "last_ts",
        "dns_answers",
        "evicted",
        "linktypes",
    )

    def __init__(
        self,
        packets: int = 0,
        bytes: int = 0,
        not_ip: int = 0,
        other_transport: int = 0,
        malformed: int = 0,
        fragments: int = 0,
        flows: int = 0,
        max_live_flows: int = 0,
        first_ts: float | None = None,
        last_ts: float = 0.0,
        dns_answers: int = 0,
        evicted: int = 0,  # flows reported early because the flow table was full
        linktypes: set[int] | None = None,
    ) -> None:
        self.packets = packets
        self.bytes = bytes
        self.not_ip = not_ip
        self.other_transport = other_transport
        self.malformed = malformed
        self.fragments = fragments
        self.flows = flows
        self.max_live_flows = max_live_flows
        self.first_ts = first_ts
        self.last_ts = last_ts
        self.dns_answers = dns_answers
        self.evicted = evicted
        self.linktypes: set[int] = set() if linktypes is None else linktypes

    def _key(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in Stats.FIELDS)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Stats):
            return NotImplemented
        return self._key() == other._key()

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in Stats.FIELDS)
        return f"Stats({fields})"


class _Dir:
    """One direction's reassembly state."""

    __slots__ = ("buf", "done", "next", "ooo")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.next: int | None = None
        self.ooo: dict[int, bytes] = {}
        self.done = False


class _Flow:
    __slots__ = (
        "c",
        "c_bytes",
        "c_fin",
        "c_pkts",
        "client",
        "cport",
        "end_ts",
        "final",
        "first",
        "index",
        "key",
        "last",
        "mine",
        "quiet",
        "rkey",
        "s",
        "s_bytes",
        "s_fin",
        "s_pkts",
        "server",
        "sport",
        "tcp",
        "verdict",
    )

    def __init__(
        self,
        key: bytes,
        rkey: bytes,
        tcp: bool,
        client: str,
        cport: int,
        server: str,
        sport: int,
        ts: float,
    ) -> None:
        self.key = key  # client's src+dst addresses and ports, as on the wire
        self.rkey = rkey  # the same seen from the server
        self.quiet = False  # verdict final and nothing more to collect: count only
        self.tcp = tcp
        self.client = client
        self.cport = cport
        self.server = server
        self.sport = sport
        self.first = ts
        self.last = ts
        self.c_pkts = self.s_pkts = self.c_bytes = self.s_bytes = 0
        self.c = _Dir()
        self.s = _Dir()
        self.verdict: Verdict | None = None
        self.final = False
        self.c_fin = self.s_fin = False
        self.end_ts: float | None = None  # set when the flow is over (FIN both ways / RST)
        self.index = 0  # position in the capture of its first packet (sharded runs)
        self.mine = True  # False: another shard reports it (sharded runs: DNS flows)


def _ntop4(b: bytes) -> str:
    return inet_ntop(AF_INET, b)


def _ntop6(b: bytes) -> str:
    return inet_ntop(AF_INET6, b)


#: What :func:`_decode` says of a frame that is not a TCP/UDP packet it can use.
_MALFORMED, _NOT_IP, _FRAGMENT, _LINKTYPE, _OTHER = range(5)

#: A decoded TCP/UDP packet: (proto, key, src, dst, ports, l4, doff, end, ip_end, ntop);
#: ``doff`` is 0 for UDP.
Decoded = tuple[int, bytes, bytes, bytes, bytes, int, int, int, int, Callable[[bytes], str]]


def _decode(linktype: int, data: bytes) -> Decoded | int:
    """The general path's link, network and transport header checks: a TCP/UDP packet's
    fields, or why it is not one (``_MALFORMED`` ... ``_OTHER``). One function over
    60 lines on purpose: it runs per packet, and split into calls it was slower."""
    # ---- link layer -> (ethertype-ish version, offset)
    if linktype == _ETH:
        if len(data) < 14:
            return _MALFORMED
        etype = (data[12] << 8) | data[13]
        off = 14
        while etype in (0x8100, 0x88A8, 0x9100):
            if len(data) < off + 4:
                return _MALFORMED
            etype = (data[off + 2] << 8) | data[off + 3]
            off += 4
    elif linktype == _SLL:
        if len(data) < 16:
            return _MALFORMED
        etype = (data[14] << 8) | data[15]
        off = 16
    elif linktype == _SLL2:
        if len(data) < 20:
            return _MALFORMED
        etype = (data[0] << 8) | data[1]
        off = 20
    elif linktype in _RAW or linktype in (_RAW4, _RAW6):
        if not data:
            return _MALFORMED
        v = data[0] >> 4
        etype = 0x0800 if v == 4 else 0x86DD if v == 6 else 0
        off = 0
    elif linktype == _NULL:
        if len(data) < 5:
            return _MALFORMED
        v = data[4] >> 4
        etype = 0x0800 if v == 4 else 0x86DD if v == 6 else 0
        off = 4
    else:
        return _LINKTYPE
    # ---- network layer
    if etype == 0x0800:
        if len(data) < off + 20 or data[off] >> 4 != 4:
            return _MALFORMED
        ihl = (data[off] & 0x0F) * 4
        total = (data[off + 2] << 8) | data[off + 3]
        ip_end = off + total
        end = ip_end if ip_end <= len(data) else len(data)
        if ihl < 20 or total < ihl:
            return _MALFORMED
        frag = ((data[off + 6] << 8) | data[off + 7]) & 0x3FFF
        if frag & 0x1FFF:
            return _FRAGMENT  # later fragment: no ports to read
        proto = data[off + 9]
        src = data[off + 12 : off + 16]
        dst = data[off + 16 : off + 20]
        l4 = off + ihl
        ntop = _ntop4
    elif etype == 0x86DD:
        if len(data) < off + 40:
            return _MALFORMED
        plen = (data[off + 4] << 8) | data[off + 5]
        ip_end = off + 40 + plen
        end = ip_end if ip_end <= len(data) else len(data)
        proto = data[off + 6]
        src = data[off + 8 : off + 24]
        dst = data[off + 24 : off + 40]
        l4 = off + 40
        while proto in _V6_EXT or proto == 44:
            if l4 + 8 > end:
                return _MALFORMED
            if proto == 44:
                if _U16(data, l4 + 2)[0] & 0xFFF8:
                    return _FRAGMENT
                proto = data[l4]
                l4 += 8
            else:
                proto, l4 = data[l4], l4 + (data[l4 + 1] + 1) * 8
        ntop = _ntop6
    else:
        return _NOT_IP
    # ---- transport
    if proto == _TCP:
        if end - l4 < 20:
            return _MALFORMED
        doff = (data[l4 + 12] >> 4) * 4
        if doff < 20 or l4 + doff > end:
            return _MALFORMED
    elif proto == _UDP:
        if end - l4 < 8:
            return _MALFORMED
        doff = 0
    else:
        return _OTHER
    ports = data[l4 : l4 + 4]
    return (proto, src + dst + ports, src, dst, ports, l4, doff, end, ip_end, ntop)


def _shard_hash(addrs: int, ports: int, shards: int) -> int:
    """A flow's shard from its addresses XORed and its ports XORed (the same for both
    directions), mixed so that neighbouring addresses and ports spread. Every step stays
    under 2**62 (a machine integer when compiled: this runs at every new flow): IPv6
    addresses are folded to 32 bits, then two rounds of multiply and shift, and the top
    bits pick the shard."""
    if addrs >> 32:
        addrs ^= addrs >> 64
        addrs = (addrs ^ (addrs >> 32)) & 0xFFFFFFFF
    x = ((addrs ^ (ports << 16) ^ ports) * 0x2C9277B5) & 0xFFFFFFFF
    x = ((x ^ (x >> 15)) * 0x2C1B3C6D) & 0xFFFFFFFF
    return ((x ^ (x >> 12)) * shards) >> 32


def _frame_size(captured: int, wire: int, ip_end: int) -> int:
    """A frame's size in bytes: the link header plus what the IP header says
    (``ip_end``), but no more than the record's wire length, and never less than what
    was captured. So a snapped record counts its full packet and a damaged record that
    claims gigabytes counts at most 64 KiB plus headers."""
    size = ip_end if ip_end < wire else wire
    return size if size > captured else captured


def _server_port(src: int, dst: int) -> bool:
    """Without a handshake: is ``src`` (not ``dst``) the server's port?"""
    if src < 1024 <= dst:
        return True
    if dst < 1024 <= src:
        return False
    return src < dst and src in _KNOWN_SERVICE_PORTS


_KNOWN_SERVICE_PORTS = frozenset(
    {1080, 1194, 3128, 3478, 5222, 5223, 5228, 5353, 8000, 8080, 8443, 14000}
)


def _decode_longlink(data: bytes, direction: str) -> tuple[LonglinkPacket, ...]:
    """Decode the S32 packets at the start of ``data`` (the bytes we kept)."""
    if not isinstance(sniff_longlink(data), LonglinkHead):
        return ()
    dec = PacketDecoder()
    out: list[LonglinkPacket] = []
    try:
        dec.feed(data)
        while len(out) < _LONGLINK_SHOWN and (p := dec.next_packet()) is not None:
            out.append(LonglinkPacket(direction, p.cmd, _cmd_name(p.cmd), p.seq, len(p.body)))
    except RemoteProtocolError:
        pass
    return tuple(out)


def _cmd_name(cmd: int) -> str:
    from wxnet.proto import commands as C  # the command table loads protobuf: on demand

    if cmd == C.CMD_NOOP:
        return "noop"
    if cmd == C.reply_cmd(C.CMD_NOOP):
        return "noop reply"
    if cmd == C.CMD_NOTIFY:
        return "notify"
    if cmd == C.CMD_PUSH:
        return "push"
    if cmd in C.BY_CMD:
        return C.BY_CMD[cmd].name
    if cmd - C.REPLY_OFFSET in C.BY_CMD:
        return C.BY_CMD[cmd - C.REPLY_OFFSET].name + " reply"
    return "unknown"
