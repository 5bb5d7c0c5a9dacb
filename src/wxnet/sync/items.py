"""Sync items as stored bytes, and fast assembly of sync responses: the one
hand-written protobuf encoder in wxnet.

A sync-log row stores a ``CmdItem`` serialised *without* its ``key`` and ``seq``
fields. Protocol Buffers allows fields in any order, so the item on the wire is the
stored bytes followed by the two varint fields; and a ``NewSyncResponse`` is its scalar
fields followed by one length-delimited ``cmd_list`` entry per item. Building replies
by concatenation keeps the server from decoding and re-encoding every item it sends.
``tests/sync/test_items.py`` holds every function here against protobuf's own
encoding (hypothesis): what it builds parses to the message protobuf would build.
"""

from __future__ import annotations

from collections.abc import Iterable

from wxnet.proto import wxnet_pb2 as pb

__all__ = ["Item", "encode_varint", "item_bytes", "join_cmd_list", "newsync_response", "stored"]

from wxnet.sync.store import Item

_KEY_TAG = b"\x10"  # field 2, varint
_SEQ_TAG = b"\x18"  # field 3, varint
_CMD_LIST_TAG = b"\x12"  # field 2, length-delimited (NewSyncResponse / NewInitResponse)
_EMPTY_BASE = b"\x0a\x00"  # NewSyncResponse.base (field 1): an empty BaseResponse
_KEY_BUF_TAG = b"\x1a"  # NewSyncResponse.key_buf (field 3), length-delimited
_CONTINUE_TAG = b"\x20"  # NewSyncResponse.continue_flag (field 4), varint


#: One-byte varints, precomputed: most keys, lengths and flags are below 128.
_SMALL = [bytes((i,)) for i in range(0x80)]


def encode_varint(n: int) -> bytes:
    """The protobuf varint of ``n`` (0 <= n < 2**64)."""
    if n < 0x80:
        return _SMALL[n]
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def item_bytes(key: int, seq: int, body: bytes) -> bytes:
    return b"".join((body, _KEY_TAG, encode_varint(key), _SEQ_TAG, encode_varint(seq)))


def join_cmd_list(items: Iterable[Item]) -> bytes:
    parts: list[bytes] = []
    append = parts.append
    varint = encode_varint
    for key, seq, body in items:
        k, s = varint(key), varint(seq)
        append(_CMD_LIST_TAG)
        append(varint(len(body) + len(k) + len(s) + 2))
        append(body)
        append(_KEY_TAG)
        append(k)
        append(_SEQ_TAG)
        append(s)
    return b"".join(parts)


def newsync_response(items: Iterable[Item], key_buf: bytes, continue_flag: int) -> bytes:
    """A whole ``NewSyncResponse`` (ret 0) carrying ``items`` and ``key_buf``."""
    head = _EMPTY_BASE + _KEY_BUF_TAG + encode_varint(len(key_buf)) + key_buf
    if continue_flag:
        head += _CONTINUE_TAG + encode_varint(continue_flag)
    return head + join_cmd_list(items)


def stored(item: pb.CmdItem) -> bytes:
    """The bytes to store for ``item`` (its key and seq are added when it is read)."""
    item.ClearField("key")
    item.ClearField("seq")
    return item.SerializeToString()
