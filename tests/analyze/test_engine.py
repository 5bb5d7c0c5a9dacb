from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wxnet.analyze import Analyzer, CaptureReader, FlowRecord
from wxnet.analyze import synth as S
from wxnet.proto.framing import encode_packet

CAPTURES = Path(__file__).parent.parent / "data" / "captures"


def run(path: Path) -> tuple[Analyzer, list[FlowRecord]]:
    recs: list[FlowRecord] = []
    a = Analyzer(recs.append)
    with open(path, "rb") as f:
        for p in CaptureReader(f):
            a.packet(*p)
    a.finish()
    return a, recs


def kinds(r: FlowRecord) -> list[str]:
    return [e.kind for e in r.verdict.evidence]


# ----------------------------------------------------------- real captures


def test_quickplay_every_wechat_flow() -> None:
    _, recs = run(CAPTURES / "quickplay.pcap")
    wechat = sorted((r.client_port, r.server, kinds(r)) for r in recs if r.verdict.app == "wechat")
    assert wechat == [
        (35670, "203.205.147.215", ["http-host", "http-path", "http-ua"]),
        (42761, "203.205.129.101", ["http-host", "http-path", "http-ua"]),
        (42762, "203.205.129.101", ["http-host", "http-path", "http-ua"]),
        (54883, "203.205.151.160", ["http-host", "http-path", "http-ua"]),
        (54885, "203.205.151.160", ["http-host", "http-path", "http-ua"]),
    ]
    # nDPI's own packet counts for these flows (quickplay.pcap.out: 2+1, 1+2, 1+1, ...).
    by_port = {r.client_port: r.packets for r in recs}
    assert (by_port[54883], by_port[54885], by_port[35670]) == (3, 3, 2)
    assert not any(r.verdict.spoofed for r in recs)  # no DNS in this capture: not judged


def test_1kxun_every_qq_flow_and_dns_learning() -> None:
    a, recs = run(CAPTURES / "1kxun.pcap.gz")
    qq = {(r.transport, r.client_port, r.server): kinds(r) for r in recs if r.verdict.app == "qq"}
    assert qq == {
        ("udp", 54420, "8.8.8.8"): ["dns"],
        ("tcp", 49608, "203.205.151.234"): ["http-host", "dns"],  # DNS answer seen earlier
        ("tcp", 41134, "129.226.107.77"): ["http-host"],
        ("tcp", 38834, "119.45.78.184"): ["http-host"],
        ("tcp", 51888, "119.28.164.143"): ["http-host"],  # qzonestyle.gtimg.cn
    }
    assert a.stats.dns_answers > 0 and a.stats.packets == 1723
    assert not [r for r in recs if r.verdict.app == "wechat"]


def test_youtubeupload_has_no_wechat_flow() -> None:
    _, recs = run(CAPTURES / "youtubeupload.pcap")
    assert recs and not [r for r in recs if r.verdict.app in ("wechat", "qq")]
    assert any('"upload.youtube.com"' in e.detail for r in recs for e in r.verdict.evidence)


# ------------------------------------------------------------- synthetic


def handshake(c: str, s: str, cp: int, sp: int) -> list[bytes]:
    return [
        S.ip(c, s, 6, S.tcp(cp, sp, 1000, 0, S.SYN)),
        S.ip(s, c, 6, S.tcp(sp, cp, 5000, 1001, S.SYN | S.ACK)),
        S.ip(c, s, 6, S.tcp(cp, sp, 1001, 5001, S.ACK)),
    ]


def feed(frames: list[bytes], link: int = 101, **kw: float) -> tuple[Analyzer, list[FlowRecord]]:
    recs: list[FlowRecord] = []
    a = Analyzer(recs.append, **kw)  # type: ignore[arg-type]
    for i, f in enumerate(frames):
        a.packet(float(i), link, f)
    a.finish()
    return a, recs


