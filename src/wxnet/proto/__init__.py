"""Sans-IO protocol core: framing, the long-link connection, the sync driver, SyncKey
forms, message bodies, the command table, wire enums and the error tree."""

from typing import TYPE_CHECKING, Any

from wxnet.proto.errors import (
    LocalProtocolError,
    MMError,
    MMRet,
    ProtocolError,
    RemoteProtocolError,
    WxnetError,
    check_base,
)
from wxnet.proto.framing import MAX_PACKET, Packet, PacketDecoder, encode_packet

if TYPE_CHECKING:
    from wxnet.proto.enums import CmdId, LinkCmd, LinkSeq, MsgType, Selector
    from wxnet.proto.synckey import SyncKey

_ENUMS = ("CmdId", "LinkCmd", "LinkSeq", "MsgType", "Selector")

__all__ = [
    "MAX_PACKET",
    "CmdId",
    "LinkCmd",
    "LinkSeq",
    "LocalProtocolError",
    "MMError",
    "MMRet",
    "MsgType",
    "Packet",
    "PacketDecoder",
    "ProtocolError",
    "RemoteProtocolError",
    "Selector",
    "SyncKey",
    "WxnetError",
    "check_base",
    "encode_packet",
]


def __getattr__(name: str) -> Any:
    # SyncKey pulls in the protobuf runtime (~80 ms): loaded on first use, so tools that
    # only need framing or the sniffers (wxnet analyze) start faster.
    if name == "SyncKey":
        from wxnet.proto.synckey import SyncKey

        return SyncKey
    if name in _ENUMS:
        # The wire enums (~3 ms to import): loaded on first use as well; every module
        # below that needs them imports wxnet.proto.enums itself.
        from wxnet.proto import enums

        return getattr(enums, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
