from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wxnet.analyze.synth import tls_client_hello
from wxnet.classify import Classifier, DnsMemory, FlowView, Verdict
from wxnet.proto.framing import encode_packet

FlowBytes = dict[tuple[str, str, int, str, int], tuple[bytes, bytes]]
Loader = Callable[[str], FlowBytes]

CLF = Classifier()


def kinds(v: Verdict) -> list[str]:
    return [e.kind for e in v.evidence]


def view(key: tuple[str, str, int, str, int], data: tuple[bytes, bytes]) -> FlowView:
    t, c, cp, s, sp = key
    return FlowView(t, c, cp, s, sp, data[0], data[1])


# ------------------------------------------------------------- real captures

QUICKPLAY_WECHAT = {
    ("tcp", "10.54.169.250", 54883, "203.205.151.160", 80): "hkextshort.weixin.qq.com",
    ("tcp", "10.54.169.250", 54885, "203.205.151.160", 80): "hkextshort.weixin.qq.com",
    ("tcp", "10.54.169.250", 35670, "203.205.147.215", 80): "hkminorshort.weixin.qq.com",
    ("tcp", "10.54.169.250", 42762, "203.205.129.101", 80): "hkextshort.weixin.qq.com",
    ("tcp", "10.54.169.250", 42761, "203.205.129.101", 80): "hkextshort.weixin.qq.com",
}


def test_quickplay_wechat_short_links_are_wechat_by_host_path_and_ua(capture_flows: Loader) -> None:
    flows = capture_flows("quickplay.pcap")
    for key, host in QUICKPLAY_WECHAT.items():
        v = CLF.classify(view(key, flows[key]))
        assert (v.app, v.label, v.confirmed, v.final) == ("wechat", "WeChat", True, True), key
        assert kinds(v) == ["http-host", "http-path", "http-ua"]
        assert host in v.evidence[0].detail and "weixin.qq.com" in v.evidence[0].detail
        assert "/cgi-bin/micromsg-bin/" in v.evidence[1].detail
        assert "MicroMessenger" in v.evidence[2].detail


def test_quickplay_has_exactly_the_five_wechat_flows(capture_flows: Loader) -> None:
    flows = capture_flows("quickplay.pcap")
    wechat = {k for k, d in flows.items() if CLF.classify(view(k, d)).app == "wechat"}
    assert wechat == set(QUICKPLAY_WECHAT)


def test_quickplay_android_connectivity_check(capture_flows: Loader) -> None:
    flows = capture_flows("quickplay.pcap")
    hits = [CLF.classify(view(k, d)) for k, d in flows.items()]
    conn = [v for v in hits if v.app == "android-connectivity"]
    assert conn and all(kinds(v)[:2] == ["http-host", "http-path"] for v in conn)
    assert all("generate_204" in v.evidence[1].detail for v in conn)


QQ_1KXUN = {
    ("tcp", "192.168.115.8", 49608, "203.205.151.234", 80): "vv.video.qq.com",
    ("tcp", "192.168.2.126", 41134, "129.226.107.77", 80): "cgi.connect.qq.com",
    ("tcp", "192.168.2.126", 38834, "119.45.78.184", 80): "pingma.qq.com",
}


def test_1kxun_qq_http_flows(capture_flows: Loader) -> None:
    flows = capture_flows("1kxun.pcap.gz")
    for key, host in QQ_1KXUN.items():
        v = CLF.classify(view(key, flows[key]))
        assert (v.app, v.label, v.confirmed) == ("qq", "QQ", True), key
        assert kinds(v)[0] == "http-host" and f'"{host}"' in v.evidence[0].detail


def test_1kxun_qq_dns_query_flow(capture_flows: Loader) -> None:
    flows = capture_flows("1kxun.pcap.gz")
    key = ("udp", "192.168.115.8", 54420, "8.8.8.8", 53)
    v = CLF.classify(view(key, flows[key]))
    assert v.app == "qq" and kinds(v) == ["dns"]
    assert '"vv.video.qq.com"' in v.evidence[0].detail


def test_1kxun_has_no_wechat_and_nothing_tencent_called_wechat(capture_flows: Loader) -> None:
    flows = capture_flows("1kxun.pcap.gz")
    assert not [k for k, d in flows.items() if CLF.classify(view(k, d)).app == "wechat"]


