from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from wxnet.analyze.synth import tls_client_hello
from wxnet.proto.framing import encode_packet
from wxnet.proto.sniff import (
    NEED_DATA,
    HttpRequestHead,
    LonglinkHead,
    MmtlsRecordHead,
    TlsClientHello,
    parse_dns,
    sniff_http_request,
    sniff_longlink,
    sniff_mmtls,
    sniff_tls_client_hello,
)


def client_hello(sni: str, pad: int = 0) -> bytes:
    """The handshake message alone (no record layer)."""
    rec = tls_client_hello(sni, pad=pad)
    return rec[5:]


def records(hs: bytes, size: int) -> bytes:
    out = b""
    for i in range(0, len(hs), size):
        part = hs[i : i + size]
        out += b"\x16\x03\x01" + struct.pack(">H", len(part)) + part
    return out


def test_sni_and_alpn() -> None:
    got = sniff_tls_client_hello(records(client_hello("Res.WX.qq.com."), 16384))
    assert got == TlsClientHello("res.wx.qq.com", ("h2",), 0x0303)


def test_hello_across_records_and_segments() -> None:
    data = records(client_hello("long.weixin.qq.com", pad=3000), 700)
    for cut in range(0, len(data), 37):
        assert sniff_tls_client_hello(data[:cut]) is NEED_DATA, cut
    hello = sniff_tls_client_hello(data)
    assert isinstance(hello, TlsClientHello) and hello.sni == "long.weixin.qq.com"


def test_not_tls() -> None:
    assert sniff_tls_client_hello(b"GET / HTTP/1.1\r\n") is None
    assert (
        sniff_tls_client_hello(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00") is None
    )  # ServerHello


def test_http_head_fields_and_partial_heads() -> None:
    req = b"POST /cgi-bin/micromsg-bin/newsync HTTP/1.1\r\nHost: Short.Weixin.QQ.com:80\r\n"
    req += b"User-Agent: MicroMessenger Client\r\n\r\nBODY"
    head = sniff_http_request(req)
    assert isinstance(head, HttpRequestHead)
    assert (head.method, head.path, head.host) == (
        "POST",
        "/cgi-bin/micromsg-bin/newsync",
        "short.weixin.qq.com",
    )
    assert head.user_agent == "MicroMessenger Client" and head.body == b"BODY" and head.complete
    assert sniff_http_request(b"PO") is NEED_DATA
    assert sniff_http_request(b"POST /x HT") is NEED_DATA
    partial = sniff_http_request(req[:60])
    assert isinstance(partial, HttpRequestHead) and not partial.complete
    assert partial.path == "/cgi-bin/micromsg-bin/newsync"
    assert sniff_http_request(b"HELLO world\r\n") is None
    assert sniff_http_request(b"GET / HTTP/1.1\r\nBad header\r\n\r\n") is None


def test_http_absolute_form_and_ipv6_host() -> None:
    head = sniff_http_request(b"GET http://[2001:db8::1]:8080/a?b HTTP/1.1\r\n\r\n")
    assert isinstance(head, HttpRequestHead) and head.host == "2001:db8::1" and head.path == "/a?b"


def test_mmtls_heads() -> None:
    assert sniff_mmtls(bytes.fromhex("16f1040010")) == MmtlsRecordHead(0x16, 0xF104, 16)
    assert sniff_mmtls(bytes.fromhex("19f103")) is NEED_DATA
    assert sniff_mmtls(bytes.fromhex("16f1050010")) is None
    assert sniff_mmtls(bytes.fromhex("1603010010")) is None
    assert sniff_mmtls(bytes.fromhex("16f1040000")) is None


def test_longlink_head_from_wxnet_encoder() -> None:
    data = encode_packet(6, 15)
    assert sniff_longlink(data) == LonglinkHead(16, 6, 15)
    for cut in range(16):
        assert sniff_longlink(data[:cut]) is NEED_DATA
    assert sniff_longlink(b"\x00\x00\x00\x10\x00\x11" + bytes(10)) is None
    assert sniff_longlink(b"\x01" + bytes(15)) is None


def dns_response() -> bytes:
    def name(n: str) -> bytes:
        return b"".join(bytes([len(p)]) + p.encode() for p in n.split(".")) + b"\0"

    q = name("long.weixin.qq.com") + b"\x00\x01\x00\x01"
    # The CNAME's target starts at offset 48 and points into the question at 24 ("qq.com").
    cname = b"\xc0\x0c" + struct.pack(">HHIH", 5, 1, 60, 7) + b"\x04long\xc0\x18"
    a = b"\xc0\x30" + struct.pack(">HHIH", 1, 1, 300, 4) + bytes([203, 205, 151, 160])
    return struct.pack(">HHHHHH", 7, 0x8180, 1, 2, 0, 0) + q + cname + a


def test_dns_response_with_compression_and_cname() -> None:
    msg = parse_dns(dns_response())
    assert msg is not None and msg.is_response and msg.questions == ("long.weixin.qq.com",)
    assert msg.answers[0].value == "long.qq.com"
    assert msg.addresses_for("long.weixin.qq.com") == [("203.205.151.160", 300)]


def test_dns_pointer_loop_is_rejected() -> None:
    loop = struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01"
    assert parse_dns(loop) is None


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_sniffers_never_raise_on_garbage(data: bytes) -> None:
    for fn in (sniff_tls_client_hello, sniff_http_request, sniff_mmtls, sniff_longlink):
        fn(data)
    parse_dns(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 400))
def test_mangled_real_structures_never_raise(noise: bytes, at: int) -> None:
    for base in (records(client_hello("a.example"), 40), dns_response()):
        at %= len(base)
        mangled = base[:at] + noise + base[at + len(noise) :]
        sniff_tls_client_hello(mangled)
        parse_dns(mangled)
        sniff_tls_client_hello(mangled[:at])
