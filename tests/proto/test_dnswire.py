"""The one DNS codec: round trips through its builders, agreement with dnspython's
reading of dnspython-built answers, and robustness (any bytes decode or raise
``DnsWireError``, a ``WxnetError``)."""

from __future__ import annotations

import itertools
import pickle
import socket

import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from hypothesis import given, settings
from hypothesis import strategies as st

from wxnet.proto.dnswire import (
    NOERROR,
    QTYPE_A,
    QTYPE_AAAA,
    QTYPE_CNAME,
    DnsMessage,
    DnsWireError,
    Question,
    Record,
    addresses_reply,
    answer_chain,
    error_reply,
    parse_message,
    parse_query,
    rcode_of,
)
from wxnet.proto.errors import WxnetError
from wxnet.proto.framing import Packet

LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
NAME = st.lists(LABEL, min_size=1, max_size=5).map(".".join)
V4 = st.ip_addresses(v=4).map(str)
# inet_ntop spells IPv4-mapped and -compatible IPv6 addresses another way than ipaddress
V6 = st.ip_addresses(v=6).map(lambda a: socket.inet_ntop(socket.AF_INET6, a.packed))
ADDRS = st.lists(V4 | V6, unique=True, max_size=4)


def AF(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def query(name: str, qtype: str, qid: int) -> bytes:
    q = dns.message.make_query(name, qtype)
    q.id = qid
    return q.to_wire()


@settings(max_examples=100, deadline=None)
@given(NAME, st.sampled_from(["A", "AAAA"]), st.integers(0, 0xFFFF), ADDRS)
def test_reply_round_trip(name: str, qtype: str, qid: int, addrs: list[str]) -> None:
    data = query(name, qtype, qid)
    q = parse_query(data)
    assert (q.id, q.name, q.end) == (qid, name, len(data))
    reply = addresses_reply(data, q, addrs, 30)
    want = QTYPE_A if qtype == "A" else QTYPE_AAAA
    fits = [a for a in addrs if (":" in a) == (want == QTYPE_AAAA)]
    qid2, flags, qname, records = answer_chain(reply, data, q.end, q.name)
    assert (qid2, qname, rcode_of(reply)) == (qid, name, NOERROR) and flags & 0x8000
    assert [(r.owner, r.value, r.ttl) for r in records] == [(name, a, 30) for a in fits]
    msg = parse_message(reply)
    assert msg.questions == (name,) and msg.addresses_for(name) == [(a, 30) for a in fits]
    # dnspython reads the same reply the same way
    theirs = dns.message.from_wire(reply)
    theirs_addrs = [r.address for rrset in theirs.answer for r in rrset]
    assert sorted(socket.inet_pton(AF(a), a) for a in theirs_addrs) == sorted(
        socket.inet_pton(AF(a), a) for a in fits
    )
    err = dns.message.from_wire(error_reply(data, q, 3))
    assert err.rcode() == 3 and err.id == qid and not err.answer


@settings(max_examples=100, deadline=None)
@given(NAME, st.lists(NAME, max_size=4, unique=True), ADDRS.filter(bool))
def test_cname_chains_read_as_dnspython_builds_them(
    name: str, chain: list[str], addrs: list[str]
) -> None:
    """dnspython compresses owners and targets against each other; our reader must
    follow every pointer it makes."""
    chain = [c for c in chain if c != name]
    q = dns.message.make_query(name, "A")
    r = dns.message.make_response(q)
    owner = name
    for target in chain:
        r.answer.append(dns.rrset.from_text(owner + ".", 60, "IN", "CNAME", target + "."))
        owner = target
    for a in addrs:
        rt = "AAAA" if ":" in a else "A"
        r.answer.append(dns.rrset.from_text(owner + ".", 20, "IN", rt, a))
    wire = r.to_wire()
    _qid, _flags, qname, records = answer_chain(wire)
    assert qname == name
    cnames = [(x.owner, x.value) for x in records if x.rtype == QTYPE_CNAME]
    hops = [name, *chain]
    assert cnames == list(itertools.pairwise(hops))
    got = sorted((x.owner, x.value) for x in records if x.rtype != QTYPE_CNAME)
    assert got == sorted((owner, a) for a in addrs)
    msg = parse_message(wire)
    assert sorted(msg.addresses_for(name)) == sorted((a, 20) for a in addrs)


def _every_reader(data: bytes) -> None:
    for fn in (parse_query, answer_chain, parse_message, rcode_of):
        try:
            fn(data)
        except DnsWireError as exc:
            assert isinstance(exc, WxnetError)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_the_codecs_error(data: bytes) -> None:
    _every_reader(data)


@settings(max_examples=150, deadline=None)
@given(NAME, st.binary(min_size=1, max_size=40), st.integers(0, 200))
def test_mangled_answers_decode_or_raise_the_codecs_error(name: str, noise: bytes, at: int) -> None:
    r = dns.message.make_response(dns.message.make_query(name, "A"))
    r.answer.append(dns.rrset.from_text(name + ".", 60, "IN", "CNAME", "cdn." + name + "."))
    r.answer.append(dns.rrset.from_text("cdn." + name + ".", 60, "IN", "A", "192.0.2.1"))
    wire = r.to_wire()
    at %= len(wire)
    _every_reader(wire[:at] + noise + wire[at + len(noise) :])
    _every_reader(wire[:at])


def test_non_ascii_label_bytes_become_replacement_characters() -> None:
    data = b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x02a\xff\x00\x00\x01\x00\x01"
    assert parse_query(data).name == "a\ufffd"


def test_value_types_behave_as_the_frozen_dataclasses_they_replace() -> None:
    """Question, Record, DnsMessage (and framing's Packet) are plain slotted classes
    (wxnet.proto.plain): the same constructor (positional and keyword), attributes,
    ==, hash, repr and pickling as ``@dataclass(frozen=True, slots=True)`` gave."""
    q = Question(id=7, flags=0x0100, name="a.example", qtype=1, qclass=1, end=29)
    assert q == Question(7, 0x0100, "a.example", 1, 1, 29) and not q.is_response
    assert repr(q) == "Question(id=7, flags=256, name='a.example', qtype=1, qclass=1, end=29)"
    r = Record("a.example", QTYPE_A, "192.0.2.1", 30)
    m = DnsMessage(7, True, 0, ("a.example",), (r,))
    assert repr(r) == "Record(owner='a.example', rtype=1, value='192.0.2.1', ttl=30)"
    assert repr(m) == (
        "DnsMessage(ident=7, is_response=True, rcode=0, questions=('a.example',), "
        f"answers=({r!r},))"
    )
    p = Packet(6, 15)
    assert p == Packet(cmd=6, seq=15, body=b"") and repr(p) == "Packet(cmd=6, seq=15, body=b'')"
    for v in (q, r, m, p):
        assert not hasattr(v, "__dict__")
        assert pickle.loads(pickle.dumps(v)) == v and {v: 1}[type(v)(*v._key())] == 1
    assert r != Record("a.example", QTYPE_A, "192.0.2.1", 31) and r != ("a.example", 1)
    assert Packet(6, 15) != Record("a.example", 6, "", 15)
    match r:  # positional class patterns, as a dataclass's __match_args__ allowed
        case Record(owner, rtype, value, ttl):
            assert (owner, rtype, value, ttl) == ("a.example", QTYPE_A, "192.0.2.1", 30)
        case _:
            raise AssertionError(r)