def test_youtube_upload_has_no_wechat_and_its_sni_is_read(capture_flows: Loader) -> None:
    flows = capture_flows("youtubeupload.pcap")
    verdicts = {k: CLF.classify(view(k, d)) for k, d in flows.items()}
    assert not [v for v in verdicts.values() if v.app in ("wechat", "qq")]
    tls = verdicts[("tcp", "192.168.2.27", 57452, "172.217.23.111", 443)]
    assert tls.app is None and tls.evidence[0].kind == "tls-sni"
    assert '"upload.youtube.com"' in tls.evidence[0].detail


def test_tls_sni_split_at_every_offset(capture_flows: Loader) -> None:
    hello = capture_flows("youtubeupload.pcap")[
        ("tcp", "192.168.2.27", 57452, "172.217.23.111", 443)
    ][0]
    reclen = int.from_bytes(hello[3:5], "big") + 5
    for cut in range(1, reclen):
        v = CLF.classify(FlowView("tcp", "10.0.0.2", 5000, "192.0.2.9", 443, hello[:cut]))
        assert not v.final and v.app is None, cut
    v = CLF.classify(FlowView("tcp", "10.0.0.2", 5000, "192.0.2.9", 443, hello[:reclen]))
    assert v.final and '"upload.youtube.com"' in v.evidence[0].detail


# ------------------------------------------------------- wxnet's own encoder


def test_2014_long_link_head_from_wxnet_encoder_on_8080() -> None:
    data = encode_packet(6, 15) + encode_packet(121, 1, b"a\nb")
    v = CLF.classify(FlowView("tcp", "10.0.0.2", 40000, "192.0.2.10", 8080, data))
    assert v.app == "wechat" and kinds(v) == ["longlink-2014"] and v.confirmed
    assert "cmd 6, seq 15" in v.evidence[0].detail


@pytest.mark.parametrize("port", [22, 5000, 9999])
def test_2014_head_off_the_wechat_ports_is_not_wechat(port: int) -> None:
    v = CLF.classify(FlowView("tcp", "10.0.0.2", 40000, "192.0.2.10", port, encode_packet(6, 1)))
    assert v.app is None


def test_2014_head_needs_sixteen_bytes() -> None:
    head = encode_packet(6, 15)
    for cut in range(1, 16):
        v = CLF.classify(FlowView("tcp", "10.0.0.2", 40000, "192.0.2.10", 8080, head[:cut]))
        assert not v.final and v.app is None


# ------------------------------------------------------------------ MMTLS


def test_mmtls_long_link_first_bytes() -> None:
    data = bytes.fromhex("16f10400a0") + bytes(160)
    v = CLF.classify(FlowView("tcp", "10.0.0.2", 40000, "192.0.2.10", 8080, data))
    assert v.app == "wechat" and kinds(v) == ["mmtls"] and "16 f1 04" in v.evidence[0].detail
    old = CLF.classify(FlowView("tcp", "10.0.0.2", 4, "192.0.2.10", 443, b"\x17\xf1\x03\x00\x10"))
    assert old.app == "wechat" and kinds(old) == ["mmtls"]


def test_mmtls_over_http_post_without_sni() -> None:
    # Citizen Lab's 2023 capture: POST /mmtls/<8 hex> to sgshort.wechat.com, body 19 f1 04.
    body = bytes.fromhex("19f104002a") + bytes(42)
    req = (
        b"POST /mmtls/0a1b2c3d HTTP/1.1\r\nHost: sgshort.wechat.com\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Length: 47\r\n\r\n" + body
    )
    v = CLF.classify(FlowView("tcp", "10.0.0.2", 40000, "192.0.2.10", 80, req))
    assert v.app == "wechat" and kinds(v) == ["mmtls", "http-host", "http-path"]
    assert "body" in v.evidence[0].detail


def test_absolute_form_request_line_and_the_seeds_too_narrow_regex() -> None:
    req = b"POST http://szshort.weixin.qq.com/cgi-bin/micromsg-bin/newsync HTTP/1.1\r\n\r\n"
    v = CLF.classify(FlowView("tcp", "10.0.0.2", 40000, "192.0.2.10", 80, req))
    assert v.app == "wechat" and kinds(v) == ["http-host", "http-path"]
    # S3's ^short\.weixin\.qq\.com would not have matched this host.
    seed = next(rx for rx, _ in CLF._set.regexes if "short" in rx.pattern)
    assert not seed.search("szshort.weixin.qq.com")


