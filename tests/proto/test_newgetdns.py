"""newgetdns: one codec, built by the server and parsed by the client; round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wxnet.proto.newgetdns import (
    MAX_DOCUMENT,
    BuiltinIP,
    DnsDomain,
    NewDns,
    NewDnsError,
    build_newgetdns,
    parse_newgetdns,
)

GOLDEN = NewDns(
    0,
    (DnsDomain("long.wxnet.local", 600.0, (8080, 14000), ("127.0.0.1",)),),
    (BuiltinIP("long.wxnet.local", (8080,), "10.0.0.1"),),
    "127.0.0.1",
    1732560000,
)
GOLDEN_BYTES = (
    b"<?xml version='1.0' encoding='utf-8'?>\n"
    b"<dns><retcode>0</retcode><domainlist>"
    b'<domain name="long.wxnet.local" timeout="600" ports="8080,14000"><ip>127.0.0.1</ip>'
    b"</domain></domainlist><builtiniplist>"
    b'<ip name="long.wxnet.local" ports="8080">10.0.0.1</ip></builtiniplist>'
    b"<clientip>127.0.0.1</clientip><timestamp>1732560000</timestamp></dns>"
)


def test_golden_bytes_and_decode() -> None:
    assert build_newgetdns(GOLDEN) == GOLDEN_BYTES
    assert parse_newgetdns(GOLDEN_BYTES) == GOLDEN
    assert parse_newgetdns(GOLDEN_BYTES.decode()) == GOLDEN


def test_the_protocol_doc_example_parses() -> None:
    doc = parse_newgetdns(
        """<dns><retcode>0</retcode>
 <domainlist>
  <domain name="long.wxnet.local" timeout="600" ports="8080"><ip>127.0.0.1</ip></domain>
  <domain name="short.wxnet.local" timeout="600" ports="8000"><ip>127.0.0.1</ip></domain>
 </domainlist>
 <builtiniplist><ip name="long.wxnet.local" ports="8080">127.0.0.1</ip></builtiniplist>
 <clientip>127.0.0.1</clientip><timestamp>1732560000</timestamp></dns>"""
    )
    assert [d.name for d in doc.domains] == ["long.wxnet.local", "short.wxnet.local"]
    assert doc.domain("SHORT.wxnet.local") == DnsDomain(
        "short.wxnet.local", 600.0, (8000,), ("127.0.0.1",)
    )


names = st.from_regex(r"[a-z0-9][a-z0-9.-]{0,40}", fullmatch=True)
ips = st.ip_addresses().map(str)
ports = st.lists(st.integers(1, 65535), max_size=4).map(tuple)
domains = st.builds(
    DnsDomain, names, st.integers(0, 10**6).map(float), ports, st.lists(ips, max_size=4).map(tuple)
)
builtins = st.builds(BuiltinIP, names, ports, ips)
docs = st.builds(
    NewDns,
    st.just(0),
    st.lists(domains, max_size=5).map(tuple),
    st.lists(builtins, max_size=5).map(tuple),
    st.one_of(st.just(""), ips),
    st.integers(0, 2**40),
)


@settings(deadline=None)
@given(docs)
def test_parse_of_build_is_the_document(doc: NewDns) -> None:
    data = build_newgetdns(doc)
    assert parse_newgetdns(data) == doc
    assert build_newgetdns(parse_newgetdns(data)) == data


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b"<dns><retcode>-1</retcode></dns>", "retcode -1"),
        (b"<nope/>", "expected <dns>"),
        (b"<dns><domainlist><domain timeout='1'/></domainlist></dns>", "without a name"),
        (b"<dns><domainlist><domain name='a' ports='0'/></domainlist></dns>", "bad port"),
        (b"<dns><domainlist><domain name='a'><ip>x</ip></domain></domainlist></dns>", "not an IP"),
        (b"<!DOCTYPE dns [<!ENTITY a 'b'>]><dns/>", "DTD"),
        (b"<dns", "well-formed"),
        (b" " * (MAX_DOCUMENT + 1), "exceeds"),
    ],
)
def test_bad_documents_are_refused(doc: bytes, message: str) -> None:
    with pytest.raises(NewDnsError, match=message):
        parse_newgetdns(doc)


@settings(deadline=None)
@given(st.binary(max_size=300))
def test_garbage_parses_or_raises_newdns_error(data: bytes) -> None:
    try:
        parse_newgetdns(data)
    except NewDnsError:
        pass
