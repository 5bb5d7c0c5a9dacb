"""Byte sniffers: read what the first bytes of a flow say, without owning any I/O.

Each ``sniff_*`` function takes the first bytes of one direction of a flow (in order,
already reassembled) and returns one of three things:

* a frozen record describing what it found (``TlsClientHello``, ``HttpRequestHead``,
  ``MmtlsRecordHead``, ``LonglinkHead``);
* :data:`NEED_DATA` when the bytes so far are a proper prefix of what it looks for and
  more bytes could complete it;
* ``None`` when the bytes cannot be what it looks for.

They never raise on any input (tests feed them garbage with hypothesis) and never read
more than a bounded prefix. The classifier (:mod:`wxnet.classify`) combines them.

Wire facts used here:

* TLS ClientHello (RFC 8446 4.1.2, RFC 6066 section 3 for server_name, RFC 7301 for
  ALPN). The hello may span several TLS records and several TCP segments.
* MMTLS record head (docs/classify.md, "Evidence order"): type byte 0x15/0x16/0x17/0x19, then
  ``f1 03`` (older clients) or ``f1 04``, then a 16-bit length.
* The 2014 long-link head (S32): ``u32 total, u16 16, u16 1, u32 cmd, u32 seq``.
* HTTP/1.x request head (RFC 9112 section 3): request line, header fields, CRLF CRLF;
  absolute-form targets (``POST http://host/path``) are accepted as proxies send them.

DNS is read by :mod:`wxnet.proto.dnswire` (the one DNS codec); ``parse_dns``,
``DnsMessage`` and ``DnsAnswer`` (its ``Record``) are re-exported here for the
classifier and the analyser.
"""

from __future__ import annotations

import enum
from typing import Final, final

from wxnet.proto.dnswire import DnsMessage, parse_dns
from wxnet.proto.dnswire import Record as DnsAnswer
from wxnet.proto.framing import HEADER, HEADER_LEN, MAX_PACKET, PROTOCOL_VERSION
from wxnet.proto.value import Value

__all__ = [
    "MMTLS_RECORD_TYPES",
    "MMTLS_VERSIONS",
    "NEED_DATA",
    "DnsAnswer",
    "DnsMessage",
    "HttpRequestHead",
    "LonglinkHead",
    "MmtlsRecordHead",
    "NeedData",
    "TlsClientHello",
    "parse_dns",
    "sniff_http_request",
    "sniff_longlink",
    "sniff_mmtls",
    "sniff_tls_client_hello",
]


class NeedData(enum.Enum):
    """The bytes so far are consistent with the pattern but too short to decide."""

    NEED_DATA = "need-data"


NEED_DATA = NeedData.NEED_DATA

#: Bytes of a TLS ClientHello we are willing to buffer (a post-quantum key share makes
#: hellos of ~1.8 KB common; 16 KiB is one full TLS record).
TLS_SNIFF_LIMIT = 16384
#: Bytes of an HTTP request head we are willing to read.
HTTP_SNIFF_LIMIT = 8192

MMTLS_RECORD_TYPES = frozenset({0x15, 0x16, 0x17, 0x19})
MMTLS_VERSIONS = frozenset({0xF103, 0xF104})

_HTTP_METHODS = (
    b"GET",
    b"POST",
    b"HEAD",
    b"PUT",
    b"DELETE",
    b"OPTIONS",
    b"CONNECT",
    b"PATCH",
    b"TRACE",
)
_HTTP_STARTS = tuple(m + b" " for m in _HTTP_METHODS)


# --------------------------------------------------------------------------- TLS


# TlsClientHello, MmtlsRecordHead and LonglinkHead, like HttpRequestHead below, are
# written out on :class:`wxnet.proto.value.Value` rather than made by a frozen dataclass
# (same constructor, attributes, ==, hash and repr): making a dataclass at import costs
# start-up (`exec` per method, `inspect`), and its ``__init__`` stays interpreted.