def test_sni_split_over_out_of_order_segments_ipv6() -> None:
    data = S.tls_client_hello("res.wx.qq.com")
    c, s = "2001:db8::2", "2001:db8::99"
    parts = [data[:7], data[7:50], data[50:]]
    seqs = [1001, 1008, 1051]
    segs = [
        S.ip(c, s, 6, S.tcp(40000, 443, q, 5001, S.ACK, p))
        for q, p in zip(seqs, parts, strict=True)
    ]
    frames = [*handshake(c, s, 40000, 443), segs[2], segs[0], segs[0], segs[1]]
    _, recs = feed(frames)
    (r,) = recs
    assert r.verdict.app == "wechat" and kinds(r) == ["tls-sni"]
    assert (r.client, r.server, r.client_packets, r.server_packets) == (c, s, 6, 1)


def test_longlink_packets_decoded_on_8080_with_vlan_ethernet() -> None:
    c, s = "10.0.0.2", "192.0.2.10"
    up = encode_packet(6, 15) + encode_packet(121, 2, b"abc")
    down = encode_packet(1_000_000_006, 15)
    frames = [S.ether(f, vlans=(100, 200)) for f in handshake(c, s, 40001, 8080)]
    frames.append(
        S.ether(S.ip(c, s, 6, S.tcp(40001, 8080, 1001, 5001, S.ACK, up)), vlans=(100, 200))
    )
    frames.append(
        S.ether(
            S.ip(s, c, 6, S.tcp(8080, 40001, 5001, 1001 + len(up), S.ACK, down)), vlans=(100, 200)
        )
    )
    _, recs = feed(frames, link=1)
    (r,) = recs
    assert r.verdict.app == "wechat" and kinds(r) == ["longlink-2014"]
    got = [(p.direction, p.cmd, p.name, p.seq, p.body_len) for p in r.longlink]
    assert got[0] == ("c2s", 6, "noop", 15, 0)
    assert got[1][:2] == ("c2s", 121) and got[1][3:] == (2, 3)
    assert got[2] == ("s2c", 1_000_000_006, "noop reply", 15, 0)


@pytest.mark.parametrize("wrap", [S.sll, S.sll2])
def test_cooked_links_and_dns_learning(wrap: object) -> None:
    assert callable(wrap)
    link = 113 if wrap is S.sll else 276
    query, answer = dns_pair("long.weixin.qq.com", "198.51.100.7")
    frames = [
        wrap(S.ip("10.0.0.2", "10.0.0.1", 17, S.udp(5555, 53, query))),
        wrap(S.ip("10.0.0.1", "10.0.0.2", 17, S.udp(53, 5555, answer))),
        *[wrap(f) for f in handshake("10.0.0.2", "198.51.100.7", 40002, 8080)],
    ]
    a, recs = feed(frames, link=link)
    by = {r.transport: r for r in recs}
    assert by["udp"].verdict.app == "wechat" and kinds(by["udp"]) == ["dns"]
    assert by["tcp"].verdict.app == "wechat" and kinds(by["tcp"]) == ["dns"]
    assert a.stats.dns_answers == 1


def dns_pair(name: str, addr: str) -> tuple[bytes, bytes]:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    question = qname + b"\x00\x01\x00\x01"
    query = struct.pack(">HHHHHH", 9, 0x0100, 1, 0, 0, 0) + question
    rr = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 120, 4) + bytes(int(x) for x in addr.split("."))
    return query, struct.pack(">HHHHHH", 9, 0x8180, 1, 1, 0, 0) + question + rr


def test_finished_and_idle_flows_are_evicted_so_memory_follows_live_flows() -> None:
    recs: list[FlowRecord] = []
    a = Analyzer(recs.append, linger=1.0, udp_idle=5.0, sweep_every=1.0)
    peak = 0
    for i in range(300):
        c, s, cp = "10.0.0.2", "192.0.2.1", 10000 + i
        t = float(i)
        for f in handshake(c, s, cp, 80):
            a.packet(t, 101, f)
        a.packet(t, 101, S.ip(c, s, 6, S.tcp(cp, 80, 1001, 5001, S.FIN | S.ACK)))
        a.packet(t, 101, S.ip(s, c, 6, S.tcp(80, cp, 5001, 1002, S.FIN | S.ACK)))
        a.packet(t, 101, S.ip(c, "192.0.2.53", 17, S.udp(cp, 9999, b"x")))
        peak = max(peak, a.live_flows)
    assert peak <= 20 and len(recs) > 550
    a.finish()
    assert len(recs) == 600 and a.live_flows == 0


