"""Streaming readers for pcap and pcapng files (optionally gzip-compressed).

Formats (byte layouts from the tcpdump.org pcap(5) page and the pcapng draft,
draft-ietf-opsawg-pcapng):

* pcap: 24-byte file header (magic ``a1b2c3d4`` for microsecond or ``a1b23c4d`` for
  nanosecond timestamps, in either byte order; link type in the last word), then
  records of ``ts_sec, ts_frac, incl_len, orig_len`` + ``incl_len`` bytes.
* pcapng: blocks of ``type, total_len, body, total_len``. Section Header Blocks set the
  byte order (magic ``1a2b3c4d``); Interface Description Blocks give each interface's
  link type and timestamp resolution (option ``if_tsresol``); packets come in Enhanced
  (type 6), Simple (type 3) and obsolete Packet (type 2) blocks. Other blocks are
  skipped.

The reader reads in large chunks and yields one :class:`RawPacket` tuple at a time, so
memory does not grow with the file. A file that ends inside a record, or whose lengths
make no sense, raises :class:`CaptureError` with the byte offset (in the decompressed
stream) of the bad record; the packets before it have already been yielded.
"""

from __future__ import annotations

import io
import itertools
import mmap
import os
import stat
import struct
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import gzip

__all__ = ["CaptureError", "CaptureReader", "PcapngWriter", "RawPacket"]

CHUNK = 1 << 20
#: Packets cut per batch (see ``_pcap``); small enough to keep memory flat.
BATCH = 1024
#: Largest packet record we accept (pcap's own MAXIMUM_SNAPLEN is 262144).
MAX_RECORD = 1 << 18
#: Largest pcapng block (a packet block plus options).
MAX_BLOCK = (1 << 18) + 65536