@pytest.mark.parametrize(
    "host", ["short.weixin.qq.com", "mmsns.qpic.cn", "mmbiz.qpic.cn", "res.wx.qq.com", "wx.qq.com"]
)
def test_the_seeds_hosts_are_still_wechat(host: str) -> None:
    assert CLF.app_for_name(host) == "wechat"
    assert CLF.app_for_name(host.upper() + ".") == "wechat"


def test_most_specific_suffix_wins() -> None:
    assert CLF.app_for_name("weixin.qq.com") == "wechat"
    assert CLF.app_for_name("monitor.uu.qq.com") == "qq"
    assert CLF.app_for_name("notweixin.qq.com") == "qq"
    assert CLF.app_for_name("weixin.qq.com.evil.example") is None
    assert CLF.app_for_name("") is None


# --------------------------------------------------------- DNS and spoofing


def test_dns_learned_address_labels_a_flow_without_payload() -> None:
    dns = DnsMemory()
    dns.learn("10.0.0.2", "long.weixin.qq.com", ["198.51.100.7"], ttl=300, now=100.0)
    flow = FlowView("tcp", "10.0.0.2", 40000, "198.51.100.7", 8080)
    v = CLF.classify(flow, dns, now=150.0)
    assert v.app == "wechat" and kinds(v) == ["dns"] and v.confirmed and not v.final
    assert '"long.weixin.qq.com"' in v.evidence[0].detail
    # Another client was told nothing; and the answer expires.
    assert CLF.classify(FlowView("tcp", "10.0.0.3", 1, "198.51.100.7", 8080), dns, 150).app is None
    assert CLF.classify(flow, dns, now=401.0).app is None


def test_spoofed_sni_to_an_address_no_dns_answer_gave() -> None:
    dns = DnsMemory()
    dns.learn("10.0.0.2", "weixin.qq.com", ["203.205.239.1"], 300, 0)
    req = b"GET / HTTP/1.1\r\nHost: weixin.qq.com\r\n\r\n"
    v = CLF.classify(FlowView("tcp", "10.0.0.2", 4, "198.51.100.66", 80, req), dns, 10)
    assert v.app == "wechat" and v.spoofed and not v.confirmed
    assert kinds(v) == ["http-host", "spoof"] and v.label == "WeChat (spoofed)"
    # The address DNS gave is fine, and so is one in WeChat's operator ranges; a Tencent
    # Cloud address (anyone can rent one) is not.
    ok = CLF.classify(FlowView("tcp", "10.0.0.2", 4, "203.205.239.1", 80, req), dns, 10)
    assert not ok.spoofed and kinds(ok) == ["http-host", "dns"]
    own = CLF.classify(FlowView("tcp", "10.0.0.2", 4, "203.205.180.1", 80, req), dns, 10)
    assert not own.spoofed and own.confirmed
    cloud = CLF.classify(FlowView("tcp", "10.0.0.2", 4, "43.135.1.1", 80, req), dns, 10)
    assert cloud.spoofed and not cloud.confirmed
    # Without DNS knowledge there is nothing to compare against.
    assert not CLF.classify(FlowView("tcp", "10.0.0.2", 4, "198.51.100.66", 80, req)).spoofed
    off = CLF.classify(
        FlowView("tcp", "10.0.0.2", 4, "198.51.100.66", 80, req), dns, 10, spoof_check=False
    )
    assert not off.spoofed


def test_dns_memory_is_bounded() -> None:
    dns = DnsMemory(max_entries=3)
    for i in range(10):
        dns.learn("10.0.0.2", f"h{i}.wechat.com", [f"192.0.2.{i}"], 300, 0)
    assert len(dns) == 3
    assert dns.names_for("10.0.0.2", "192.0.2.9", 1) == ["h9.wechat.com"]
    assert dns.names_for("10.0.0.2", "192.0.2.0", 1) == []
    assert dns.names_for("garbage", "192.0.2.9", 1) == []
    dns.learn("10.0.0.2", "x.wechat.com", ["not-an-ip"], 300, 0)
    assert dns.knows_client("10.0.0.2") and not dns.knows_client("10.0.0.9")