def test_max_flows_cap() -> None:
    recs: list[FlowRecord] = []
    a = Analyzer(recs.append, max_flows=50)
    for i in range(500):
        a.packet(0.0, 101, S.ip("10.0.0.2", "192.0.2.1", 17, S.udp(20000 + i, 9999, b"x")))
        assert a.live_flows <= 51
    a.finish()
    assert len(recs) == 500


def test_ipv4_fragments_and_malformed_frames_are_counted() -> None:
    frag = S.ipv4("10.0.0.2", "192.0.2.1", 17, b"\0" * 16, frag=10)
    a, recs = feed([frag, b"\x45\x00", b"", b"\x60" + bytes(10)], link=101)
    assert a.stats.fragments == 1 and a.stats.malformed == 3 and recs == []
    a, _ = feed([b"\0" * 40], link=147)
    assert a.stats.not_ip == 1 and a.stats.linktypes == {147}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=120), max_size=8), st.sampled_from([0, 1, 101, 113, 276]))
def test_garbage_frames_never_raise(frames: list[bytes], link: int) -> None:
    recs: list[FlowRecord] = []
    a = Analyzer(recs.append)
    for f in frames:
        a.packet(1.0, link, f)
        a.packet(1.0, link, S.ipv4("10.0.0.2", "10.0.0.3", 6, f))
        a.packet(1.0, link, S.ipv6("2001:db8::1", "2001:db8::2", 17, f))
    a.finish()


@pytest.mark.parametrize("name", ["quickplay.pcap", "1kxun.pcap.gz", "youtubeupload.pcap"])
def test_fast_run_loop_equals_packet_by_packet(name: str) -> None:
    _, slow = run(CAPTURES / name)
    fast: list[FlowRecord] = []
    a = Analyzer(fast.append)
    with open(CAPTURES / name, "rb") as f:
        a.run(CaptureReader(f))
    a.finish()
    assert sorted(map(repr, fast)) == sorted(map(repr, slow))


def test_fast_run_loop_on_synthetic_ethernet_flows() -> None:
    frames = []
    for i in range(30):
        c, s, cp = "10.0.0.2", f"203.205.151.{i + 1}", 30000 + i
        frames += [S.ether(f) for f in handshake(c, s, cp, 80)]
        req = b"POST /mmtls/00 HTTP/1.1\r\nHost: sgshort.wechat.com\r\n\r\n\x19\xf1\x04\x00\x01"
        frames.append(S.ether(S.ip(c, s, 6, S.tcp(cp, 80, 1001, 5001, S.ACK, req))))
        frames += [S.ether(S.ip(s, c, 6, S.tcp(80, cp, 5001, 1001, S.ACK, b"x" * 10)))] * 5
        frames.append(S.ether(S.ip(c, s, 17, S.udp(cp, 9000, b"\xd1\x0a\x2e\x0a1234"))))
        frames.append(S.ether(S.ip(s, c, 17, S.udp(9000, cp, b"pong"))))
    fast: list[FlowRecord] = []
    a = Analyzer(fast.append)
    a.run((float(i), 1, f, 0) for i, f in enumerate(frames))
    a.finish()
    _, slow = feed(frames, link=1)
    assert sorted(map(repr, fast)) == sorted(map(repr, slow))
    assert a.stats.packets == len(frames)
    tcp = [r for r in fast if r.transport == "tcp"]
    assert len(tcp) == 30 and all(r.verdict.app == "wechat" and r.packets == 9 for r in tcp)
    assert all(r.verdict.app == "wechat" for r in fast if r.transport == "udp")