class CaptureError(Exception):
    """The capture is truncated or corrupt at ``offset`` (bytes into the stream)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at offset {offset}")
        self.offset = offset
        self.reason = message


#: One captured frame: (time in seconds, link type, captured bytes, length on the wire).
#: A plain tuple, not a NamedTuple: building one per packet is measurably cheaper.
RawPacket = tuple[float, int, bytes, int]
#: :meth:`CaptureReader.mapped_pcap`: (mapped file, first record, little-endian, ticks
#: per second, link type, largest record).
PcapLayout = tuple["bytes | mmap.mmap", int, bool, float, int, int]


class CaptureReader:
    """Iterate over the packets of a pcap/pcapng stream.

    ``offset`` is the position (decompressed) of the next record; ``raw_position()``
    gives the position in the underlying (possibly compressed) file, for progress bars.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        head = raw.read(2)
        raw.seek(0)
        self.compressed = head == b"\x1f\x8b"
        self._f: BinaryIO | gzip.GzipFile = raw
        if self.compressed:
            import gzip  # only for compressed files: start-up of the others

            self._f = gzip.GzipFile(fileobj=raw, mode="rb")
        self._buf: bytes | mmap.mmap = b""
        self._pos = 0
        self._base = 0  # stream offset of self._buf[0]
        self._eof = False
        self._mapped = False
        self.format = ""
        self.offset = 0
        self._layout: tuple[str, float, int, int] = ("<", 1e6, 1, MAX_RECORD)
        if not self.compressed:
            # A plain file is mapped: packets are sliced straight out of the page cache,
            # with no chunk copies.
            try:
                fd = raw.fileno()
                if stat.S_ISREG(os.fstat(fd).st_mode) and os.fstat(fd).st_size > 0:
                    self._buf = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
                    self._eof = self._mapped = True
            except (OSError, ValueError, io.UnsupportedOperation):
                pass

    def close(self) -> None:
        """Release the file mapping (the caller closes the file itself)."""
        if isinstance(self._buf, mmap.mmap):
            self._buf.close()
        self._buf = b""
        self._pos = 0

    def raw_position(self) -> int:
        if self._mapped:
            return self._base + self._pos
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    # ----------------------------------------------------------------- buffer

    def _fill(self, need: int) -> bool:
        """Make ``need`` bytes available at ``self._pos``; False at end of stream."""
        while len(self._buf) - self._pos < need:
            if self._eof:
                return False
            try:
                chunk = self._f.read(max(CHUNK, need))
            except (EOFError, OSError, zlib.error) as exc:
                # gzip raises EOFError on a cut stream and BadGzipFile (OSError) on junk.
                self._eof = True
                raise CaptureError(
                    f"compressed stream is damaged ({exc})", self._avail_end()
                ) from None
            if not chunk:
                self._eof = True
                return len(self._buf) - self._pos >= need
            self._base += self._pos
            self._buf = self._buf[self._pos :] + chunk
            self._pos = 0
        return True

    def _avail_end(self) -> int:
        return self._base + len(self._buf)

    # ---------------------------------------------------------------- packets

    def __iter__(self) -> Iterator[RawPacket]:
        """Detect the format and return the packet iterator (raises CaptureError for a
        file that is empty or not a capture)."""
        if not self._fill(4):
            if len(self._buf) - self._pos == 0:
                raise CaptureError("empty file: not a pcap or pcapng capture", 0)
            raise CaptureError("file too short to be a capture", 0)
        magic = self._buf[self._pos : self._pos + 4]
        if magic == b"\x0a\x0d\x0d\x0a":
            self.format = "pcapng"
            return self._pcapng()
        elif magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            self.format = "pcap"
            return self._pcap("<", magic == b"\x4d\x3c\xb2\xa1")
        elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            self.format = "pcap"
            return self._pcap(">", magic == b"\xa1\xb2\x3c\x4d")
        raise CaptureError(f"unknown file magic {magic.hex()} (not pcap or pcapng)", 0)

    def _pcap(self, order: str, nano: bool) -> Iterator[RawPacket]:
        # Records are cut in batches and flattened by itertools.chain (C code): a Python
        # generator step per packet costs more than the record parsing itself.
        return itertools.chain.from_iterable(self._pcap_batches(order, nano))

    def _pcap_head(self, order: str) -> tuple[int, int]:
        """Read the pcap file header: (link type, largest record accepted)."""
        if not self._fill(24):
            raise CaptureError("truncated pcap file header", 0)
        _magic, _vmaj, _vmin, _zone, _sig, snaplen, network = struct.unpack_from(
            order + "IHHiIII", self._buf, self._pos
        )
        self._pos += 24
        return network & 0x0FFFFFFF, max(MAX_RECORD, snaplen if snaplen <= (1 << 24) else 0)

    def mapped_pcap(self) -> PcapLayout | None:
        """For a plain (mapped) pcap file: the file header read, and what a caller needs
        to cut the records itself (:meth:`wxnet.analyze.engine.Analyzer.run_capture`):
        the mapped bytes, the position of the first record, whether the file is
        little-endian, ticks per second, the link type and the largest record accepted.
        ``None`` for anything else (pcapng, compressed, a pipe): iterate instead. Raises
        :class:`CaptureError` as iterating would. After cutting records up to ``pos``,
        the caller continues with :meth:`pcap_from` (at the end of the file too: it
        sets :attr:`offset`, or raises the error of a damaged record)."""
        if not self._mapped:
            return None
        if not self._fill(4):
            iter(self)  # raises the empty/short file error
        magic = self._buf[self._pos : self._pos + 4]
        if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            order = "<"
        elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            order = ">"
        else:
            return None
        self.format = "pcap"
        linktype, limit = self._pcap_head(order)
        div = 1e9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e6
        self._layout = (order, div, linktype, limit)
        return (self._buf, self._pos, order == "<", div, linktype, limit)

    def pcap_from(self, pos: int) -> Iterator[RawPacket]:
        """The records of the pcap file described by :meth:`mapped_pcap` from ``pos``
        on, as iterating would yield them (and the same errors)."""
        order, div, linktype, limit = self._layout
        self._pos = pos
        return itertools.chain.from_iterable(self._pcap_records(order, div, linktype, limit))

    def _pcap_batches(self, order: str, nano: bool) -> Iterator[list[RawPacket]]:
        linktype, limit = self._pcap_head(order)
        yield from self._pcap_records(order, 1e9 if nano else 1e6, linktype, limit)

    def _pcap_records(
        self, order: str, div: float, linktype: int, limit: int
    ) -> Iterator[list[RawPacket]]:
        rec = struct.Struct(order + "IIII")
        unpack = rec.unpack_from
        buf, pos = self._buf, self._pos
        nbuf = len(buf)
        out: list[RawPacket] = []
        append = out.append
        while True:
            if nbuf - pos < 16 or len(out) >= BATCH:
                self._pos = pos
                if out:
                    yield out
                    out = []
                    append = out.append
                if not self._fill(16):
                    left = len(self._buf) - self._pos
                    if left:
                        raise CaptureError(
                            f"truncated record header ({left} of 16 bytes)", self._base + self._pos
                        )
                    self.offset = self._base + self._pos
                    return
                buf, pos = self._buf, self._pos
                nbuf = len(buf)
            sec, frac, incl, orig = unpack(buf, pos)
            end = pos + 16 + incl
            if incl > limit or end > nbuf:
                self._pos = pos
                if out:
                    yield out
                    out = []
                    append = out.append
                if incl > limit:
                    raise CaptureError(
                        f"corrupt record: captured length {incl} exceeds {limit}", self._base + pos
                    )
                if not self._fill(16 + incl):
                    raise CaptureError(
                        f"truncated record: {len(self._buf) - self._pos - 16} of {incl} bytes",
                        self._base + self._pos,
                    )
                buf, pos = self._buf, self._pos
                nbuf = len(buf)
                end = pos + 16 + incl
            append((sec + frac / div, linktype, buf[pos + 16 : end], orig))
            pos = end

    def _pcapng(self) -> Iterator[RawPacket]:
        """The packets of a pcapng stream: section headers (byte order), interface
        descriptions (link type, time resolution) and enhanced/simple packet blocks.
        One generator over 60 lines on purpose: it runs per block, and a call per block
        kind cost more than the branches."""
        order = "<"
        ifaces: list[tuple[int, float]] = []  # (linktype, seconds per tick)
        while True:
            if not self._fill(12):
                left = len(self._buf) - self._pos
                if left:
                    raise CaptureError(
                        f"truncated block header ({left} bytes)", self._base + self._pos
                    )
                return
            buf, pos = self._buf, self._pos
            start = self._base + pos
            btype = struct.unpack_from(order + "I", buf, pos)[0]
            if btype == 0x0A0D0D0A:
                bom = buf[pos + 8 : pos + 12]
                if bom == b"\x4d\x3c\x2b\x1a":
                    order = "<"
                elif bom == b"\x1a\x2b\x3c\x4d":
                    order = ">"
                else:
                    raise CaptureError("corrupt section header (bad byte-order magic)", start)
                ifaces = []
            blen = struct.unpack_from(order + "I", buf, pos + 4)[0]
            if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                raise CaptureError(f"corrupt block: length {blen}", start)
            if not self._fill(blen):
                raise CaptureError(
                    f"truncated block: {len(self._buf) - self._pos} of {blen} bytes", start
                )
            buf, pos = self._buf, self._pos
            body = buf[pos + 8 : pos + blen - 4]
            if struct.unpack_from(order + "I", buf, pos + blen - 4)[0] != blen:
                raise CaptureError("corrupt block: trailing length does not match", start)
            self._pos = pos + blen
            self.offset = self._base + self._pos
            if btype == 1:
                if len(body) < 8:
                    raise CaptureError("corrupt interface description block", start)
                linktype = struct.unpack_from(order + "H", body, 0)[0]
                ifaces.append((linktype, _tsresol(body[8:], order)))
            elif btype == 6:
                if len(body) < 20:
                    raise CaptureError("corrupt enhanced packet block", start)
                iface, hi, lo, caplen, origlen = struct.unpack_from(order + "IIIII", body, 0)
                if iface >= len(ifaces) or caplen > len(body) - 20:
                    raise CaptureError("corrupt enhanced packet block", start)
                link, tick = ifaces[iface]
                yield (((hi << 32) | lo) * tick, link, body[20 : 20 + caplen], origlen)
            elif btype == 3:
                if not ifaces or len(body) < 4:
                    raise CaptureError("simple packet block before any interface", start)
                origlen = struct.unpack_from(order + "I", body, 0)[0]
                data = body[4 : 4 + min(origlen, len(body) - 4)]
                yield (0.0, ifaces[0][0], data, origlen)
            elif btype == 2:
                if len(body) < 20:
                    raise CaptureError("corrupt packet block", start)
                iface, _drops, hi, lo, caplen, origlen = struct.unpack_from(
                    order + "HHIIII", body, 0
                )
                if iface >= len(ifaces) or caplen > len(body) - 20:
                    raise CaptureError("corrupt packet block", start)
                link, tick = ifaces[iface]
                yield (((hi << 32) | lo) * tick, link, body[20 : 20 + caplen], origlen)


