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