# ------------------------------------------ fast run() loop vs packet() (generated)

_PAYLOADS = [
    b"",
    b"POST /cgi-bin/micromsg-bin/newsync HTTP/1.1\r\nHost: hkextshort.weixin.qq.com\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n",
    b"GET / HTTP/1.1\r\nHo",
    bytes.fromhex("16f10400a0") + bytes(40),
    encode_packet(6, 7),
    S.tls_client_hello("upload.youtube.com"),
    b"\xd1\x0a\x2e\x0a1234",
    b"\x00\x01\x02",
]
_ENDPOINTS = [
    ("10.0.0.2", "203.205.151.9", 40000, 80),
    ("2001:db8::2", "2001:db8::9", 40001, 8080),
    ("10.0.0.3", "198.51.100.7", 5223, 40002),
    ("2001:db8::3", "2001:db8::7", 53, 40003),
]

_packet_events = st.tuples(
    st.integers(0, len(_ENDPOINTS) - 1),  # which flow
    st.booleans(),  # from the client?
    st.booleans(),  # TCP (else UDP)
    st.sampled_from([S.ACK, S.SYN, S.SYN | S.ACK, S.ACK | S.PSH, S.FIN | S.ACK, S.RST]),
    st.integers(0, len(_PAYLOADS) - 1),
    st.sampled_from([(), (5,), (5, 6)]),  # VLAN tags
    st.integers(-40, 40),  # sequence number offset: retransmissions and gaps
    st.sampled_from(["", "", "", "cut", "iplen", "doff"]),  # damage
    st.integers(0, 200),
)


def _frame(event: tuple[int, bool, bool, int, int, tuple[int, ...], int, str, int]) -> bytes:
    which, from_client, is_tcp, flags, pay, vlans, jitter, damage, where = event
    c, s, cp, sp = _ENDPOINTS[which]
    src, dst, sport, dport = (c, s, cp, sp) if from_client else (s, c, sp, cp)
    payload = _PAYLOADS[pay]
    base = 1000 if from_client else 5000
    if is_tcp:
        l4 = S.tcp(sport, dport, base + 1 + jitter, 1, flags, payload)
    else:
        l4 = S.udp(sport, dport, payload)
    frame = bytearray(S.ether(S.ip(src, dst, 6 if is_tcp else 17, l4), vlans))
    ip = 14 + 4 * len(vlans)
    if damage == "cut":
        del frame[where % (len(frame) + 1) :]
    elif damage == "iplen":  # IPv4 total length / IPv6 payload length
        at = ip + (2 if ":" not in c else 4)
        frame[at : at + 2] = (where * 7).to_bytes(2, "big")
    elif damage == "doff" and is_tcp:
        l4_at = ip + (20 if ":" not in c else 40)
        frame[l4_at + 12] = (where % 16) << 4
    return bytes(frame)


@settings(max_examples=200, deadline=None)
@given(st.lists(_packet_events, max_size=40), st.sampled_from([0, 4, -10, 1 << 32]))
def test_fast_run_loop_equals_packet_by_packet_generated(
    events: list[tuple[int, bool, bool, int, int, tuple[int, ...], int, str, int]], wire: int
) -> None:
    """run()'s short paths (plain IPv4, VLAN-tagged and IPv6 Ethernet frames of known
    flows, quiet flows) give the same flows and counts as packet() on the same frames,
    including damaged ones."""
    frames = [_frame(e) for e in events]
    packets = [
        (float(i) * 0.5, 1, f, max(0, len(f) + wire) if wire else 0) for i, f in enumerate(frames)
    ]
    slow: list[FlowRecord] = []
    a = Analyzer(slow.append, sweep_every=3.0, linger=2.0)
    for p in packets:
        a.packet(*p)
    a.finish()
    fast: list[FlowRecord] = []
    b = Analyzer(fast.append, sweep_every=3.0, linger=2.0)
    b.run(packets)
    b.finish()
    assert list(map(repr, fast)) == list(map(repr, slow))
    for name in ("packets", "bytes", "malformed", "fragments", "flows", "not_ip"):
        assert getattr(b.stats, name) == getattr(a.stats, name), name