@final
class TlsClientHello(Value):
    """What a ClientHello tells a middlebox: the name asked for and the ALPN offer."""

    __slots__ = ("alpn", "legacy_version", "sni")
    FIELDS = ("sni", "alpn", "legacy_version")

    def __init__(
        self, sni: str | None, alpn: tuple[str, ...] = (), legacy_version: int = 0x0303
    ) -> None:
        self.sni: Final = sni
        self.alpn: Final = alpn
        self.legacy_version: Final = legacy_version

    def _key(self) -> tuple[str | None, tuple[str, ...], int]:
        return (self.sni, self.alpn, self.legacy_version)


class _Short(Exception):
    """Internal: a length field points past the end of the buffer."""


class _Bad(Exception):
    """Internal: the bytes are not the structure we parse."""


def _tls_handshake_bytes(data: bytes, limit: int) -> bytes | NeedData | None:
    """Concatenate the payloads of the leading TLS handshake records."""
    out = bytearray()
    pos = 0
    n = len(data)
    while True:
        if n - pos < 5:
            if pos == 0 and not _tls_record_prefix_ok(data):
                return None
            return bytes(out) if out and _handshake_complete(out) else NEED_DATA
        ctype, major, minor = data[pos], data[pos + 1], data[pos + 2]
        length = (data[pos + 3] << 8) | data[pos + 4]
        if ctype != 0x16 or major != 3 or minor > 4 or length == 0 or length > 16384 + 2048:
            if pos == 0:
                return None
            return bytes(out)
        body = data[pos + 5 : pos + 5 + length]
        out += body
        if len(body) < length:
            return bytes(out) if _handshake_complete(out) else NEED_DATA
        pos += 5 + length
        if _handshake_complete(out):
            return bytes(out)
        if pos > limit:
            return None


def _tls_record_prefix_ok(data: bytes) -> bool:
    if len(data) >= 1 and data[0] != 0x16:
        return False
    if len(data) >= 2 and data[1] != 3:
        return False
    return not (len(data) >= 3 and data[2] > 4)


def _handshake_complete(hs: bytearray | bytes) -> bool:
    if len(hs) < 4:
        return False
    return len(hs) >= 4 + ((hs[1] << 16) | (hs[2] << 8) | hs[3])


def sniff_tls_client_hello(
    data: bytes, limit: int = TLS_SNIFF_LIMIT
) -> TlsClientHello | NeedData | None:
    """Find a TLS ClientHello at the start of ``data`` and return its SNI and ALPN.

    The hello may be split over several records and segments; :data:`NEED_DATA` means
    feed more bytes (up to ``limit``), ``None`` means this is not a ClientHello.
    """
    try:
        hs = _tls_handshake_bytes(data, limit)
        if hs is None or isinstance(hs, NeedData):
            if hs is NEED_DATA and len(data) > limit:
                return None
            return hs
        if hs[0] != 0x01:
            return None
        hlen = (hs[1] << 16) | (hs[2] << 8) | hs[3]
        return _parse_client_hello(hs[4 : 4 + hlen])
    except (_Short, _Bad, IndexError, UnicodeDecodeError):
        return None


def _parse_client_hello(body: bytes) -> TlsClientHello:
    # Plain index arithmetic: every length is checked against ``n`` before it is used
    # (RFC 8446 4.1.2 layout: version, random, session id, suites, compression, exts).
    n = len(body)
    if n < 35:
        raise _Short
    version = (body[0] << 8) | body[1]
    pos = 35 + body[34]  # after version, random and the session id
    if pos + 2 > n:
        raise _Short
    suites = (body[pos] << 8) | body[pos + 1]
    if suites == 0 or suites % 2:
        raise _Bad
    pos += 2 + suites
    if pos + 1 > n:
        raise _Short
    comp = body[pos]
    if comp == 0:
        raise _Bad
    pos += 1 + comp
    if pos > n:
        raise _Short
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    if pos == n:
        return TlsClientHello(None, (), version)
    if pos + 2 > n:
        raise _Short
    ext_end = pos + 2 + ((body[pos] << 8) | body[pos + 1])
    if ext_end > n:
        raise _Short
    pos += 2
    while pos < ext_end:
        if pos + 4 > ext_end:
            raise _Short
        etype = (body[pos] << 8) | body[pos + 1]
        elen = (body[pos + 2] << 8) | body[pos + 3]
        start = pos + 4
        pos = start + elen
        if pos > ext_end:
            raise _Short
        if etype == 0 and sni is None:
            sni = _parse_sni(body[start:pos])
        elif etype == 16:
            alpn = _parse_alpn(body[start:pos])
    return TlsClientHello(sni, alpn, version)


