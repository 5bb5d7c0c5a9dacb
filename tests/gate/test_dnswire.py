from __future__ import annotations

import pytest
from dnslib import AAAA, CNAME, QTYPE, RCODE, RR, A, DNSRecord
from hypothesis import given
from hypothesis import strategies as st

from wxnet.proto.dnswire import (
    NXDOMAIN,
    DnsWireError,
    address_reply,
    answer_chain,
    error_reply,
    parse_query,
)


def test_parse_query_agrees_with_dnslib() -> None:
    q = DNSRecord.question("SzShort.Weixin.QQ.com", "AAAA")
    q.header.id = 0x1234
    data = bytes(q.pack())
    parsed = parse_query(data)
    assert (parsed.id, parsed.name, parsed.qtype, parsed.qclass) == (
        0x1234, "szshort.weixin.qq.com", 28, 1,
    )  # fmt: skip
    assert parsed.end == len(data) and not parsed.is_response


def test_error_and_address_replies_decode_with_dnslib() -> None:
    data = bytes(DNSRecord.question("video.example", "A").pack())
    q = parse_query(data)
    r = DNSRecord.parse(error_reply(data, q, NXDOMAIN))
    assert r.header.id == q.id and r.header.qr and r.header.rcode == RCODE.NXDOMAIN
    assert str(r.q.qname) == "video.example." and r.header.rd
    r = DNSRecord.parse(address_reply(data, q, "0.0.0.0", ttl=30))
    assert [(str(rr.rname), str(rr.rdata), rr.ttl) for rr in r.rr] == [
        ("video.example.", "0.0.0.0", 30)
    ]
    r = DNSRecord.parse(address_reply(data, q, "::"))  # AAAA address for an A question
    assert r.rr == [] and r.header.rcode == RCODE.NOERROR


def test_answer_chain_follows_cname_chains() -> None:
    q = DNSRecord.question("short.weixin.qq.com")
    a = q.reply()
    a.add_answer(RR("short.weixin.qq.com", QTYPE.CNAME, rdata=CNAME("cdn.example"), ttl=600))
    a.add_answer(RR("cdn.example", QTYPE.A, rdata=A("203.0.113.5"), ttl=30))
    a.add_answer(RR("cdn.example", QTYPE.AAAA, rdata=AAAA("2001:db8::5"), ttl=20))
    qid, flags, _name, recs = answer_chain(bytes(a.pack()))
    assert qid == q.header.id and flags & 0x8000
    assert [(r.value, r.ttl) for r in recs if r.rtype != 5] == [
        ("203.0.113.5", 30),
        ("2001:db8::5", 20),
    ]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 11,
        b"\x12\x34\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00",  # two questions
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",  # loop
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05ab",  # label past the end
    ],
)
def test_malformed_queries_raise(data: bytes) -> None:
    with pytest.raises(DnsWireError):
        parse_query(data)


@given(st.binary(max_size=200))
def test_garbage_decodes_or_raises(data: bytes) -> None:
    for fn in (parse_query, answer_chain):
        try:
            fn(data)
        except DnsWireError:
            pass


def test_every_truncation_of_an_answer_decodes_or_raises() -> None:
    a = DNSRecord.question("x.example").reply()
    a.add_answer(RR("x.example", QTYPE.A, rdata=A("192.0.2.1")))
    wire = bytes(a.pack())
    for cut in range(len(wire)):
        with pytest.raises(DnsWireError):
            answer_chain(wire[:cut])
    assert [(r.value, r.ttl) for r in answer_chain(wire)[3]] == [("192.0.2.1", 0)]


def test_answer_chain_skips_the_known_question_only_when_it_is_the_same() -> None:
    q = DNSRecord.question("Short.WeiXin.qq.com")
    query = q.pack()
    qq = parse_query(query)
    ans = q.reply()
    ans.add_answer(RR("short.weixin.qq.com", QTYPE.A, rdata=A("203.0.113.7"), ttl=30))
    data = ans.pack()
    fast = answer_chain(data, query, qq.end, qq.name)
    assert fast == answer_chain(data) and fast[2] == "short.weixin.qq.com"
    # Another question (here: another case of the name) is decoded, not assumed.
    other = DNSRecord.question("short.weixin.qq.com").reply()
    other.header.id = q.header.id
    other.add_answer(RR("short.weixin.qq.com", QTYPE.A, rdata=A("203.0.113.8"), ttl=30))
    odata = other.pack()
    assert answer_chain(odata, query, qq.end, qq.name) == answer_chain(odata)
    evil = DNSRecord.question("evil.example").reply()
    evil.header.id = q.header.id
    assert answer_chain(evil.pack(), query, qq.end, qq.name)[2] == "evil.example"
    # A query whose name is a compression pointer never takes the short cut.
    ptr = query[:12] + b"\xc0\x0c" + query[-4:]
    with pytest.raises(DnsWireError):
        answer_chain(ptr, ptr, len(ptr), "x")