def test_fast_paths_taken_for_vlan_and_ipv6_frames() -> None:
    """The VLAN/IPv6 short path really runs (not only the general one): a flow's later
    frames are accounted without packet()."""
    c, s = "2001:db8::2", "2001:db8::9"
    frames = [S.ether(f, (7,)) for f in handshake(c, s, 40000, 443)]
    hello = S.tls_client_hello("upload.youtube.com")
    frames.append(S.ether(S.ip(c, s, 6, S.tcp(40000, 443, 1001, 5001, S.ACK, hello)), (7,)))
    frames += [S.ether(S.ip(s, c, 6, S.tcp(443, 40000, 5001, 1001, S.ACK, b"x" * 30)))] * 6
    recs: list[FlowRecord] = []
    a = Analyzer(recs.append)
    general = 0
    packet = a.packet

    def counting(ts: float, linktype: int, data: bytes, wire_len: int = 0) -> None:
        nonlocal general
        general += 1
        packet(ts, linktype, data, wire_len)

    a.packet = counting  # type: ignore[method-assign]
    a.run((float(i), 1, f, 0) for i, f in enumerate(frames))
    a.finish()
    assert general == 1  # only the SYN, which opens the flow
    assert a.stats.packets == len(frames) and len(recs) == 1
    assert recs[0].packets == len(frames) and kinds(recs[0]) == ["tls-sni"]
    assert '"upload.youtube.com"' in recs[0].verdict.evidence[0].detail


@pytest.mark.parametrize("vlans", [(), (9,), (9, 10)])
@pytest.mark.parametrize("client", ["10.0.0.2", "2001:db8::2"])
def test_damaged_frames_of_a_settled_flow_count_as_malformed_on_both_paths(
    vlans: tuple[int, ...], client: str
) -> None:
    """Once a flow's verdict is final, its frames take the short path: damaged ones must
    still be malformed there, not counted into the flow."""
    server = "203.205.151.9" if ":" not in client else "2001:db8::9"
    ip = 14 + 4 * len(vlans)
    frames = [S.ether(f, vlans) for f in handshake(client, server, 40000, 80)]
    frames.append(
        S.ether(S.ip(client, server, 6, S.tcp(40000, 80, 1001, 5001, S.ACK, _PAYLOADS[1])), vlans)
    )
    good = S.ether(S.ip(server, client, 6, S.tcp(80, 40000, 5001, 1001, S.ACK, b"y" * 20)), vlans)
    cut = good[: ip + (20 if ":" not in client else 40) + 12]  # TCP header cut short
    short_ip = bytearray(good)
    at = ip + (2 if ":" not in client else 4)
    short_ip[at : at + 2] = (10).to_bytes(2, "big")  # IP length shorter than its headers
    no_doff = bytearray(good)
    no_doff[ip + (20 if ":" not in client else 40) + 12] = 0x00  # TCP data offset 0
    frames += [good, cut, bytes(short_ip), bytes(no_doff), good]
    slow: list[FlowRecord] = []
    a = Analyzer(slow.append)
    for i, f in enumerate(frames):
        a.packet(float(i), 1, f)
    a.finish()
    fast: list[FlowRecord] = []
    b = Analyzer(fast.append)
    b.run((float(i), 1, f, 0) for i, f in enumerate(frames))
    b.finish()
    assert a.stats.malformed == 3 and slow[0].packets == len(frames) - 3
    assert slow[0].verdict.app == "wechat" and slow[0].verdict.final
    assert list(map(repr, fast)) == list(map(repr, slow))
    assert b.stats.malformed == a.stats.malformed and b.stats.packets == a.stats.packets


# ------------------------------------------------------------ flow bytes


