"""The rows the client's profile hands out (:mod:`wxnet.client.store`): the session, outbox
and message rows, contacts, and the sync items that were new.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from wxnet.proto import wxnet_pb2 as pb

__all__ = [
    "MESSAGE_COLUMNS",
    "AppliedItem",
    "ContactRow",
    "MessageRow",
    "OutboxRow",
    "ProfileError",
    "SessionInfo",
    "message_row",
    "new_client_msg_id",
]

#: The columns of the profile's ``messages`` table that :func:`message_row` reads, in order.
MESSAGE_COLUMNS = (
    "msg_id, client_msg_id, talker, from_user, to_user, real_from, msg_type, content,"
    " create_time, status, revoked, thumb IS NOT NULL, media_len, voice_length"
)


class ProfileError(Exception):
    """The profile directory or database cannot be used."""


def new_client_msg_id() -> str:
    """A ClientMsgId: milliseconds plus 64 random bits (research 2.6: time + random,
    "to avoid repeats"); unique per sender for all practical purposes."""
    return f"{int(time.time() * 1000)}{secrets.token_hex(8)}"


@dataclass(frozen=True, slots=True)
class SessionInfo:
    uin: int
    session_key: str
    user_name: str
    nick_name: str
    device_id: str


@dataclass(frozen=True, slots=True)
class OutboxRow:
    client_msg_id: str
    to_user: str
    msg_type: int
    content: str
    media_path: str
    voice_length: int
    state: str
    attempts: int
    msg_id: int
    create_time: int
    queued_at: float
    error: str
    #: The server's MM result when it refused the message; None when the failure was
    #: the network's (no answer), which is when "the network is poor" (S13) applies.
    error_code: int | None = None

    @property
    def refused(self) -> bool:
        return self.state == "failed" and self.error_code is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "client_msg_id": self.client_msg_id,
            "to": self.to_user,
            "type": self.msg_type,
            "content": self.content,
            "media_path": self.media_path,
            "state": self.state,
            "attempts": self.attempts,
            "msg_id": self.msg_id,
            "error": self.error,
            "error_code": self.error_code,
        }


@dataclass(frozen=True, slots=True)
class MessageRow:
    msg_id: int
    client_msg_id: str
    talker: str
    from_user: str
    to_user: str
    real_from: str
    msg_type: int
    content: str
    create_time: int
    status: int
    revoked: bool
    has_thumb: bool
    media_len: int
    voice_length: int

    def to_json(self) -> dict[str, Any]:
        return {
            "msg_id": self.msg_id,
            "client_msg_id": self.client_msg_id,
            "talker": self.talker,
            "from": self.from_user,
            "to": self.to_user,
            "real_from": self.real_from,
            "type": self.msg_type,
            "content": self.content,
            "create_time": self.create_time,
            "status": self.status,
            "revoked": self.revoked,
            "has_thumb": self.has_thumb,
            "media_len": self.media_len,
            "voice_length": self.voice_length,
        }


@dataclass(frozen=True, slots=True)
class ContactRow:
    user_name: str
    nick_name: str
    is_chatroom: bool
    members: tuple[str, ...]
    owner: str

    def to_json(self) -> dict[str, Any]:
        return {
            "user_name": self.user_name,
            "nick_name": self.nick_name,
            "is_chatroom": self.is_chatroom,
            "members": list(self.members),
            "owner": self.owner,
        }


@dataclass(frozen=True, slots=True)
class AppliedItem:
    """A sync item that was new to this profile (returned once, never for a repeat)."""

    cmd_id: int
    key: int
    seq: int
    item: pb.CmdItem


def message_row(r: tuple[Any, ...]) -> MessageRow:
    """A row of the profile's ``messages`` table, selected as ``MESSAGE_COLUMNS``."""
    return MessageRow(
        int(r[0]),
        r[1],
        r[2],
        r[3],
        r[4],
        r[5],
        int(r[6]),
        r[7],
        int(r[8]),
        int(r[9]),
        bool(r[10]),
        bool(r[11]),
        int(r[12]),
        int(r[13]),
    )
