"""Sans-IO protocol core: packet framing, SyncKey forms, message bodies, command table."""

from typing import TYPE_CHECKING, Any

from wxnet.proto.errors import (
    LocalProtocolError,
    MMError,
    MMRet,
    ProtocolError,
    RemoteProtocolError,
)
from wxnet.proto.framing import MAX_PACKET, Packet, PacketDecoder, encode_packet

if TYPE_CHECKING:
    from wxnet.proto.synckey import SyncKey

__all__ = [
    "MAX_PACKET",
    "LocalProtocolError",
    "MMError",
    "MMRet",
    "Packet",
    "PacketDecoder",
    "ProtocolError",
    "RemoteProtocolError",
    "SyncKey",
    "encode_packet",
]


def __getattr__(name: str) -> Any:
    # SyncKey pulls in the protobuf runtime (~80 ms): loaded on first use, so tools that
    # only need framing or the sniffers (wxnet analyze) start faster.
    if name == "SyncKey":
        from wxnet.proto.synckey import SyncKey

        return SyncKey
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
