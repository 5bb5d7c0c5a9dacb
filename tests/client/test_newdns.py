from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wxnet.client.addresses import Address, AddressSource
from wxnet.client.newdns import (
    CachedDns,
    NewDnsError,
    long_candidates,
    parse_newdns,
    short_candidates,
)

DOC = b"""<?xml version="1.0"?>
<dns><retcode>0</retcode>
 <domainlist>
  <domain name="long.wxnet.local" timeout="600" ports="8080,80" property="major">
    <ip>10.1.0.1</ip><ip>10.1.0.2</ip></domain>
  <domain name="short.wxnet.local" timeout="300" ports="8000"><ip>10.2.0.1</ip></domain>
 </domainlist>
 <builtiniplist><ip name="long.wxnet.local" ports="8080">10.9.0.1</ip></builtiniplist>
 <clientip>127.0.0.1</clientip><timestamp>1732560000</timestamp>
 <signature2>aGVsbG8=</signature2><functionlist><change/></functionlist></dns>"""


def test_parse_contract_document() -> None:
    dns = parse_newdns(DOC)
    long = dns.domain("LONG.wxnet.local")
    assert long is not None
    assert long.ips == ("10.1.0.1", "10.1.0.2")
    assert long.ports == (8080, 80)
    assert dns.ttl == 300
    assert dns.builtin[0].ip == "10.9.0.1"
    assert dns.client_ip == "127.0.0.1" and dns.timestamp == 1732560000


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b"", "not well-formed"),
        (b"<html>hi</html>", "root element"),
        (b"<dns><retcode>-1</retcode></dns>", "retcode -1"),
        (
            b"<dns><domainlist><domain name='a'><ip>nope</ip></domain></domainlist></dns>",
            "not an IP",
        ),
        (b"<dns><domainlist><domain name='a' ports='99999'/></domainlist></dns>", "bad port"),
        (b"<dns><domainlist><domain name='a' timeout='x'/></domainlist></dns>", "integer"),
        (b'<!DOCTYPE d [<!ENTITY a "aaaa">]><dns>&a;</dns>', "entity"),
    ],
)
def test_garbage_is_a_clear_error(doc: bytes, message: str) -> None:
    with pytest.raises(NewDnsError, match=message):
        parse_newdns(doc)


@given(st.binary(max_size=300))
def test_random_bytes_parse_or_raise(data: bytes) -> None:
    try:
        parse_newdns(data)
    except NewDnsError:
        pass


@given(st.text(alphabet="<>/dnsiprtcoe=\"' 0123456789.", max_size=200))
def test_xmlish_text_parses_or_raises(data: str) -> None:
    try:
        parse_newdns(data)
    except NewDnsError:
        pass


def test_candidates_dns_then_cache_then_builtin_then_extra_port() -> None:
    cached = CachedDns(parse_newdns(DOC), fetched_at=100.0)
    got = long_candidates(
        "long.wxnet.local",
        [8080],
        {"long.wxnet.local": ["10.0.0.1"]},
        cached,
        now=200.0,
        builtin=[("192.0.2.1", 8080)],
        extra_port=14000,
    )
    assert got[0] == Address("10.0.0.1", 8080, AddressSource.DNS)
    assert [a.source for a in got[1:5]] == [AddressSource.NEWDNS] * 4
    assert got[1:3] == [
        Address("10.1.0.1", 8080, AddressSource.NEWDNS),
        Address("10.1.0.1", 80, AddressSource.NEWDNS),
    ]
    assert Address("10.9.0.1", 8080, AddressSource.BUILTIN) in got
    assert got[-1].extra and got[-1].port == 14000
    assert all(not a.extra for a in got[: -len({a.host for a in got if not a.extra})])


def test_stale_cache_is_skipped_and_dns_failure_uses_builtin() -> None:
    cached = CachedDns(parse_newdns(DOC), fetched_at=0.0)
    got = short_candidates("short.wxnet.local", [8000], {}, cached, now=299.0)
    assert got == [Address("10.2.0.1", 8000, AddressSource.NEWDNS)]
    got = short_candidates("short.wxnet.local", [8000], {}, cached, now=301.0, builtin=[("h", 1)])
    assert got == [Address("h", 1, AddressSource.BUILTIN)]