def _parse_sni(ext: bytes) -> str | None:
    n = len(ext)
    if n < 2:
        raise _Short
    end = 2 + ((ext[0] << 8) | ext[1])
    if end > n:
        raise _Short
    pos = 2
    while pos < end:
        if pos + 3 > end:
            raise _Short
        kind = ext[pos]
        length = (ext[pos + 1] << 8) | ext[pos + 2]
        name = ext[pos + 3 : pos + 3 + length]
        if len(name) != length:
            raise _Short
        pos += 3 + length
        if kind == 0:
            return name.decode("ascii").rstrip(".").lower() or None
    return None


def _parse_alpn(ext: bytes) -> tuple[str, ...]:
    n = len(ext)
    if n < 2:
        raise _Short
    end = 2 + ((ext[0] << 8) | ext[1])
    if end > n:
        raise _Short
    pos = 2
    out: list[str] = []
    while pos < end:
        length = ext[pos]
        item = ext[pos + 1 : pos + 1 + length]
        if len(item) != length:
            raise _Short
        out.append(item.decode("ascii", "replace"))
        pos += 1 + length
    return tuple(out)


# -------------------------------------------------------------------------- HTTP


@final
class HttpRequestHead(Value):
    """The request line and header fields of an HTTP/1.x request.

    ``host`` comes from an absolute-form target when there is one, else from the Host
    field (port stripped, lower case). ``complete`` is False when the head was cut off
    (at the sniff limit or end of the bytes seen); the fields read so far are kept.
    ``body`` holds the body bytes that followed a complete head in ``data``.

    Written out on :class:`wxnet.proto.value.Value` rather than a frozen dataclass: one
    is made for every HTTP flow the analyser sees (why: that module).
    """

    __slots__ = (
        "body",
        "complete",
        "headers",
        "host",
        "method",
        "path",
        "target",
        "user_agent",
        "version",
    )
    FIELDS = (
        "method",
        "target",
        "version",
        "path",
        "host",
        "user_agent",
        "headers",
        "complete",
        "body",
    )

    def __init__(
        self,
        method: str,
        target: str,
        version: str,
        path: str,
        host: str | None,
        user_agent: str | None,
        headers: tuple[tuple[str, str], ...],
        complete: bool = True,
        body: bytes = b"",
    ) -> None:
        self.method: Final = method
        self.target: Final = target
        self.version: Final = version
        self.path: Final = path
        self.host: Final = host
        self.user_agent: Final = user_agent
        self.headers: Final = headers
        self.complete: Final = complete
        self.body: Final = body

    def _key(self) -> tuple[object, ...]:
        return (
            self.method,
            self.target,
            self.version,
            self.path,
            self.host,
            self.user_agent,
            self.headers,
            self.complete,
            self.body,
        )


def sniff_http_request(
    data: bytes, limit: int = HTTP_SNIFF_LIMIT
) -> HttpRequestHead | NeedData | None:
    """Parse an HTTP/1.x request head at the start of ``data``.

    Returns :data:`NEED_DATA` while not even the request line is complete, a head
    with ``complete=False`` when the request line is there but not the blank line.
    """
    try:
        return _sniff_http(data, limit)
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


