from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from dnslib import CNAME, QTYPE, RCODE, RR, A, DNSRecord
from hypothesis import given
from hypothesis import strategies as st

from tests.gate.gatedata import CATALOG, POLICY
from wxnet.gate.dnsfilter import DnsFilter, Forward, MalformedQuery, Reply
from wxnet.gate.policy import parse_policy

MON_10 = datetime(2026, 11, 23, 10, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
SUFFIXES = {"weixin.qq.com": "wechat", "qq.com": "qq", "push.apple.com": "apple-push"}


def app_for_name(name: str) -> str | None:
    best = None
    for suffix, app in SUFFIXES.items():
        if (name == suffix or name.endswith("." + suffix)) and (
            best is None or len(suffix) > len(best[0])
        ):
            best = (suffix, app)
    return best[1] if best else None


def make(policy_text: str = POLICY) -> DnsFilter:
    return DnsFilter(parse_policy(policy_text, CATALOG), app_for_name)


def query(name: str, qtype: str = "A") -> bytes:
    packed: bytes = DNSRecord.question(name, qtype).pack()
    return packed


def test_allow_only_forwards_allowed_and_fills_sets_from_the_answer() -> None:
    f = make()
    q = query("szshort.weixin.qq.com")
    act = f.on_query(q, "10.1.0.5", 5000, MON_10)
    assert isinstance(act, Forward) and act.app == "wechat" and act.group == "staff"
    ans = DNSRecord.parse(q).reply()
    ans.add_answer(RR("szshort.weixin.qq.com", QTYPE.A, rdata=A("203.0.113.7"), ttl=30))
    out = f.on_answer(act, ans.pack(), MON_10)
    assert out.elements == (("d_staff_wechat", "203.0.113.7", 300),)  # min-set-timeout floor
    assert out.learned[0].addresses == ("203.0.113.7",)
    assert out.record.verdict == "allow" and out.record.device == "office"


def test_allow_only_answers_other_names_nxdomain() -> None:
    act = make().on_query(query("video.example"), "10.1.0.5", 5000, MON_10)
    assert isinstance(act, Reply)
    r = DNSRecord.parse(act.data)
    assert r.header.rcode == RCODE.NXDOMAIN and r.header.qr
    assert act.record.verdict == "block" and act.record.name == "video.example"


def test_block_mode_is_the_inverse() -> None:
    f = make()
    assert isinstance(f.on_query(query("short.weixin.qq.com"), "10.1.0.9", 1, MON_10), Reply)
    assert isinstance(f.on_query(query("video.example"), "10.1.0.9", 1, MON_10), Forward)


def test_configured_answer_and_unrestricted_devices() -> None:
    f = make(POLICY.replace('spoof = "strict"', 'spoof = "strict"\nblocked-answer = "0.0.0.0"'))
    act = f.on_query(query("video.example"), "10.1.0.5", 1, MON_10)
    assert isinstance(act, Reply)
    assert [str(rr.rdata) for rr in DNSRecord.parse(act.data).rr] == ["0.0.0.0"]
    assert isinstance(f.on_query(query("video.example"), "192.168.9.9", 1, MON_10), Forward)


def test_mismatched_upstream_answer_is_rejected() -> None:
    f = make()
    act = f.on_query(query("short.weixin.qq.com"), "10.1.0.5", 1, MON_10)
    assert isinstance(act, Forward)
    other = DNSRecord.question("short.weixin.qq.com")
    other.header.id = (act.qid + 1) % 65536
    with pytest.raises(MalformedQuery):
        f.on_answer(act, other.reply().pack(), MON_10)


@given(st.binary(max_size=300))
def test_garbage_queries_decode_or_raise(data: bytes) -> None:
    f = make()
    try:
        f.on_query(data, "10.1.0.5", 1, MON_10)
    except MalformedQuery:
        pass


def test_only_the_questions_own_answer_chain_is_learned() -> None:
    f = make()
    q = query("szshort.weixin.qq.com")
    act = f.on_query(q, "10.1.0.5", 5000, MON_10)
    assert isinstance(act, Forward)
    ans = DNSRecord.parse(q).reply()
    ans.add_answer(RR("szshort.weixin.qq.com", QTYPE.CNAME, rdata=CNAME("x.weixin.qq.com")))
    ans.add_answer(RR("x.weixin.qq.com", QTYPE.A, rdata=A("203.0.113.8"), ttl=2**31))
    ans.add_answer(RR("video.example", QTYPE.A, rdata=A("198.18.3.10"), ttl=60))  # smuggled
    out = f.on_answer(act, ans.pack(), MON_10)
    assert out.elements == (("d_staff_wechat", "203.0.113.8", 86400),)  # TTL clamped
    assert [a.address for a in out.attested] == ["203.0.113.8"]
    assert out.learned[0].addresses == ("203.0.113.8",)
    assert out.record.admitted_by == "dns"


def test_a_cname_to_a_shared_cdn_is_never_put_in_the_kernel_sets() -> None:
    f = make()
    q = query("mmsns.weixin.qq.com")
    act = f.on_query(q, "10.1.0.5", 5000, MON_10)
    assert isinstance(act, Forward)
    ans = DNSRecord.parse(q).reply()
    ans.add_answer(RR("mmsns.weixin.qq.com", QTYPE.CNAME, rdata=CNAME("e1.cdn.example")))
    ans.add_answer(RR("e1.cdn.example", QTYPE.A, rdata=A("192.0.2.44"), ttl=60))
    out = f.on_answer(act, ans.pack(), MON_10)
    assert out.elements == ()
    assert [(a.group, a.app, a.address, a.kind) for a in out.attested] == [
        ("staff", "wechat", "192.0.2.44", "cdn")
    ]


def test_answers_for_block_groups_admit_nothing() -> None:
    f = make()
    q = query("video.example")
    act = f.on_query(q, "10.1.0.9", 5000, MON_10)  # boss: kids (block)
    assert isinstance(act, Forward)
    ans = DNSRecord.parse(q).reply()
    ans.add_answer(RR("video.example", QTYPE.A, rdata=A("192.0.2.5"), ttl=60))
    out = f.on_answer(act, ans.pack(), MON_10)
    assert out.elements == () and out.attested == ()
