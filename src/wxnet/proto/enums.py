"""Wire constants as enums: one definition of each number the protocol carries.

* :class:`CmdId`: the ``cmd_id`` of a sync item (``CmdItem``), what the item does;
* :class:`MsgType`: the ``msg_type`` of a message (``MicroMsg`` / ``AddMsg``);
* :class:`Selector`: the newsync selector bits, one per SyncKey type (cmd-24 notify
  bodies, ``continue_flag``, ``newsynccheck``'s answer);
* :class:`LinkCmd`: the long-link cmds that are not CGIs (noop, notify, ...), and
  :class:`LinkSeq`, the seqs the long link reserves for them (``docs/protocol.md``,
  "Sequence numbers");
* :func:`revoke_text` and :data:`REVOKE_TEXT_SELF`: WeChat's recall wording (the
  ``replacemsg`` anti-revoke bots match).

The values are WeChat's where known (docs/protocol.md, command table); every member is
an ``int``, so a member can go wherever the wire wants a number.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

__all__ = [
    "REVOKE_TEXT_SELF",
    "CmdId",
    "LinkCmd",
    "LinkSeq",
    "MsgType",
    "OpLogCmd",
    "Selector",
    "revoke_text",
]


#: A recall notice as the account that recalled sees it.
REVOKE_TEXT_SELF = "你撤回了一条消息"


def revoke_text(nick: str) -> str:
    """A recall notice as the other side sees it: ``"NICK" 撤回了一条消息``."""
    return f'"{nick}" 撤回了一条消息'


class CmdId(IntEnum):
    """What a sync item carries (``CmdItem.cmd_id``)."""

    MOD_USER_INFO = 1
    MOD_CONTACT = 2
    DEL_CONTACT = 4
    ADD_MSG = 5
    MOD_MSG_STATUS = 6
    REVOKE = 10002
    #: wxnet's own: a web client asks the phone to approve a login without a QR code
    WEB_LOGIN = 11001


class OpLogCmd(IntEnum):
    """What an ``oplog`` request (webwxoplog) changes (``OpLogRequest.cmd_id``)."""

    REMARK = 2
    PIN = 3


class MsgType(IntEnum):
    """A message's kind (``msg_type``); wxnet creates TEXT, IMAGE and VOICE."""

    TEXT = 1
    IMAGE = 3
    VOICE = 34
    CARD = 42
    VIDEO = 43
    EMOTICON = 47
    LOCATION = 48
    APP = 49
    STATUS_NOTIFY = 51
    MICRO_VIDEO = 62
    SYSTEM = 10000
    RECALLED = 10002


class Selector(IntFlag):
    """newsync selector bits (enMMNewSyncSelector); ``ALL`` is every type wxnet serves."""

    PROFILE = 0x1
    MSG = 0x2
    CONTACT = 0x4
    CHATROOM = 0x40
    ALL = PROFILE | MSG | CONTACT | CHATROOM


class LinkCmd(IntEnum):
    """Long-link cmds that are not CGIs (a reply's cmd is the request's + 1_000_000_000)."""

    NOOP = 6
    NOTIFY = 24
    PUSH = 122
    SIGNAL_KEEP = 243
    #: Server to client, seq 0, before it closes a link (body: a ``BaseResponse``).
    PROTOCOL_ERROR = 1_000_000_000
    NOOP_REPLY = 1_000_000_006


class LinkSeq(IntEnum):
    """Seqs with a fixed meaning (Mars ``stn.h`` task ids)."""

    PUSH = 0
    #: Ordinary request seqs are 1 .. FIRST_RESERVED - 1.
    FIRST_RESERVED = 0xFFFFFFF0
    SIGNAL_KEEP = 0xFFFFFFFD
    IDENTIFY = 0xFFFFFFFE
    NOOP = 0xFFFFFFFF