def _sniff_http(data: bytes, limit: int) -> HttpRequestHead | NeedData | None:
    head = data[:limit]
    if not head.startswith(_HTTP_STARTS):
        probe = head[:8]
        if any(start.startswith(probe) for start in _HTTP_STARTS) and len(probe) < 8:
            return NEED_DATA
        return None
    end = head.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end = head.find(b"\n\n")
        sep = 2
    complete = end >= 0
    text_end = end if complete else len(head)
    lines = head[:text_end].decode("latin-1").split("\n")
    if not complete:
        # The last line may be cut in the middle: only keep lines that ended.
        lines = lines[:-1]
        if not lines:
            return NEED_DATA if len(data) < limit else None
    request_line = lines[0].rstrip("\r")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    method, target, version = parts
    headers: list[tuple[str, str]] = []
    host: str | None = None
    ua: str | None = None
    for raw in lines[1:]:
        name, colon, value = raw.rstrip("\r").partition(":")
        if not colon or not name or name != name.strip():
            return None  # RFC 9112 5.1: no whitespace before the colon
        value = value.strip()
        lname = name.lower()
        headers.append((lname, value))
        if lname == "host" and host is None:
            host = _host_only(value)
        elif lname == "user-agent" and ua is None:
            ua = value
    path = target
    lower = target.lower()
    if lower.startswith(("http://", "https://")):
        rest = target.split("://", 1)[1]
        authority, slash, tail = rest.partition("/")
        host = _host_only(authority) or host
        path = slash + tail if slash else "/"
    elif method == "CONNECT":
        host = _host_only(target) or host
        path = ""
    body = head[end + sep :] if complete else b""
    return HttpRequestHead(
        method, target, version, path, host, ua, tuple(headers), complete, bytes(body)
    )


def _host_only(value: str) -> str | None:
    value = value.strip()
    if "@" in value:
        value = value.rsplit("@", 1)[1]
    if value.startswith("["):  # [v6]:port
        inner = value[1:].split("]", 1)[0]
        return inner.lower() or None
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    value = value.rstrip(".").lower()
    return value or None


# ------------------------------------------------------------------------- MMTLS


@final
class MmtlsRecordHead(Value):
    """The 5-byte head of an MMTLS record: type, version (0xf103/0xf104), length."""

    __slots__ = ("length", "record_type", "version")
    FIELDS = ("record_type", "version", "length")

    def __init__(self, record_type: int, version: int, length: int) -> None:
        self.record_type: Final = record_type
        self.version: Final = version
        self.length: Final = length

    def _key(self) -> tuple[int, int, int]:
        return (self.record_type, self.version, self.length)

    def describe(self) -> str:
        return f"{self.record_type:02x} {self.version >> 8:02x} {self.version & 0xFF:02x}"


def sniff_mmtls(data: bytes) -> MmtlsRecordHead | NeedData | None:
    """Is ``data`` the start of an MMTLS record? (type, ``f1 03``/``f1 04``, length)"""
    n = len(data)
    if n >= 1 and data[0] not in MMTLS_RECORD_TYPES:
        return None
    if n >= 2 and data[1] != 0xF1:
        return None
    if n >= 3 and data[2] not in (0x03, 0x04):
        return None
    if n < 5:
        return NEED_DATA
    length = (data[3] << 8) | data[4]
    if length == 0:
        return None
    return MmtlsRecordHead(data[0], (data[1] << 8) | data[2], length)


# ------------------------------------------------------------------ 2014 long link


@final
class LonglinkHead(Value):
    """A 2014 long-link packet head (S32)."""

    __slots__ = ("cmd", "seq", "total_len")
    FIELDS = ("total_len", "cmd", "seq")

    def __init__(self, total_len: int, cmd: int, seq: int) -> None:
        self.total_len: Final = total_len
        self.cmd: Final = cmd
        self.seq: Final = seq

    def _key(self) -> tuple[int, int, int]:
        return (self.total_len, self.cmd, self.seq)


def sniff_longlink(data: bytes) -> LonglinkHead | NeedData | None:
    """Is ``data`` the start of a 2014 long-link packet (S32)?

    Requires header length 16 and version 1, and a total length between 16 and the
    framing limit: four fixed fields, so a random stream passes with odds of about
    2**-40 (libprotoident's looser rule, first word only, needs the port check too).
    """
    n = len(data)
    if n < HEADER_LEN:
        # Check the fields we have; the total length's high byte must be 0 (<= 1 MiB).
        if n >= 1 and data[0] != 0:
            return None
        if n >= 6 and data[4:6] != b"\x00\x10":
            return None
        if n >= 8 and data[6:8] != b"\x00\x01":
            return None
        return NEED_DATA
    total, header_len, version, cmd, seq = HEADER.unpack_from(data, 0)
    if header_len != HEADER_LEN or version != PROTOCOL_VERSION:
        return None
    if not HEADER_LEN <= total <= MAX_PACKET:
        return None
    return LonglinkHead(total, cmd, seq)
