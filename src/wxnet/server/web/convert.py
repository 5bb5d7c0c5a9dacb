"""wxnet's sync items (protobuf) as Web WeChat JSON objects (research 4.2, 5.3-5.5)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wxnet.proto import mediaxml, web
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.enums import REVOKE_TEXT_SELF, MsgType, revoke_text

__all__ = [
    "CHATROOM_SUFFIX",
    "MEDIA_ID_PREFIX",
    "contact_obj",
    "is_chatroom",
    "media_id_of",
    "message_obj",
    "msg_id_of_media",
    "notice_msg_id",
    "revoke_obj",
]

CHATROOM_SUFFIX = "@chatroom"
#: A received file's MediaId (webwxgetmedia's ``mediaid``) is this and its MsgId.
MEDIA_ID_PREFIX = "@wxfile_"


def media_id_of(msg_id: int) -> str:
    return f"{MEDIA_ID_PREFIX}{msg_id}"


def msg_id_of_media(media_id: str) -> int:
    """The MsgId a ``@wxfile_`` MediaId names; 0 if it names none."""
    rest = media_id.removeprefix(MEDIA_ID_PREFIX)
    if rest == media_id or not (rest.isascii() and rest.isdigit()) or len(rest) > 19:
        return 0
    n = int(rest)
    return n if 0 < n < 1 << 63 else 0


def is_chatroom(name: str) -> bool:
    return name.endswith(CHATROOM_SUFFIX)


def contact_obj(
    c: pb.Contact, nicks: Mapping[str, str], *, with_members: bool = True
) -> dict[str, Any]:
    """A contact (or chatroom, with members named from ``nicks``) as the web sees it."""
    room = c.is_chatroom or is_chatroom(c.user_name)
    members = tuple(web.WebMember(web.web_user_name(m), nicks.get(m, m)) for m in c.members)
    return web.contact_json(
        web.WebContact(
            user_name=web.web_name(c.user_name, room),
            nick_name=c.nick_name or c.user_name,
            is_chatroom=room,
            owner=web.web_user_name(c.owner) if room and c.owner else "",
            members=members,
            with_members=with_members,
            remark_name=c.remark_name,
            pinned=c.pinned,
        )
    )


def self_obj(uin: int, user_name: str, nick_name: str) -> dict[str, Any]:
    return web.contact_json(
        web.WebContact(web.web_user_name(user_name), nick_name or user_name, uin=uin)
    )


def _img_xml(m: pb.AddMsg) -> str:
    return (
        f'<?xml version="1.0"?>\n<msg><img length="{m.media_len}" '
        f'hdlength="{m.media_len}" md5="" /></msg>'
    )


#: WeChat's VERIFYMSG: a friend request, accepted with webwxverifyuser Opcode 3.
VERIFY_MSG = 37


def message_obj(m: pb.AddMsg, me: str) -> dict[str, Any]:
    """An AddMsg for account ``me`` as an AddMsgList element.

    Chatroom messages from other members come from the room, to ``me``, with the sender
    as a ``@member:<br/>`` prefix (5.5); the account's own ones go from ``me`` to the room.
    """
    from_user, to_user, sender = m.from_user, m.to_user, ""
    if is_chatroom(from_user):
        sender = m.real_from
    elif is_chatroom(to_user) and from_user != me:
        from_user, to_user, sender = to_user, me, m.real_from or m.from_user
    if m.msg_type == MsgType.IMAGE:
        content = web.escape_content(_img_xml(m))
    elif m.msg_type == MsgType.VOICE:
        content = web.escape_content(
            f'<msg><voicemsg voicelength="{m.voice_length}" length="{m.media_len}" /></msg>'
        )
    elif m.msg_type == MsgType.APP and m.app_msg_type == mediaxml.APP_FILE:
        # the attachid is the MediaId webwxgetmedia takes (the log's XML has none yet)
        content = web.escape_content(
            mediaxml.file_content(m.file_name, m.media_len, media_id_of(m.msg_id))
        )
    else:
        content = web.escape_content(m.content)
    if sender and sender != me and is_chatroom(from_user):
        content = web.group_content(web.web_user_name(sender), content)
    if m.msg_type == VERIFY_MSG:  # a friend request: from "fmessage", with who and why
        obj = web.message_json(
            web.WebMessage(
                msg_id=m.msg_id,
                from_user="fmessage",
                to_user=web.web_name(to_user, False),
                msg_type=VERIFY_MSG,
                content=content,
                create_time=m.create_time,
                status=m.status or 3,
            )
        )
        requester = web.web_name(from_user, False)
        obj["RecommendInfo"].update(
            UserName=requester, NickName=from_user, Content=m.content, Ticket=requester, OpCode=2
        )
        return obj
    is_file = m.msg_type == MsgType.APP and m.app_msg_type == mediaxml.APP_FILE
    return web.message_json(
        web.WebMessage(
            msg_id=m.msg_id,
            from_user=web.web_name(from_user, is_chatroom(from_user)),
            to_user=web.web_name(to_user, is_chatroom(to_user)),
            msg_type=m.msg_type or 1,
            content=content,
            create_time=m.create_time,
            status=m.status or 3,
            voice_length=m.voice_length,
            file_name=m.file_name if is_file else "",
            file_size=str(m.media_len) if m.media_len else "",
            media_id=media_id_of(m.msg_id) if is_file else "",
            app_msg_type=m.app_msg_type if m.msg_type == MsgType.APP else 0,
            extra={"PlayLength": m.play_length} if m.msg_type == MsgType.VIDEO else {},
        )
    )


#: A revoke notice's own MsgId: the recalled message's plus this (message ids start at
#: 10^9 and stay far below it, so no message has it; under 2^53, as JavaScript wants).
NOTICE_ID_OFFSET = 1 << 52


def notice_msg_id(msg_id: int) -> int:
    """The MsgId of the notice recalling message ``msg_id``: its own, and the same each
    time the item is delivered (a client that de-duplicates by MsgId keeps it once)."""
    return msg_id + NOTICE_ID_OFFSET if msg_id < NOTICE_ID_OFFSET else msg_id ^ (1 << 62)


def revoke_obj(r: pb.RevokeMsg, me: str, now: int) -> dict[str, Any]:
    """A recall as MsgType 10002, the way Web WeChat sends it (research 5.6): a MsgId of
    its own; ``<msgid>`` (and ``<oldmsgid>``) the recalled message's MsgId; ``<session>``
    the conversation's web UserName; ``<replacemsg>`` ``"NICK" 撤回了一条消息``, or
    ``你撤回了一条消息`` for the account that recalled it."""
    from_user, to_user = r.from_user, r.to_user
    if is_chatroom(to_user):
        from_user, to_user = to_user, me
    peer = to_user if from_user == me else from_user
    session = web.web_name(peer, is_chatroom(peer))
    text = REVOKE_TEXT_SELF if r.from_user == me else r.replace_text or revoke_text(r.from_user)
    xml = (
        f'<sysmsg type="revokemsg"><revokemsg><session>{session}</session>'
        f"<oldmsgid>{r.msg_id}</oldmsgid><msgid>{r.msg_id}</msgid>"
        f"<replacemsg><![CDATA[{text.replace(']]>', ']] >')}]]></replacemsg>"
        "</revokemsg></sysmsg>"
    )
    return web.message_json(
        web.WebMessage(
            msg_id=notice_msg_id(r.msg_id),
            from_user=web.web_name(from_user, is_chatroom(from_user)),
            to_user=web.web_name(to_user, is_chatroom(to_user)),
            msg_type=MsgType.RECALLED,
            content=web.escape_content(xml),
            create_time=now,
        )
    )
