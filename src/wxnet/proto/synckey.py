"""SyncKey: the per-account version vector of the sync model (S17, S26, S27, S34).

A SyncKey maps a key type (1 profile, 2 messages, 3 contacts, 11 chatroom members, ...;
docs/protocol.md "Sync") to the last sequence number the holder has seen in
that type's log. Clients treat it as opaque. Three wire forms exist:

* binary (long and short link): the protobuf ``wxnet.SyncKey`` message;
* web JSON (webwxinit / webwxsync, S27): ``{"Count": 2, "List": [{"Key": 1, "Val": 5}, ...]}``;
* web query (synccheck, S26): ``1_620943725|2_620943769|...``.

All three keep the pairs in the order given, so the seed's examples round-trip exactly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError

from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.enums import Selector
from wxnet.proto.errors import RemoteProtocolError
from wxnet.proto.varint import encode_varint

__all__ = [
    "KEY_CHATROOM",
    "KEY_CONTACT",
    "KEY_MSG",
    "KEY_PROFILE",
    "MAX_KEYS",
    "SELECTOR_BITS",
    "SyncKey",
    "selector_for_keys",
]

KEY_PROFILE = 1
KEY_MSG = 2
KEY_CONTACT = 3
KEY_CHATROOM = 11

#: newsync selector bit of each key type we serve (:class:`~wxnet.proto.enums.Selector`;
#: plain ints, since the engine ORs them on its hot path).
SELECTOR_BITS: dict[int, int] = {
    KEY_PROFILE: int(Selector.PROFILE),
    KEY_MSG: int(Selector.MSG),
    KEY_CONTACT: int(Selector.CONTACT),
    KEY_CHATROOM: int(Selector.CHATROOM),
}

#: A key with more pairs than this is rejected (real ones hold at most ~30).
MAX_KEYS = 64
_U64 = (1 << 64) - 1
_QUERY_PAIR = re.compile(r"(\d{1,10})_(\d{1,20})")


def selector_for_keys(keys: Iterable[int]) -> int:
    sel = 0
    for k in keys:
        sel |= SELECTOR_BITS.get(k, 0)
    return sel


@dataclass(frozen=True, slots=True)
class SyncKey:
    """An ordered, immutable list of ``(key type, value)`` pairs."""

    pairs: tuple[tuple[int, int], ...] = ()
    #: the binary form, once made (not part of the value)
    _blob: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def of(cls, mapping: Mapping[int, int]) -> SyncKey:
        return cls(tuple(mapping.items()))

    def as_dict(self) -> dict[int, int]:
        return dict(self.pairs)

    def get(self, key: int, default: int = 0) -> int:
        for k, v in self.pairs:
            if k == key:
                return v
        return default

    def merged(self, newer: SyncKey) -> SyncKey:
        """This key with every pair of ``newer`` applied (WeChat Web's ``mergeKeyBuf``)."""
        d = self.as_dict()
        d.update(newer.pairs)
        return SyncKey.of(d)

    def __bool__(self) -> bool:
        return bool(self.pairs)

    # -- binary form ---------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The binary form: protobuf's bytes for ``wxnet.SyncKey``, written here (an
        entry per pair, zero fields left out, as protobuf does) and kept."""
        blob = self._blob
        if blob is None:
            parts = []
            for k, v in self.pairs:
                if not (0 <= k <= 0xFFFFFFFF and 0 <= v <= _U64):  # protobuf says why
                    pb.KeyVal(key=k, val=v)
                kv = (b"\x08" + encode_varint(k) if k else b"") + (
                    b"\x10" + encode_varint(v) if v else b""
                )
                parts.append(b"\x0a" + encode_varint(len(kv)) + kv)
            blob = b"".join(parts)
            object.__setattr__(self, "_blob", blob)
        return blob

    @classmethod
    def from_bytes(cls, data: bytes) -> SyncKey:
        """Decode the binary form. Raises RemoteProtocolError on malformed input."""
        msg = pb.SyncKey()
        try:
            msg.ParseFromString(data)
        except DecodeError as exc:
            raise RemoteProtocolError(f"SyncKey does not decode: {exc}") from None
        return cls._checked((kv.key, kv.val) for kv in msg.list)

    # -- web JSON form (S27) -------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"Count": len(self.pairs), "List": [{"Key": k, "Val": v} for k, v in self.pairs]}

    @classmethod
    def from_json(cls, obj: object) -> SyncKey:
        if not isinstance(obj, dict) or not isinstance(obj.get("List"), list):
            raise RemoteProtocolError('SyncKey must be an object with a "List" array')
        pairs = []
        for item in obj["List"]:
            if not isinstance(item, dict):
                raise RemoteProtocolError("SyncKey List items must be objects")
            k, v = item.get("Key"), item.get("Val")
            if type(k) is not int or type(v) is not int:
                raise RemoteProtocolError("SyncKey Key and Val must be integers")
            pairs.append((k, v))
        count = obj.get("Count", len(pairs))
        if count != len(pairs):
            raise RemoteProtocolError(f"SyncKey Count {count!r} does not match {len(pairs)} pairs")
        return cls._checked(pairs)

    # -- web query form (S26) ------------------------------------------------------
    def to_query(self) -> str:
        return "|".join(f"{k}_{v}" for k, v in self.pairs)

    @classmethod
    def from_query(cls, text: str) -> SyncKey:
        if not text:
            return cls()
        pairs = []
        for part in text.split("|"):
            m = _QUERY_PAIR.fullmatch(part)
            if m is None:
                raise RemoteProtocolError(f"bad SyncKey pair {part[:40]!r}: want KEY_VAL")
            pairs.append((int(m.group(1)), int(m.group(2))))
        return cls._checked(pairs)

    @classmethod
    def _checked(cls, pairs: Iterable[tuple[int, int]]) -> SyncKey:
        out = tuple(pairs)
        if len(out) > MAX_KEYS:
            raise RemoteProtocolError(f"SyncKey has {len(out)} pairs; at most {MAX_KEYS}")
        seen = set()
        for k, v in out:
            if not 0 <= k <= 0xFFFFFFFF or not 0 <= v <= _U64:
                raise RemoteProtocolError(f"SyncKey pair {k}_{v} is out of range")
            if k in seen:
                raise RemoteProtocolError(f"SyncKey repeats key type {k}")
            seen.add(k)
        return cls(out)
