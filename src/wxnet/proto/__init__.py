"""Sans-IO protocol core: packet framing, SyncKey forms, message bodies, command table."""

from wxnet.proto.errors import (
    LocalProtocolError,
    MMError,
    MMRet,
    ProtocolError,
    RemoteProtocolError,
)
from wxnet.proto.framing import MAX_PACKET, Packet, PacketDecoder, encode_packet
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