def _pcap_with_wire_lengths(path: Path, frames: list[tuple[bytes, int]]) -> None:
    """A pcap whose records claim the given wire lengths (orig_len) for their bytes."""
    out = [S.pcap_header(1)]
    for i, (frame, wire) in enumerate(frames):
        out.append(struct.pack("<IIII", 1_700_000_000 + i, 0, len(frame), wire) + frame)
    path.write_bytes(b"".join(out))


def _read_both_ways(path: Path) -> tuple[list[FlowRecord], list[FlowRecord], int, int]:
    slow: list[FlowRecord] = []
    a = Analyzer(slow.append)
    with open(path, "rb") as f:
        for p in CaptureReader(f):
            a.packet(*p)
    a.finish()
    fast: list[FlowRecord] = []
    b = Analyzer(fast.append)
    with open(path, "rb") as f:
        reader = CaptureReader(f)
        b.run(reader)
        reader.close()
    b.finish()
    return slow, fast, a.stats.bytes, b.stats.bytes


@pytest.mark.parametrize("vlans", [(), (3,)])
@pytest.mark.parametrize("client", ["10.0.0.2", "2001:db8::2"])
def test_flow_bytes_never_trust_a_claimed_wire_length_alone(
    tmp_path: Path, vlans: tuple[int, ...], client: str
) -> None:
    """A damaged (fuzzed) record that claims 4 GB on the wire for 88 captured bytes
    counts what the IP header says, not 4 GB; both paths agree."""
    server = "203.205.151.9" if ":" not in client else "2001:db8::9"
    frames = [S.ether(f, vlans) for f in handshake(client, server, 40000, 80)]
    data = S.ether(S.ip(client, server, 6, S.tcp(40000, 80, 1001, 5001, S.ACK, bytes(20))), vlans)
    path = tmp_path / "fuzzed.pcap"
    _pcap_with_wire_lengths(
        path, [(f, len(f)) for f in frames] + [(data, 0xFFFFFFFF), (data, 0xFFFFFFFF)]
    )
    slow, fast, slow_total, fast_total = _read_both_ways(path)
    expected = sum(len(f) for f in frames) + 2 * len(data)
    assert [r.bytes for r in slow] == [expected]
    assert list(map(repr, fast)) == list(map(repr, slow))
    assert slow_total == fast_total == expected


@pytest.mark.parametrize("vlans", [(), (3,)])
@pytest.mark.parametrize("client", ["10.0.0.2", "2001:db8::2"])
def test_flow_bytes_of_snapped_records_come_from_the_ip_header(
    tmp_path: Path, vlans: tuple[int, ...], client: str
) -> None:
    """Records cut by a snap length count the whole packet (the IP header's length, which
    the wire length confirms), and an IP length beyond the wire length counts the wire
    length."""
    server = "203.205.151.9" if ":" not in client else "2001:db8::9"
    frames = [S.ether(f, vlans) for f in handshake(client, server, 40000, 80)]
    big = S.ether(S.ip(client, server, 6, S.tcp(40000, 80, 1001, 5001, S.ACK, bytes(1400))), vlans)
    snap = 96
    path = tmp_path / "snapped.pcap"
    recs = [(f, len(f)) for f in frames]
    recs.append((big[:snap], len(big)))  # snapped: full length on the wire
    recs.append((big[:snap], len(big) - 100))  # wire length shorter than IP says
    _pcap_with_wire_lengths(path, recs)
    slow, fast, slow_total, fast_total = _read_both_ways(path)
    expected = sum(len(f) for f in frames) + len(big) + len(big) - 100
    assert [r.bytes for r in slow] == [expected]
    assert list(map(repr, fast)) == list(map(repr, slow))
    assert slow_total == fast_total == expected


def test_non_ip_frames_count_their_captured_bytes() -> None:
    a = Analyzer(lambda r: None)
    a.packet(0.0, 1, bytes(12) + b"\x08\x06" + bytes(28), 0xFFFFFFFF)  # ARP, claims 4 GB
    assert a.stats.bytes == 42 and a.stats.not_ip == 1
