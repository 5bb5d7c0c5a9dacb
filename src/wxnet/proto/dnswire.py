"""wxnet's one DNS codec (RFC 1035 section 4, with name compression), sans-IO.

The gateway's filter (:mod:`wxnet.gate.dnsfilter`), its DNS workers, the lab's DNS
server, the classifier and the capture analyser all read DNS through this module. It
reads only what they use: a query's id, flags and single question; the A, AAAA and
CNAME records of an answer with their owner names; and it builds the few replies the
gateway and the lab send (an error code, or addresses for the question). A general DNS
library spends most of its time building objects nobody here looks at
(``docs/benchmarks.md``, "DNS codec", measures the difference).

Readers:

* :func:`parse_query` -> :class:`Question` (exactly one question).
* :func:`answer_chain` -> ``(id, flags, question name, [Record])``: the gateway's
  answer reader (skips re-decoding a question it already knows).
* :func:`parse_message` -> :class:`DnsMessage` (any number of questions; the
  sniffers' and the analyser's reader), and :func:`parse_dns`, the same returning
  ``None`` instead of raising.
* :func:`rcode_of`.

Builders: :func:`error_reply`, :func:`address_reply`, :func:`addresses_reply`.

Every reader raises only :class:`DnsWireError` (a
:class:`~wxnet.proto.errors.RemoteProtocolError`) on any input. Names are returned in
lower case without the trailing dot (``""`` is the root); a label byte outside ASCII
becomes U+FFFD, so a name that no signature or policy can match is still a name.
Addresses are written as ``socket.inet_ntop`` writes them (as the capture reader writes
flow addresses).
"""

from __future__ import annotations

import ipaddress
import struct
from _socket import AF_INET, AF_INET6, inet_ntop  # not `socket`: ~5 ms of start-up
from typing import Final

from wxnet.proto.errors import RemoteProtocolError
from wxnet.proto.plain import Plain

__all__ = [
    "NOERROR",
    "NXDOMAIN",
    "QTYPE_A",
    "QTYPE_AAAA",
    "QTYPE_ANY",
    "QTYPE_CNAME",
    "REFUSED",
    "SERVFAIL",
    "DnsMessage",
    "DnsWireError",
    "Question",
    "Record",
    "address_reply",
    "addresses_reply",
    "answer_chain",
    "error_reply",
    "parse_dns",
    "parse_message",
    "parse_query",
    "qtype_name",
    "rcode_name",
    "rcode_of",
]

HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_Q = struct.Struct("!HH")
NOERROR, SERVFAIL, NXDOMAIN, REFUSED = 0, 2, 3, 5
QTYPE_A, QTYPE_AAAA, QTYPE_CNAME, QTYPE_ANY = 1, 28, 5, 255
_QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
           33: "SRV", 64: "SVCB", 65: "HTTPS", 255: "ANY"}  # fmt: skip
_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
MAX_QUESTIONS = 16  # parse_message: more is not a message anyone sends
MAX_ANSWERS = 256
_OPCODES = (0, 4, 5)  # QUERY, NOTIFY, UPDATE (parse_message)


class DnsWireError(RemoteProtocolError):
    """The bytes are not a DNS message of the expected shape."""


# The three value types are written out on :class:`~wxnet.proto.plain.Plain` (same
# constructor, attributes, ==, hash and repr as the frozen dataclasses they were): making
# a dataclass at import costs every command's start-up (that module says why).


class Question(Plain):
    """The header and question of a query; ``end`` is the offset just after the
    question (what a reply echoes)."""

    __slots__ = ("end", "flags", "id", "name", "qclass", "qtype")
    FIELDS = __match_args__ = ("id", "flags", "name", "qtype", "qclass", "end")

    def __init__(self, id: int, flags: int, name: str, qtype: int, qclass: int, end: int) -> None:
        self.id: Final = id
        self.flags: Final = flags
        self.name: Final = name
        self.qtype: Final = qtype
        self.qclass: Final = qclass
        self.end: Final = end

    def _key(self) -> tuple[int, int, str, int, int, int]:
        return (self.id, self.flags, self.name, self.qtype, self.qclass, self.end)

    @property
    def is_response(self) -> bool:
        return bool(self.flags & 0x8000)


class Record(Plain):
    """One answer record: owner name, type (1 A, 28 AAAA, 5 CNAME), value (the address
    or the CNAME's target name) and TTL."""

    __slots__ = ("owner", "rtype", "ttl", "value")
    FIELDS = __match_args__ = ("owner", "rtype", "value", "ttl")

    def __init__(self, owner: str, rtype: int, value: str, ttl: int) -> None:
        self.owner: Final = owner
        self.rtype: Final = rtype
        self.value: Final = value
        self.ttl: Final = ttl

    def _key(self) -> tuple[str, int, str, int]:
        return (self.owner, self.rtype, self.value, self.ttl)


