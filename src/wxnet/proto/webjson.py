"""Web WeChat's JSON objects (sans-IO): the contact, member and message objects of
webwxinit, webwxsync, webwxgetcontact and webwxbatchgetcontact, with every field the
real clients may read (docs/web.md). Re-exported by :mod:`wxnet.proto.web`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wxnet.proto.enums import MsgType

__all__ = [
    "CONTACT_FLAG_PINNED",
    "WebContact",
    "WebMember",
    "WebMessage",
    "contact_json",
    "member_json",
    "message_json",
]


@dataclass(frozen=True, slots=True)
class WebMember:
    user_name: str
    nick_name: str
    display_name: str = ""


#: ContactFlag bit of a pinned conversation.
CONTACT_FLAG_PINNED = 2048


@dataclass(frozen=True, slots=True)
class WebContact:
    user_name: str
    nick_name: str
    is_chatroom: bool = False
    sex: int = 0
    verify_flag: int = 0
    uin: int = 0
    head_img_url: str = ""
    owner: str = ""  # chatrooms: the owner's web UserName
    members: tuple[WebMember, ...] = ()
    with_members: bool = True  # False: MemberCount 0 + empty list, as webwxgetcontact does
    contact_flag: int = 3
    remark_name: str = ""
    pinned: bool = False  # ContactFlag bit 2048 (a pinned conversation)


def member_json(m: WebMember) -> dict[str, Any]:
    return {
        "Uin": 0,
        "UserName": m.user_name,
        "NickName": m.nick_name,
        "AttrStatus": 0,
        "PYInitial": "",
        "PYQuanPin": "",
        "RemarkPYInitial": "",
        "RemarkPYQuanPin": "",
        "MemberStatus": 0,
        "DisplayName": m.display_name,
        "KeyWord": "",
    }


def contact_json(c: WebContact) -> dict[str, Any]:
    """The full contact object (every field real clients may read)."""
    head = c.head_img_url or (
        f"/cgi-bin/mmwebwx-bin/{'webwxgetheadimg' if c.is_chatroom else 'webwxgeticon'}"
        f"?seq=0&username={c.user_name}&skey="
    )
    members = [member_json(m) for m in c.members] if c.with_members else []
    obj: dict[str, Any] = {
        "Uin": c.uin,
        "UserName": c.user_name,
        "NickName": c.nick_name,
        "HeadImgUrl": head,
        "ContactFlag": c.contact_flag | (CONTACT_FLAG_PINNED if c.pinned else 0),
        "MemberCount": len(members),
        "MemberList": members,
        "RemarkName": c.remark_name,
        "HideInputBarFlag": 0,
        "Sex": 0 if c.is_chatroom else c.sex,
        "Signature": "",
        "VerifyFlag": c.verify_flag,
        "OwnerUin": 0,
        "PYInitial": "",
        "PYQuanPin": "",
        "RemarkPYInitial": "",
        "RemarkPYQuanPin": "",
        "StarFriend": 0,
        "AppAccountFlag": 0,
        "Statues": 0,
        "AttrStatus": 0,
        "Province": "",
        "City": "",
        "Alias": "",
        "SnsFlag": 0,
        "UniFriend": 0,
        "DisplayName": "",
        "ChatRoomId": 0,
        "KeyWord": "",
        "EncryChatRoomId": "",
        "IsOwner": 0,
    }
    if c.is_chatroom:
        obj["EncryChatRoomId"] = "@" + c.user_name[2:]
        # itchat 1.3.10 crashes when the owner is set but missing from a non-empty list.
        in_list = any(m.user_name == c.owner for m in c.members)
        obj["ChatRoomOwner"] = c.owner if c.owner and (in_list or not members) else ""
    return obj


@dataclass(frozen=True, slots=True)
class WebMessage:
    msg_id: int
    from_user: str
    to_user: str
    msg_type: int
    content: str  # already escaped / prefixed as the web expects
    create_time: int
    status: int = 3
    img_height: int = 0
    img_width: int = 0
    voice_length: int = 0
    file_name: str = ""
    file_size: str = ""
    media_id: str = ""
    url: str = ""
    app_msg_type: int = 0
    status_notify_code: int = 0
    status_notify_user: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def message_json(m: WebMessage) -> dict[str, Any]:
    """The full message object. MsgId is a decimal string, NewMsgId the integer."""
    if not 0 <= m.msg_id < 1 << 63:
        raise ValueError("msg_id out of range")
    obj: dict[str, Any] = {
        "MsgId": str(m.msg_id),
        "FromUserName": m.from_user,
        "ToUserName": m.to_user,
        "MsgType": m.msg_type,
        "Content": m.content,
        "Status": m.status,
        "ImgStatus": 2 if m.msg_type == MsgType.IMAGE else 1,
        "CreateTime": m.create_time,
        "VoiceLength": m.voice_length,
        "PlayLength": 0,
        "FileName": m.file_name,
        "FileSize": m.file_size,
        "MediaId": m.media_id,
        "Url": m.url,
        "AppMsgType": m.app_msg_type,
        "StatusNotifyCode": m.status_notify_code,
        "StatusNotifyUserName": m.status_notify_user,
        "RecommendInfo": {
            "UserName": "",
            "NickName": "",
            "QQNum": 0,
            "Province": "",
            "City": "",
            "Content": "",
            "Signature": "",
            "Alias": "",
            "Scene": 0,
            "VerifyFlag": 0,
            "AttrStatus": 0,
            "Sex": 0,
            "Ticket": "",
            "OpCode": 0,
        },
        "ForwardFlag": 0,
        "AppInfo": {"AppID": "", "Type": 0},
        "HasProductId": 0,
        "Ticket": "",
        "ImgHeight": m.img_height,
        "ImgWidth": m.img_width,
        "SubMsgType": 0,
        "NewMsgId": m.msg_id,
        "OriContent": "",
        "EncryFileName": "",
    }
    obj.update(m.extra)
    return obj