def _tsresol(options: bytes, order: str) -> float:
    """Seconds per timestamp tick from an IDB's options (default: microseconds)."""
    pos = 0
    while pos + 4 <= len(options):
        code, length = struct.unpack_from(order + "HH", options, pos)
        if code == 0:
            break
        if code == 9 and length >= 1:
            v = options[pos + 4]
            return float(2 ** -(v & 0x7F)) if v & 0x80 else float(10**-v)
        pos += 4 + ((length + 3) & ~3)
    return 1e-6


class PcapngWriter:
    """Write packets as pcapng: one Section Header Block, one Interface Description
    Block (``linktype``, microsecond timestamps), then an Enhanced Packet Block per
    packet (``wxnet analyze --live --write``). Readable by this module, Wireshark and
    tcpdump."""

    def __init__(self, f: BinaryIO, linktype: int, snaplen: int = MAX_RECORD) -> None:
        self._f = f
        shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
        idb = struct.pack("<HHI", linktype, 0, snaplen) + struct.pack("<HHB3xHH", 9, 1, 6, 0, 0)
        f.write(_block(0x0A0D0D0A, shb) + _block(1, idb))
        self.packets = 0

    def write(self, ts: float, data: bytes, wire: int) -> None:
        t = round(ts * 1_000_000)
        head = struct.pack("<IIIII", 0, t >> 32, t & 0xFFFFFFFF, len(data), max(wire, len(data)))
        self._f.write(_block(6, head + data))
        self.packets += 1

    def flush(self) -> None:
        self._f.flush()


def _block(btype: int, body: bytes) -> bytes:
    pad = b"\0" * (-len(body) % 4)
    n = 12 + len(body) + len(pad)
    return struct.pack("<II", btype, n) + body + pad + struct.pack("<I", n)