class DnsMessage(Plain):
    """A message's header bits, question names and A/AAAA/CNAME answer records."""

    __slots__ = ("answers", "ident", "is_response", "questions", "rcode")
    FIELDS = __match_args__ = ("ident", "is_response", "rcode", "questions", "answers")

    def __init__(
        self,
        ident: int,
        is_response: bool,
        rcode: int,
        questions: tuple[str, ...],
        answers: tuple[Record, ...],
    ) -> None:
        self.ident: Final = ident
        self.is_response: Final = is_response
        self.rcode: Final = rcode
        self.questions: Final = questions
        self.answers: Final = answers

    def _key(self) -> tuple[int, bool, int, tuple[str, ...], tuple[Record, ...]]:
        return (self.ident, self.is_response, self.rcode, self.questions, self.answers)

    def addresses_for(self, name: str) -> list[tuple[str, int]]:
        """Addresses (with TTL) that answer ``name``, following CNAMEs in the answer."""
        wanted = {name.lower()}
        for _ in range(8):  # CNAME chains are short; bound the walk
            grew = False
            for a in self.answers:
                if a.rtype == QTYPE_CNAME and a.owner in wanted and a.value not in wanted:
                    wanted.add(a.value)
                    grew = True
            if not grew:
                break
        return [
            (a.value, a.ttl) for a in self.answers if a.rtype != QTYPE_CNAME and a.owner in wanted
        ]


def qtype_name(qtype: int) -> str:
    return _QTYPES.get(qtype, f"TYPE{qtype}")


def rcode_name(rcode: int) -> str:
    return _RCODES.get(rcode, f"RCODE{rcode}")


def _read_name(data: bytes, pos: int) -> tuple[str, int]:
    """Read a possibly compressed name; returns (name, offset after it in place)."""
    labels: list[str] = []
    size = len(data)
    end = -1
    jumps = 0
    total = 0
    while True:
        if pos >= size:
            raise DnsWireError("name runs past the end of the message")
        n = data[pos]
        if n & 0xC0 == 0xC0:
            if pos + 1 >= size:
                raise DnsWireError("truncated compression pointer")
            if end < 0:
                end = pos + 2
            jumps += 1
            if jumps > 32:
                raise DnsWireError("compression loop")
            pos = ((n & 0x3F) << 8) | data[pos + 1]
            continue
        if n & 0xC0:
            raise DnsWireError(f"unsupported label type 0x{n:02x}")
        pos += 1
        if n == 0:
            break
        if pos + n > size:
            raise DnsWireError("label runs past the end of the message")
        total += n + 1
        if total > 255:
            raise DnsWireError("name longer than 255 bytes")
        labels.append(data[pos : pos + n].decode("ascii", errors="replace").lower())
        pos += n
    return ".".join(labels), (end if end >= 0 else pos)


def _header(data: bytes) -> tuple[int, int, int, int, int, int]:
    if len(data) < HEADER.size:
        raise DnsWireError("shorter than a DNS header")
    return HEADER.unpack_from(data)


def _records(data: bytes, pos: int, count: int, at: dict[int, str]) -> tuple[list[Record], int]:
    """The A, AAAA and CNAME records among ``count`` records from ``pos``; other types
    are skipped. ``at`` maps offsets to names already decoded (owners are nearly always
    pointers to the question or to an earlier CNAME target) and grows as names are read.

    This is the hot loop of the gateway's answers and the analyser's DNS flows: a pointer
    to a known name costs one dict lookup, an address one ``inet_ntop``.
    """
    out: list[Record] = []
    size = len(data)
    for _ in range(count):
        if pos + 1 < size and data[pos] & 0xC0 == 0xC0:
            target = ((data[pos] & 0x3F) << 8) | data[pos + 1]
            owner = at.get(target)
            if owner is None:
                owner = at[target] = _read_name(data, pos)[0]
            pos += 2
        else:
            start = pos
            owner, pos = _read_name(data, pos)
            at[start] = owner
        if pos + 10 > size:
            raise DnsWireError("record header truncated")
        rtype, _rclass, ttl, rdlen = _RR.unpack_from(data, pos)
        pos += 10
        if pos + rdlen > size:
            raise DnsWireError("record data truncated")
        if rtype == QTYPE_A and rdlen == 4:
            out.append(Record(owner, rtype, inet_ntop(AF_INET, data[pos : pos + 4]), ttl))
        elif rtype == QTYPE_AAAA and rdlen == 16:
            out.append(Record(owner, rtype, inet_ntop(AF_INET6, data[pos : pos + 16]), ttl))
        elif rtype == QTYPE_CNAME:
            name = _read_name(data, pos)[0]
            at[pos] = name
            out.append(Record(owner, rtype, name, ttl))
        pos += rdlen
    return out, pos


def parse_query(data: bytes) -> Question:
    """The header and single question of a query.

    Raises:
        DnsWireError: too short, not exactly one question, or a malformed name.
    """
    qid, flags, qd, _an, _ns, _ar = _header(data)
    if qd != 1:
        raise DnsWireError(f"{qd} questions (expected 1)")
    name, pos = _read_name(data, HEADER.size)
    if pos + 4 > len(data):
        raise DnsWireError("question truncated")
    qtype, qclass = _Q.unpack_from(data, pos)
    return Question(qid, flags, name, qtype, qclass, pos + 4)


