"""``wxnet proto encode|decode``: a protocol engineer's tools for long-link packets."""

from __future__ import annotations

import argparse
import re
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError, Message

from wxnet.cli.common import IO, ExitStatus, UsageError
from wxnet.proto import commands as C
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import RemoteProtocolError
from wxnet.proto.framing import MAX_PACKET, PacketDecoder, encode_packet


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def register(sub: Any) -> None:
    p = sub.add_parser("proto", help="encode and decode long-link packets (S32)")
    psub = p.add_subparsers(dest="proto_command", metavar="ACTION", required=True)

    e = psub.add_parser("encode", help="print one packet as hex")
    e.add_argument("--cmd", type=_int, required=True, help="command number (e.g. 6 = noop)")
    e.add_argument("--seq", type=_int, required=True, help="sequence number")
    e.add_argument("--body", default="", help="body as hex (default: empty)")
    e.set_defaults(func=cmd_encode)

    d = psub.add_parser("decode", help="print the packets found in hex bytes as JSON")
    d.add_argument("hex", nargs="+", help="hex bytes (spaces, colons and 0x allowed)")
    d.set_defaults(func=cmd_decode)


def _parse_hex(text: str) -> bytes:
    cleaned = re.sub(r"0x|[\s:,-]", "", text, flags=re.IGNORECASE)
    if len(cleaned) % 2:
        raise UsageError("hex input has an odd number of digits")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise UsageError("input is not hex") from None


def cmd_encode(args: argparse.Namespace, io: IO) -> int:
    body = _parse_hex(args.body)
    try:
        io.print(encode_packet(args.cmd, args.seq, body).hex())
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return ExitStatus.OK


def describe_body(cmd: int, body: bytes) -> tuple[str, Any]:
    """Name the packet's command and decode its body where the table knows it."""
    if cmd == C.CMD_NOOP:
        return "noop", None
    if cmd == C.reply_cmd(C.CMD_NOOP):
        return "noop reply", None
    if cmd == C.CMD_NOTIFY:
        sel = int.from_bytes(body[:4], "big") if len(body) >= 4 else None
        return "notify", {"selector": sel}
    if cmd == C.CMD_PROTOCOL_ERROR:
        return "protocol error", _pb(pb.BaseResponse, body)
    if cmd == C.CMD_PUSH:
        return "push", _pb(pb.NewSyncResponse, body)
    if cmd in C.BY_CMD:
        cgi = C.BY_CMD[cmd]
        return cgi.name, _pb(cgi.request, body)
    if cmd - C.REPLY_OFFSET in C.BY_CMD:
        cgi = C.BY_CMD[cmd - C.REPLY_OFFSET]
        return f"{cgi.name} reply", _pb(cgi.response, body)
    return "unknown", None


def _pb(kind: type[Message], body: bytes) -> Any:
    msg = kind()
    try:
        msg.ParseFromString(body)
    except DecodeError:
        return None
    return MessageToDict(msg, preserving_proto_field_name=True)


def cmd_decode(args: argparse.Namespace, io: IO) -> int:
    data = _parse_hex("".join(args.hex))
    dec = PacketDecoder(MAX_PACKET)
    dec.feed(data)
    offset = 0
    try:
        while (packet := dec.next_packet()) is not None:
            name, decoded = describe_body(packet.cmd, packet.body)
            io.json(
                {
                    "offset": offset,
                    "cmd": packet.cmd,
                    "name": name,
                    "seq": packet.seq,
                    "body_len": len(packet.body),
                    "body": decoded,
                }
            )
            offset = len(data) - dec.buffered
    except RemoteProtocolError as exc:
        io.error(f"at byte {offset}: {exc}")
        return ExitStatus.ERROR
    if dec.buffered:
        io.error(f"{dec.buffered} trailing bytes at offset {offset} are not a whole packet")
        return ExitStatus.ERROR
    return ExitStatus.OK
