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
from wxnet.proto.varint import encode_varint

__all__ = [
    "Item",
    "SendResult",
    "TextBody",
    "encode_varint",
    "item_bytes",
    "join_cmd_list",
    "newsync_response",
    "send_msg_response",
    "stored",
]

from wxnet.sync.store import Item

_KEY_TAG = b"\x10"  # field 2, varint
_SEQ_TAG = b"\x18"  # field 3, varint
_CMD_LIST_TAG = b"\x12"  # field 2, length-delimited (NewSyncResponse / NewInitResponse)
_EMPTY_BASE = b"\x0a\x00"  # NewSyncResponse.base (field 1): an empty BaseResponse
_KEY_BUF_TAG = b"\x1a"  # NewSyncResponse.key_buf (field 3), length-delimited
_CONTINUE_TAG = b"\x20"  # NewSyncResponse.continue_flag (field 4), varint


_U64 = (1 << 64) - 1


def _signed_varint(n: int) -> bytes:
    """An int32/int64 field's varint: a negative value as its 64-bit two's complement
    (ten bytes), as protobuf writes it."""
    return encode_varint(n & _U64 if n < 0 else n)


def _text(tag: bytes, s: str) -> bytes:
    """A string field (tag, length, UTF-8), or nothing for '' (proto3 leaves it out)."""
    if not s:
        return b""
    b = s.encode()
    return tag + encode_varint(len(b)) + b


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


class TextBody:
    """The ``make_body`` of a message without media fields: its ``CmdItem`` (cmd 5,
    ``add_msg``) as :func:`stored` would write it, byte for byte, without a protobuf
    object. The fields that do not depend on the id are encoded once, here (on the
    event loop); the writer adds ``msg_id`` and ``create_time`` when it has them."""

    __slots__ = ("_head", "_tail")

    def __init__(
        self,
        from_user: str,
        to_user: str,
        msg_type: int,
        content: str,
        status: int,
        client_msg_id: str,
        real_from: str = "",
    ) -> None:
        # AddMsg fields 2-6 (before create_time, 7), then 8 and 13: protobuf's order
        self._head = b"".join(
            (
                _text(b"\x12", from_user),
                _text(b"\x1a", to_user),
                b"\x20" + encode_varint(msg_type) if msg_type else b"",
                _text(b"\x2a", content),
                b"\x30" + encode_varint(status) if status else b"",
            )
        )
        self._tail = _text(b"\x42", client_msg_id) + _text(b"\x6a", real_from)

    def __call__(self, msg_id: int, create_time: int) -> bytes:
        inner = b"".join(
            (
                b"\x08" + encode_varint(msg_id) if msg_id else b"",
                self._head,
                b"\x38" + _signed_varint(create_time) if create_time else b"",
                self._tail,
            )
        )
        # CmdItem: cmd_id (1) = 5 (AddMsg), add_msg (12, length-delimited)
        return b"\x08\x05\x62" + encode_varint(len(inner)) + inner


class SendResult:
    """One message's outcome in a send (the fields of ``SendMsgResult``), a plain
    object: :func:`send_msg_response` encodes a list of them."""

    __slots__ = ("client_msg_id", "create_time", "duplicate", "err_msg", "msg_id", "ret", "to_user")

    def __init__(self, client_msg_id: str, to_user: str) -> None:
        self.client_msg_id = client_msg_id
        self.to_user = to_user
        self.ret = 0
        self.err_msg = ""
        self.msg_id = 0
        self.create_time = 0
        #: stored before (S23): msg_id and create_time are the first send's; not on the wire
        self.duplicate = False

    def __repr__(self) -> str:
        return (
            f"SendResult(ret={self.ret}, client_msg_id={self.client_msg_id!r},"
            f" msg_id={self.msg_id}, create_time={self.create_time},"
            f" to_user={self.to_user!r}, err_msg={self.err_msg!r})"
        )


def send_msg_response(results: Iterable[SendResult]) -> bytes:
    """A whole ``SendMsgResponse`` (no ``base``, as the handler built it) with one
    ``SendMsgResult`` per entry, byte for byte what protobuf writes."""
    parts: list[bytes] = []
    append = parts.append
    for r in results:
        body = b"".join(
            (
                b"\x08" + _signed_varint(r.ret) if r.ret else b"",
                _text(b"\x12", r.client_msg_id),
                b"\x18" + encode_varint(r.msg_id) if r.msg_id else b"",
                b"\x20" + _signed_varint(r.create_time) if r.create_time else b"",
                _text(b"\x2a", r.to_user),
                _text(b"\x32", r.err_msg),
            )
        )
        append(_CMD_LIST_TAG)  # SendMsgResponse.list is field 2, length-delimited too
        append(encode_varint(len(body)))
        append(body)
    return b"".join(parts)