def answer_chain(
    data: bytes, query: bytes = b"", query_end: int = 0, query_name: str = ""
) -> tuple[int, int, str, list[Record]]:
    """(id, flags, question name, records) of an answer: its A, AAAA and CNAME records
    with their owner names, for the filter to follow the question's own chain.

    ``query`` (a query whose name ``query_name`` is already decoded, its question
    ending at ``query_end``): when the answer repeats that question byte for byte (as
    upstreams do) and the query's name has no compression pointer (its wire length is
    then exactly ``len(query_name) + 2``), the name is not decoded again: it is the same.

    Raises:
        DnsWireError: malformed message, or not exactly one question.
    """
    qid, flags, qd, an, _ns, _ar = _header(data)
    if qd != 1:
        raise DnsWireError(f"{qd} questions in the answer (expected 1)")
    if (
        query_name
        and query_end - HEADER.size - 4 == len(query_name) + 2
        and data[HEADER.size : query_end] == query[HEADER.size : query_end]
    ):
        qname, pos = query_name, query_end
    else:
        qname, pos = _read_name(data, HEADER.size)
        pos += 4
        if pos > len(data):
            raise DnsWireError("question truncated")
    records, _ = _records(data, pos, an, {HEADER.size: qname})
    return qid, flags, qname, records


def parse_message(data: bytes) -> DnsMessage:
    """A whole DNS message: question names and the A/AAAA/CNAME answer records.

    Raises:
        DnsWireError: malformed, an opcode other than QUERY/NOTIFY/UPDATE, or more
            than 16 questions or 256 answers.
    """
    ident, flags, qd, an, _ns, _ar = _header(data)
    if (flags >> 11) & 0xF not in _OPCODES or qd > MAX_QUESTIONS or an > MAX_ANSWERS:
        raise DnsWireError("not a DNS message wxnet reads")
    pos = HEADER.size
    at: dict[int, str] = {}
    questions: list[str] = []
    for _ in range(qd):
        start = pos
        name, pos = _read_name(data, pos)
        pos += 4
        if pos > len(data):
            raise DnsWireError("question truncated")
        at[start] = name
        questions.append(name)
    answers, _ = _records(data, pos, an, at)
    return DnsMessage(ident, bool(flags & 0x8000), flags & 0xF, tuple(questions), tuple(answers))


def parse_dns(data: bytes) -> DnsMessage | None:
    """:func:`parse_message`, or ``None`` when ``data`` is not a DNS message."""
    try:
        return parse_message(data)
    except DnsWireError:
        return None


def rcode_of(data: bytes) -> int:
    """The rcode of a message (its header's low 4 bits)."""
    return _header(data)[1] & 0xF


def _reply_header(q: Question, rcode: int, ancount: int, aa: bool, ra: bool) -> bytes:
    # QR=1, keep opcode and RD, clear TC/Z; AA and RA as asked; the rcode in the low 4 bits.
    flags = 0x8000 | (q.flags & 0x7900) | (0x0400 if aa else 0) | (0x0080 if ra else 0)
    return HEADER.pack(q.id, flags | (rcode & 0xF), 1, ancount, 0, 0)


def error_reply(
    query: bytes,
    q: Question,
    rcode: int,
    *,
    authoritative: bool = False,
    recursion_available: bool = True,
) -> bytes:
    """Answer ``query`` with ``rcode`` and no records (the question is echoed)."""
    head = _reply_header(q, rcode, 0, authoritative, recursion_available)
    return head + query[HEADER.size : q.end]


def addresses_reply(
    query: bytes,
    q: Question,
    addresses: tuple[str, ...] | list[str],
    ttl: int = 60,
    *,
    authoritative: bool = False,
    recursion_available: bool = True,
) -> bytes:
    """A NOERROR answer to ``query`` with those of ``addresses`` that fit the question's
    type (A for IPv4, AAAA for IPv6; ANY takes both), each as a record whose owner is a
    pointer to the question. None fit: an empty NOERROR ("no data").

    Raises:
        ValueError: an address that is not an IP address.
    """
    rrs: list[bytes] = []
    for address in addresses:
        packed = ipaddress.ip_address(address).packed
        rtype = QTYPE_A if len(packed) == 4 else QTYPE_AAAA
        if q.qtype in (rtype, QTYPE_ANY):
            rrs.append(b"\xc0\x0c" + _RR.pack(rtype, 1, ttl, len(packed)) + packed)
    head = _reply_header(q, NOERROR, len(rrs), authoritative, recursion_available)
    return head + query[HEADER.size : q.end] + b"".join(rrs)


def address_reply(query: bytes, q: Question, address: str, ttl: int = 60) -> bytes:
    """Answer with ``address`` when it is of the question's type (A or AAAA), else an
    empty NOERROR (the gateway's blocked answer; an ANY question gets no data).

    Raises:
        ValueError: ``address`` is not an IP address.
    """
    want = QTYPE_A if ipaddress.ip_address(address).version == 4 else QTYPE_AAAA
    if q.qtype != want:
        return error_reply(query, q, NOERROR)
    return addresses_reply(query, q, (address,), ttl)