# ------------------------------------------------------------- weak labels


def test_tencent_range_is_only_tencent_unconfirmed(capture_flows: Loader) -> None:
    # A real WeChat server address, without the payload: never "WeChat".
    v = CLF.classify(FlowView("tcp", "10.54.169.250", 1, "203.205.151.160", 80))
    assert (v.app, v.label, v.confirmed) == ("tencent", "Tencent (unconfirmed)", False)
    assert kinds(v) == ["ip-range"]
    v6 = CLF.classify(FlowView("tcp", "2001:db8::1", 1, "2402:4e00:1::1", 443))
    # A Tencent Cloud block (tencent-cloud.toml): the same label, its own app id.
    assert (v6.app, v6.label, v6.confirmed) == ("tencent-cloud", "Tencent (unconfirmed)", False)


def test_wechat_sni_to_a_tencent_cloud_address_is_spoofed() -> None:
    # Anyone can rent a machine in a Tencent Cloud block and send a WeChat SNI to it.
    dns = DnsMemory()
    dns.learn("10.0.0.2", "short.weixin.qq.com", ["203.205.239.1"], 300, 0)
    hello = tls_client_hello("short.weixin.qq.com")
    for net in CLF.apps()["tencent-cloud"].ranges:
        server = str(net.network_address + 1)
        v = CLF.classify(FlowView("tcp", "10.0.0.2", 50000, server, 443, hello), dns, 10)
        assert v.app == "wechat" and v.spoofed and not v.confirmed, server
        assert "spoof" in kinds(v), server


@pytest.mark.parametrize(
    ("transport", "server", "port", "app", "expect"),
    [
        ("tcp", "192.0.2.1", 14000, "qq", ["port"]),
        ("tcp", "192.0.2.1", 5228, "google-push", ["port"]),
        ("tcp", "17.57.146.20", 5223, "apple-push", ["ip-range", "port"]),
        ("tcp", "192.0.2.1", 5223, "apple-push", ["port"]),
        ("udp", "17.253.26.125", 123, None, []),  # Apple's NTP is not push
    ],
)
def test_port_and_range_labels_are_unconfirmed(
    transport: str, server: str, port: int, app: str | None, expect: list[str]
) -> None:
    v = CLF.classify(FlowView(transport, "10.0.0.2", 50000, server, port, b"\x01\x02"))
    assert v.app == app and kinds(v) == expect and not v.confirmed


def test_push_and_connectivity_names() -> None:
    assert CLF.app_for_name("alt7-mtalk.google.com") == "google-push"
    assert CLF.app_for_name("mtalk.google.com") == "google-push"
    assert CLF.app_for_name("3-courier.push.apple.com") == "apple-push"
    req = b"GET /hotspot-detect.html HTTP/1.0\r\nHost: captive.apple.com\r\n\r\n"
    v = CLF.classify(FlowView("tcp", "10.0.0.2", 1, "17.253.1.1", 80, req))
    assert v.app == "ios-connectivity" and kinds(v) == ["http-host", "http-path"]


def test_udp_payload_signatures() -> None:
    hb = CLF.classify(
        FlowView("udp", "10.0.0.2", 1, "192.0.2.1", 8000, b"\xd1\x0a\x2e\x0a" + bytes(8))
    )
    assert hb.app == "wechat" and kinds(hb) == ["udp-payload"]
    qq = CLF.classify(
        FlowView("udp", "10.0.0.2", 1, "192.0.2.1", 8001, b"\x02\x00\x48\x00" + bytes(68))
    )
    assert qq.app == "qq" and kinds(qq) == ["udp-payload"]
    short = CLF.classify(FlowView("udp", "10.0.0.2", 1, "192.0.2.1", 8001, b"\x02\x00\x48\x00"))
    assert short.app is None


def test_dependencies_and_reasons_are_declared() -> None:
    apps = CLF.apps()
    assert set(apps["wechat"].dependencies) == {
        "android-connectivity",
        "ios-connectivity",
        "apple-push",
        "google-push",
    }
    for sig in apps.values():
        assert len(sig.reason) > 40, sig.id
    assert 14000 in apps["qq"].ports["tcp"] and 8080 in apps["wechat"].ports["tcp"]


