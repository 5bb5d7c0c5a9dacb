"""``Analyzer.run_capture``: the records of a plain pcap file cut inside the packet loop
(fixed-offset reads, bytes copied only when a flow collects them; another shard's flows
settled at their first packet) give the same flows, statistics and errors as the
reader's packets fed one by one, in one process and sharded."""

from __future__ import annotations

import heapq
import os
import struct
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from wxnet.analyze import Analyzer, CaptureError, CaptureReader, FlowRecord
from wxnet.analyze import synth as S
from wxnet.analyze.engine import Stats

_STATS = list(Stats.FIELDS)
_PAYLOADS = [
    b"",
    b"POST /cgi-bin/micromsg-bin/newsync HTTP/1.1\r\nHost: hkextshort.weixin.qq.com\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n",
    S.tls_client_hello("upload.youtube.com"),
    b"\x00\x01\x02" * 20,
]
_HOSTS = [
    ("10.0.0.2", "203.205.151.9"),
    ("2001:db8::2", "2001:db8::9"),
    ("10.0.0.3", "198.51.100.7"),
]

_events = st.tuples(
    st.integers(0, len(_HOSTS) - 1),
    st.integers(0, 7),  # client port offset: flows that fall in different shards
    st.sampled_from([80, 443, 53, 8080]),  # server port (53: DNS, seen by every shard)
    st.booleans(),  # from the client?
    st.booleans(),  # TCP (else UDP)
    st.sampled_from([S.ACK, S.SYN, S.SYN | S.ACK, S.ACK | S.PSH, S.FIN | S.ACK, S.RST]),
    st.integers(0, len(_PAYLOADS) - 1),
    st.sampled_from([(), (), (5,), (5, 6)]),  # VLAN tags
    st.sampled_from(["", "", "", "", "cut", "iplen", "doff", "options", "frag", "arp"]),
    st.integers(0, 200),
    st.sampled_from([0.0, 0.1, 0.5, 2.5, 7.0]),  # time since the previous packet
)
Event = tuple[int, int, int, bool, bool, int, int, tuple[int, ...], str, int, float]


def _frame(e: Event) -> bytes:
    host, cp, sp, from_client, is_tcp, flags, pay, vlans, damage, where, _gap = e
    c, s = _HOSTS[host]
    cport = 40000 + cp
    src, dst, sport, dport = (c, s, cport, sp) if from_client else (s, c, sp, cport)
    l4 = (
        S.tcp(sport, dport, 1001 + where, 1, flags, _PAYLOADS[pay])
        if is_tcp
        else S.udp(sport, dport, _PAYLOADS[pay])
    )
    frame = bytearray(S.ether(S.ip(src, dst, 6 if is_tcp else 17, l4), vlans))
    ip = 14 + 4 * len(vlans)
    v6 = ":" in c
    if damage == "cut":
        del frame[where % (len(frame) + 1) :]
    elif damage == "iplen":
        at = ip + (4 if v6 else 2)
        frame[at : at + 2] = (where * 7).to_bytes(2, "big")
    elif damage == "doff" and is_tcp:
        frame[ip + (40 if v6 else 20) + 12] = (where % 16) << 4
    elif damage == "options" and not v6:  # IPv4 header with 4 bytes of options
        frame[ip] = 0x46
        frame[ip + 20 : ip + 20] = b"\x01\x01\x01\x00"
        frame[ip + 2 : ip + 4] = ((frame[ip + 2] << 8 | frame[ip + 3]) + 4).to_bytes(2, "big")
    elif damage == "frag" and not v6:  # a first fragment, or a later one
        frame[ip + 6 : ip + 8] = (0x2000 if where % 2 else 0x0010).to_bytes(2, "big")
    elif damage == "arp":
        frame[12:14] = b"\x08\x06"
    return bytes(frame)


def _pcap(events: list[Event], big: bool, nano: bool, wire: int, tail: str) -> bytes:
    out = [S.pcap_header(1, nano=nano, big=big)]
    order = ">" if big else "<"
    ts = 1_700_000_000.0
    for e in events:
        ts += e[-1]
        frame = _frame(e)
        sec = int(ts)
        frac = round((ts - sec) * (1e9 if nano else 1e6))
        orig = max(0, len(frame) + wire) if wire != 1 else 0xFFFFFFFF
        out.append(struct.pack(order + "IIII", sec, frac, len(frame), orig) + frame)
    if tail == "cut":
        out[-1] = out[-1][: len(out[-1]) // 2]
    elif tail == "huge" and len(out) > 1:
        out.append(struct.pack(order + "IIII", 0, 0, 1 << 30, 1 << 30) + bytes(40))
    elif tail == "header":
        out.append(bytes(9))
    return b"".join(out)


Tagged = tuple[tuple[float, int, float, int], FlowRecord]


def _feed(
    path: str, how: str, shard: int = 0, shards: int = 1
) -> tuple[list[Tagged], Analyzer, object]:
    recs: list[Tagged] = []
    a: Analyzer

    def emit(rec: FlowRecord) -> None:
        recs.append((a.emit_tag, rec))

    a = Analyzer(emit, sweep_every=3.0, linger=2.0, udp_idle=6.0, tcp_idle=9.0)
    error = None
    with open(path, "rb") as f:
        reader = CaptureReader(f)
        try:
            if how == "packets":
                for p in reader:
                    a.packet(*p)
            elif how == "capture":
                a.run_capture(reader)
            else:
                a.run_shard(reader, shard, shards)
        except CaptureError as exc:
            error = (exc.reason, exc.offset)
        finally:
            reader.close()
    a.finish()
    return recs, a, error


def _stats(a: Analyzer) -> list[object]:
    return [getattr(a.stats, name) for name in _STATS]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(_events, min_size=1, max_size=50),
    st.booleans(),
    st.booleans(),
    st.sampled_from([0, 4, -10, 1]),
    st.sampled_from(["", "", "cut", "huge", "header"]),
)
def test_mapped_loop_and_shards_equal_packet_by_packet(
    events: list[Event], big: bool, nano: bool, wire: int, tail: str
) -> None:
    fd, path = tempfile.mkstemp(suffix=".pcap")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_pcap(events, big, nano, wire, tail))
        want, ref, want_error = _feed(path, "packets")
        got, one, error = _feed(path, "capture")
        assert [repr(r) for _, r in got] == [repr(r) for _, r in want]
        assert _stats(one) == _stats(ref) and error == want_error
        for shards in (2, 3):
            parts = [_feed(path, "shard", k, shards) for k in range(shards)]
            merged = heapq.merge(*(p[0] for p in parts), key=lambda t: t[0])
            assert [repr(r) for _, r in merged] == [repr(r) for _, r in want]
            for _, a, err in parts:
                assert _stats(a) == _stats(ref) and err == want_error
    finally:
        os.unlink(path)
