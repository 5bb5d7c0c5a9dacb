"""The command table: every request wxnet speaks, on both links (docs/protocol.md).

Each CGI has a short-link path (``POST /cgi-bin/micromsg-bin/<name>``) and a long-link
cmd. Long-link cmd numbers follow the reverse-engineered WeChat tables where they are
known; the rest reuse the CGI func id (docs/protocol.md, "Command table"). A reply
on the long link is ``cmd + 1_000_000_000`` with the request's seq.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

from wxnet.proto import wxnet_pb2 as pb

__all__ = [
    "BY_CMD",
    "BY_NAME",
    "CGI",
    "CGIS",
    "CMD_IDENTIFY",
    "CMD_NOOP",
    "CMD_NOTIFY",
    "CMD_PROTOCOL_ERROR",
    "CMD_PUSH",
    "CMD_SIGNAL_KEEP",
    "CMD_SYNC_DONE",
    "REPLY_OFFSET",
    "SEQ_IDENTIFY",
    "SEQ_NOOP",
    "SEQ_PUSH",
    "error_body",
    "reply_cmd",
]

REPLY_OFFSET = 1_000_000_000
CMD_NOOP = 6
CMD_NOTIFY = 24
CMD_PUSH = 122
CMD_IDENTIFY = 205
CMD_SIGNAL_KEEP = 243
CMD_SYNC_DONE = 1_000_000_190
#: Sent by the server, seq 0, before it closes a link whose bytes broke the framing.
#: Body: a ``BaseResponse`` saying what was wrong.
CMD_PROTOCOL_ERROR = REPLY_OFFSET

SEQ_NOOP = 0xFFFFFFFF
SEQ_IDENTIFY = 0xFFFFFFFE
SEQ_PUSH = 0


def reply_cmd(cmd: int) -> int:
    return cmd + REPLY_OFFSET


def error_body(code: int, message: str) -> bytes:
    """A response body that carries only ``base`` {ret, err_msg}: every response message
    has ``base`` as field 1, so this decodes as any of them (both links' error replies)."""
    base = pb.BaseResponse(ret=code, err_msg=message)
    return pb.LogoutResponse(base=base).SerializeToString()


@dataclass(frozen=True, slots=True)
class CGI:
    name: str  # short-link path component
    cmd: int  # long-link cmd
    func: int  # WeChat func id (informational)
    request: type[Message]
    response: type[Message]
    needs_session: bool = True


CGIS: tuple[CGI, ...] = (
    CGI("manualauth", 253, 701, pb.ManualAuthRequest, pb.ManualAuthResponse, False),
    CGI("logout", 282, 282, pb.LogoutRequest, pb.LogoutResponse),
    CGI("getprofile", 302, 302, pb.GetProfileRequest, pb.GetProfileResponse),
    CGI("newinit", 27, 139, pb.NewInitRequest, pb.NewInitResponse),
    CGI("newsync", 121, 138, pb.NewSyncRequest, pb.NewSyncResponse),
    CGI("syncdone", CMD_SYNC_DONE, 310, pb.SyncDoneRequest, pb.SyncDoneResponse),
    CGI("newsynccheck", 247, 247, pb.SyncCheckRequest, pb.SyncCheckResponse),
    CGI("identify", CMD_IDENTIFY, 205, pb.IdentifyRequest, pb.IdentifyResponse),
    CGI("newsendmsg", 522, 522, pb.SendMsgRequest, pb.SendMsgResponse),
    CGI("statusnotify", 251, 251, pb.MarkReadRequest, pb.MarkReadResponse),
    CGI("revokemsg", 594, 594, pb.RevokeMsgRequest, pb.RevokeMsgResponse),
    CGI("verifyuser", 137, 137, pb.AddContactRequest, pb.AddContactResponse),
    CGI("getcontact", 182, 182, pb.GetContactRequest, pb.GetContactResponse),
    CGI("createchatroom", 37, 119, pb.CreateChatRoomRequest, pb.CreateChatRoomResponse),
    CGI("modchatroom", 120, 120, pb.ModChatRoomRequest, pb.ModChatRoomResponse),
    CGI("uploadmsgimg", 9, 110, pb.UploadMsgImgRequest, pb.UploadMsgImgResponse),
    CGI("getmsgimg", 109, 109, pb.DownloadMsgImgRequest, pb.DownloadMsgImgResponse),
    CGI("uploadvoice", 19, 127, pb.UploadVoiceRequest, pb.UploadVoiceResponse),
    CGI("downloadvoice", 20, 128, pb.DownloadVoiceRequest, pb.DownloadVoiceResponse),
    CGI("uploadappattach", 220, 220, pb.UploadAppAttachRequest, pb.UploadMediaResponse),
    CGI("downloadappattach", 221, 221, pb.DownloadMediaRequest, pb.DownloadMediaResponse),
    CGI("uploadvideo", 149, 149, pb.UploadVideoRequest, pb.UploadMediaResponse),
    CGI("downloadvideo", 150, 150, pb.DownloadMediaRequest, pb.DownloadMediaResponse),
    CGI("scanqrcode", 233, 233, pb.ScanQrRequest, pb.ScanQrResponse),
    CGI("oplog", 681, 681, pb.OpLogRequest, pb.OpLogResponse),
)

BY_NAME: dict[str, CGI] = {c.name: c for c in CGIS}
BY_CMD: dict[int, CGI] = {c.cmd: c for c in CGIS}
assert len(BY_NAME) == len(BY_CMD) == len(CGIS), "duplicate name or cmd in the CGI table"
