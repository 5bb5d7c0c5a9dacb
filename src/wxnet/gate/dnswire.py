"""Just enough DNS wire format for the filter's hot path (RFC 1035 section 4), sans-IO.

The filter needs a query's id, flags and single question, a way to answer it with an
error code or one address, and the A/AAAA records (with TTLs) of an upstream answer.
A general DNS library spends most of its time building objects the filter never looks
at; this module reads only those fields. Malformed input raises :class:`DnsWireError`.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

__all__ = [
    "NOERROR",
    "NXDOMAIN",
    "QTYPE_A",
    "QTYPE_AAAA",
    "REFUSED",
    "SERVFAIL",
    "DnsWireError",
    "Question",
    "address_reply",
    "answer_chain",
    "answer_records",
    "error_reply",
    "parse_query",
    "qtype_name",
    "rcode_name",
    "rcode_of",
]

HEADER = struct.Struct("!HHHHHH")
NOERROR, SERVFAIL, NXDOMAIN, REFUSED = 0, 2, 3, 5
QTYPE_A, QTYPE_AAAA, QTYPE_CNAME = 1, 28, 5
_QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
           33: "SRV", 64: "SVCB", 65: "HTTPS", 255: "ANY"}  # fmt: skip
_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


class DnsWireError(ValueError):
    """The bytes are not a DNS message of the expected shape."""


@dataclass(frozen=True, slots=True)
class Question:
    id: int
    flags: int
    name: str  # lower case, no trailing dot ("" for the root)
    qtype: int
    qclass: int
    end: int  # offset just after the question in the query

    @property
    def is_response(self) -> bool:
        return bool(self.flags & 0x8000)


def qtype_name(qtype: int) -> str:
    return _QTYPES.get(qtype, f"TYPE{qtype}")


def rcode_name(rcode: int) -> str:
    return _RCODES.get(rcode, f"RCODE{rcode}")


def _read_name(data: bytes, pos: int) -> tuple[str, int]:
    """Read a possibly compressed name; returns (name, offset after it in place)."""
    labels: list[str] = []
    end = -1
    jumps = 0
    total = 0
    while True:
        if pos >= len(data):
            raise DnsWireError("name runs past the end of the message")
        n = data[pos]
        if n & 0xC0 == 0xC0:
            if pos + 1 >= len(data):
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
        if pos + n > len(data):
            raise DnsWireError("label runs past the end of the message")
        total += n + 1
        if total > 255:
            raise DnsWireError("name longer than 255 bytes")
        labels.append(data[pos : pos + n].decode("ascii", errors="replace").lower())
        pos += n
    return ".".join(labels), (end if end >= 0 else pos)


def _skip_name(data: bytes, pos: int) -> int:
    """Offset after the name at ``pos`` (answers' owner names are not needed)."""
    end = len(data)
    while True:
        if pos >= end:
            raise DnsWireError("name runs past the end of the message")
        n = data[pos]
        if n & 0xC0 == 0xC0:
            if pos + 1 >= end:
                raise DnsWireError("truncated compression pointer")
            return pos + 2
        if n & 0xC0:
            raise DnsWireError(f"unsupported label type 0x{n:02x}")
        pos += n + 1
        if n == 0:
            return pos


def parse_query(data: bytes) -> Question:
    """The header and single question of a query.

    Raises:
        DnsWireError: too short, not exactly one question, or a malformed name.
    """
    if len(data) < HEADER.size:
        raise DnsWireError("shorter than a DNS header")
    qid, flags, qd, _an, _ns, _ar = HEADER.unpack_from(data)
    if qd != 1:
        raise DnsWireError(f"{qd} questions (expected 1)")
    name, pos = _read_name(data, HEADER.size)
    if pos + 4 > len(data):
        raise DnsWireError("question truncated")
    qtype, qclass = struct.unpack_from("!HH", data, pos)
    return Question(qid, flags, name, qtype, qclass, pos + 4)


def _reply_header(q: Question, rcode: int, ancount: int) -> bytes:
    # QR=1, keep opcode and RD, set RA, clear AA/TC/Z; the rcode in the low 4 bits.
    flags = 0x8000 | (q.flags & 0x7900) | 0x0080 | (rcode & 0xF)
    return HEADER.pack(q.id, flags, 1, ancount, 0, 0)


def error_reply(query: bytes, q: Question, rcode: int) -> bytes:
    """Answer ``query`` with ``rcode`` and no records (the question is echoed)."""
    return _reply_header(q, rcode, 0) + query[HEADER.size : q.end]


def address_reply(query: bytes, q: Question, address: str, ttl: int = 60) -> bytes:
    """Answer with ``address`` when it fits the question's type, else an empty NOERROR."""
    ip = ipaddress.ip_address(address)
    want = QTYPE_A if ip.version == 4 else QTYPE_AAAA
    if q.qtype != want:
        return error_reply(query, q, NOERROR)
    rr = b"\xc0\x0c" + struct.pack("!HHIH", want, 1, ttl, len(ip.packed)) + ip.packed
    return _reply_header(q, NOERROR, 1) + query[HEADER.size : q.end] + rr


def rcode_of(data: bytes) -> int:
    if len(data) < HEADER.size:
        raise DnsWireError("shorter than a DNS header")
    return int(HEADER.unpack_from(data)[1] & 0xF)


def answer_records(data: bytes) -> tuple[int, int, list[tuple[str, int]]]:
    """(id, flags, [(address, ttl)]) of the A and AAAA records in an answer's answer
    section (CNAME chains included: every address record counts).

    Raises:
        DnsWireError: malformed message.
    """
    if len(data) < HEADER.size:
        raise DnsWireError("shorter than a DNS header")
    qid, flags, qd, an, _ns, _ar = HEADER.unpack_from(data)
    pos = HEADER.size
    for _ in range(qd):
        pos = _skip_name(data, pos) + 4
    out: list[tuple[str, int]] = []
    for _ in range(an):
        pos = _skip_name(data, pos)
        if pos + 10 > len(data):
            raise DnsWireError("record header truncated")
        rtype, _rclass, ttl, rdlen = struct.unpack_from("!HHIH", data, pos)
        pos += 10
        if pos + rdlen > len(data):
            raise DnsWireError("record data truncated")
        rdata = bytes(data[pos : pos + rdlen])
        pos += rdlen
        if rtype == QTYPE_A and rdlen == 4:
            out.append((socket.inet_ntop(socket.AF_INET, rdata), ttl))
        elif rtype == QTYPE_AAAA and rdlen == 16:
            out.append((socket.inet_ntop(socket.AF_INET6, rdata), ttl))
    if pos > len(data):
        raise DnsWireError("message truncated")
    return qid, flags, out


@dataclass(frozen=True, slots=True)
class Record:
    owner: str  # lower case, no trailing dot
    rtype: int
    value: str  # the address (A/AAAA) or the target name (CNAME)
    ttl: int


def answer_chain(data: bytes) -> tuple[int, int, str, list[Record]]:
    """(id, flags, question name, records) of an answer: its A, AAAA and CNAME records
    with their owner names, for the filter to follow the question's own chain.

    Raises:
        DnsWireError: malformed message.
    """
    if len(data) < HEADER.size:
        raise DnsWireError("shorter than a DNS header")
    qid, flags, qd, an, _ns, _ar = HEADER.unpack_from(data)
    if qd != 1:
        raise DnsWireError(f"{qd} questions in the answer (expected 1)")
    qname, pos = _read_name(data, HEADER.size)
    pos += 4
    out: list[Record] = []
    at: dict[int, str] = {HEADER.size: qname}  # names by offset: owners are pointers
    for _ in range(an):
        if pos + 1 < len(data) and data[pos] & 0xC0 == 0xC0:
            target = ((data[pos] & 0x3F) << 8) | data[pos + 1]
            owner = at.get(target) or _read_name(data, pos)[0]
            at[target] = owner
            pos += 2
        else:
            start = pos
            owner, pos = _read_name(data, pos)
            at[start] = owner
        if pos + 10 > len(data):
            raise DnsWireError("record header truncated")
        rtype, _rclass, ttl, rdlen = struct.unpack_from("!HHIH", data, pos)
        pos += 10
        if pos + rdlen > len(data):
            raise DnsWireError("record data truncated")
        if rtype == QTYPE_A and rdlen == 4:
            value = socket.inet_ntop(socket.AF_INET, data[pos : pos + 4])
            out.append(Record(owner, rtype, value, ttl))
        elif rtype == QTYPE_AAAA and rdlen == 16:
            value = socket.inet_ntop(socket.AF_INET6, data[pos : pos + 16])
            out.append(Record(owner, rtype, value, ttl))
        elif rtype == QTYPE_CNAME:
            name, _ = _read_name(data, pos)
            at[pos] = name
            out.append(Record(owner, rtype, name, ttl))
        pos += rdlen
    return qid, flags, qname, out
