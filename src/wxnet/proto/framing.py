"""Long-link packet framing (S32, S33; docs/protocol.md "Packets").

A packet is a fixed 16-byte header followed by a body. All integers are big-endian::

    u32 total_len   header included; 16 means a header-only packet
    u16 header_len  16 (a larger value is accepted and the extra bytes skipped)
    u16 version     1
    u32 cmd
    u32 seq

The seed's example ``00 00 00 10 00 10 00 01 00 00 00 06 00 00 00 0f`` is a header-only
packet with cmd 6 (noop) and seq 15. One TCP write may hold several packets and one
packet may span several reads (S33): :class:`PacketDecoder` takes bytes at any split
and yields whole packets.

This module does no I/O.
"""

from __future__ import annotations

import struct
from typing import Final

from wxnet.proto.errors import RemoteProtocolError
from wxnet.proto.plain import Plain

__all__ = [
    "HEADER",
    "HEADER_LEN",
    "MAX_PACKET",
    "PROTOCOL_VERSION",
    "Packet",
    "PacketDecoder",
    "encode_packet",
    "split_packets",
]

HEADER = struct.Struct(">IHHII")
HEADER_LEN = HEADER.size  # 16
PROTOCOL_VERSION = 1
#: Mars rejects any frame above 1 MiB (its longlink_packer); so do we.
MAX_PACKET = 1 << 20
_U32 = 0xFFFFFFFF


class Packet(Plain):
    """One long-link packet: command, sequence number and (opaque) body. (Not a frozen
    dataclass: making one at import costs start-up; see :mod:`wxnet.proto.plain`.)"""

    __slots__ = ("body", "cmd", "seq")
    FIELDS = __match_args__ = ("cmd", "seq", "body")

    def __init__(self, cmd: int, seq: int, body: bytes = b"") -> None:
        self.cmd: Final = cmd
        self.seq: Final = seq
        self.body: Final = body

    def _key(self) -> tuple[int, int, bytes]:
        return (self.cmd, self.seq, self.body)

    def encode(self) -> bytes:
        return encode_packet(self.cmd, self.seq, self.body)


def encode_packet(cmd: int, seq: int, body: bytes = b"") -> bytes:
    """Return the wire bytes of one packet.

    Raises:
        ValueError: cmd or seq outside u32, or the packet would exceed :data:`MAX_PACKET`.
    """
    if not 0 <= cmd <= _U32 or not 0 <= seq <= _U32:
        raise ValueError(f"cmd and seq must fit in 32 bits (cmd={cmd}, seq={seq})")
    total = HEADER_LEN + len(body)
    if total > MAX_PACKET:
        raise ValueError(f"packet of {total} bytes exceeds the {MAX_PACKET}-byte limit")
    return HEADER.pack(total, HEADER_LEN, PROTOCOL_VERSION, cmd, seq) + body


def _bad_header(total: int, header_len: int, version: int, max_packet: int) -> str:
    """What is wrong with a packet head ("" when nothing is)."""
    if header_len < HEADER_LEN:
        return f"header length {header_len} is below {HEADER_LEN}"
    if version != PROTOCOL_VERSION:
        return f"unsupported protocol version {version}"
    if total < header_len:
        return f"packet length {total} is shorter than its header ({header_len})"
    if total > max_packet:
        return f"packet length {total} exceeds the {max_packet}-byte limit"
    return ""


def split_packets(
    data: bytes | bytearray, max_packet: int = MAX_PACKET
) -> tuple[list[tuple[int, int, bytes]], int]:
    """The whole packets at the start of ``data`` as ``(cmd, seq, body)``, and how many
    bytes they take (the rest is the start of a packet still to come).

    The stateless fast path of :class:`PacketDecoder` for a read that starts on a
    packet boundary: a caller that buffers nothing between reads (the server's long
    link, while idle) needs no decoder object until a read ends inside a packet.

    Raises:
        RemoteProtocolError: a malformed packet head.
    """
    if type(data) is not bytes:
        data = bytes(data)  # bodies are bytes, not views of the caller's buffer
    out: list[tuple[int, int, bytes]] = []
    pos, end, unpack = 0, len(data), HEADER.unpack_from
    while end - pos >= HEADER_LEN:
        total, header_len, version, cmd, seq = unpack(data, pos)
        if (
            header_len != HEADER_LEN
            or version != PROTOCOL_VERSION
            or not HEADER_LEN <= total <= max_packet
        ):
            problem = _bad_header(total, header_len, version, max_packet)
            if problem:  # (a longer header is allowed: its extra bytes are skipped)
                raise RemoteProtocolError(problem)
        if end - pos < total:
            break
        out.append((cmd, seq, data[pos + header_len : pos + total]))
        pos += total
    return out, pos


class PacketDecoder:
    """Incremental decoder: feed bytes with :meth:`feed`, then call :meth:`next_packet`.

    ``next_packet`` returns a :class:`Packet`, or ``None`` when more bytes are needed.
    A malformed header raises :class:`RemoteProtocolError`; after that the decoder is
    broken for good (every later call raises the same error), since the stream has lost
    its framing and no later byte can be trusted.
    """

    __slots__ = ("_buf", "_error", "_pos", "max_packet")

    def __init__(self, max_packet: int = MAX_PACKET) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._error: RemoteProtocolError | None = None
        self.max_packet = max_packet

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a packet."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    def next_packet(self) -> Packet | None:
        fields = self.next_fields()
        return None if fields is None else Packet(*fields)

    def next_fields(self) -> tuple[int, int, bytes] | None:
        """:meth:`next_packet` as a plain ``(cmd, seq, body)`` tuple."""
        if self._error is not None:
            raise self._error
        buf, pos = self._buf, self._pos
        if len(buf) - pos < HEADER_LEN:
            self._compact()
            return None
        total, header_len, version, cmd, seq = HEADER.unpack_from(buf, pos)
        self._check(total, header_len, version)
        if len(buf) - pos < total:
            self._compact()
            return None
        body = bytes(buf[pos + header_len : pos + total])
        self._pos = pos + total
        return cmd, seq, body

    def receive(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """Feed ``data``; return every whole packet now available as ``(cmd, seq, body)``.

        The same as :meth:`feed` then :meth:`next_fields` until None, but when nothing is
        buffered (the usual case: a read ends on a packet boundary) it reads the packets
        straight out of ``data`` (:func:`split_packets`), with one copy per body instead
        of two.
        """
        if self._error is not None:
            raise self._error
        if self._pos != len(self._buf):
            self.feed(data)
            out: list[tuple[int, int, bytes]] = []
            while (fields := self.next_fields()) is not None:
                out.append(fields)
            return out
        try:
            out, used = split_packets(data, self.max_packet)
        except RemoteProtocolError as exc:
            self._error = exc
            self._buf.clear()
            self._pos = 0
            raise
        if used != len(data):
            self.feed(data[used:])
        return out

    def _check(self, total: int, header_len: int, version: int) -> None:
        problem = _bad_header(total, header_len, version, self.max_packet)
        if problem:
            self._fail(problem)

    def packets(self, data: bytes = b"") -> list[Packet]:
        """Feed ``data`` and return every whole packet now available."""
        if data:
            self.feed(data)
        out: list[Packet] = []
        while (packet := self.next_packet()) is not None:
            out.append(packet)
        return out

    def _compact(self) -> None:
        if self._pos > 65536 or self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0

    def _fail(self, message: str) -> None:
        self._error = RemoteProtocolError(message)
        self._buf.clear()
        self._pos = 0
        raise self._error