# ---------------------------------------------------------------- garbage

flows = st.builds(
    FlowView,
    st.sampled_from(["tcp", "udp", "sctp"]),
    st.sampled_from(["10.0.0.2", "2001:db8::2", "junk"]),
    st.integers(0, 65535),
    st.sampled_from(["203.205.151.160", "17.1.1.1", "2402:4e00::1", "", "x"]),
    st.sampled_from([53, 80, 443, 8080, 14000, 5223, 0, 65535]),
    st.binary(max_size=300),
    st.binary(max_size=50),
)


@settings(max_examples=300, deadline=None)
@given(flows)
def test_garbage_never_raises(flow: FlowView) -> None:
    dns = DnsMemory()
    dns.learn("10.0.0.2", "weixin.qq.com", ["203.205.151.160"], 60, 0)
    v = CLF.classify(flow, dns, 1.0)
    assert isinstance(v, Verdict)
    assert v.app is None or v.app in CLF.apps()


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([b"\x16\x03\x01", b"POST ", b"\x16\xf1\x04", b"\x00\x00\x00\x10\x00\x10"]),
    st.binary(max_size=200),
)
def test_garbage_after_plausible_heads_never_raises(head: bytes, tail: bytes) -> None:
    for port in (80, 443, 8080):
        v = CLF.classify(FlowView("tcp", "10.0.0.2", 1, "192.0.2.1", port, head + tail))
        assert isinstance(v, Verdict)


def test_value_types_and_the_classifier_pickle() -> None:
    """The gateway pickles its classifier to its DNS workers, and they pickle flow records
    back: the hand-written value types must survive it on the compiled path too (a
    compiled class is not made without its ``__init__``'s arguments)."""
    import pickle

    from wxnet.analyze.flows import FlowRecord, LonglinkPacket
    from wxnet.classify.classifier import Classifier, Evidence, FlowView, Verdict
    from wxnet.proto.sniff import HttpRequestHead

    verdict = Verdict("wechat", "WeChat", (Evidence("dns", "weixin.qq.com"),), True, names=("a",))
    packet = LonglinkPacket("c2s", 6, "heartbeat", 1, 0)
    values: list[object] = [
        verdict,
        packet,
        FlowView("tcp", "10.0.0.1", 4000, "10.0.0.2", 443, b"\x16\x03", b""),
        FlowRecord("tcp", "a", 1, "b", 2, 0.5, 1.5, verdict, 3, 4, 50, 60, (packet,)),
        HttpRequestHead("GET", "/", "HTTP/1.1", "/", "h", None, (("Host", "h"),)),
    ]
    for value in values:
        assert pickle.loads(pickle.dumps(value)) == value
    classifier = pickle.loads(pickle.dumps(Classifier()))
    view = FlowView("udp", "10.0.0.1", 4000, "10.0.0.2", 8000, b"\x00" * 40)
    assert classifier.classify(view) == Classifier().classify(view)


def test_dns_memory_lookups_never_change_it() -> None:
    """What the memory holds (and so what it evicts once full) depends only on what it
    learned: `wxnet analyze --jobs N`'s workers look up different flows, and their
    memories must stay the one process's."""
    looked, untouched = DnsMemory(max_entries=2), DnsMemory(max_entries=2)
    for dns in (looked, untouched):
        dns.learn("10.0.0.2", "b.wechat.com", ["192.0.2.2"], 600, 0)
        dns.learn("10.0.0.2", "a.wechat.com", ["192.0.2.1"], 60, 0)
    assert looked.names_for("10.0.0.2", "192.0.2.1", 100) == []  # expired
    for dns in (looked, untouched):
        dns.learn("10.0.0.2", "c.wechat.com", ["192.0.2.3"], 600, 100)  # evicts the oldest
    for addr in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        assert looked.names_for("10.0.0.2", addr, 101) == untouched.names_for(
            "10.0.0.2", addr, 101
        ), addr
    assert untouched.names_for("10.0.0.2", "192.0.2.2", 101) == []
    assert len(looked) == len(untouched) == 2
