"""The protobuf varint, the one wire primitive wxnet encodes by hand (the sync items
of :mod:`wxnet.sync.items` and the binary :class:`~wxnet.proto.synckey.SyncKey`)."""

from __future__ import annotations

__all__ = ["encode_varint"]

#: One-byte varints, precomputed: most keys, lengths and flags are below 128.
_SMALL = [bytes((i,)) for i in range(0x80)]


def encode_varint(n: int) -> bytes:
    """The protobuf varint of ``n`` (0 <= n < 2**64)."""
    if n < 0x80:
        return _SMALL[n]
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if n < 0x800000000:  # msg ids, seqs, times: three to five bytes, no loop
        b0, b1, b2 = n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14
        if n < 0x200000:
            return bytes((b0, b1, b2))
        if n < 0x10000000:
            return bytes((b0, b1, b2 & 0x7F | 0x80, n >> 21))
        return bytes((b0, b1, b2 & 0x7F | 0x80, n >> 21 & 0x7F | 0x80, n >> 28))
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
