"""Web WeChat text formats (S26-S29; research/web-protocol.md), sans-IO.

The web API (``/jslogin``, ``/cgi-bin/mmwebwx-bin/*``) speaks a handful of odd text forms
that real clients match with regular expressions, so the spacing of each one matters:

* ``window.QRLogin.code = 200; window.QRLogin.uuid = "...";``   (jslogin, 3.1)
* ``window.code=201;`` / ``window.code=200;\\nwindow.redirect_uri="...";`` / 408 / 400
  (login poll, 3.3)
* ``<error><ret>0</ret>...<wxsid>...</wxsid>...</error>``          (webwxnewloginpage, 3.4)
* ``window.synccheck={retcode:"0",selector:"2"}``                 (synccheck, 5.1)

plus the JSON objects of webwxinit / webwxsync / webwxgetcontact (contacts 4.2, messages
5.3), the ``BaseRequest`` every JSON POST carries with each client's quirks (1.3), the
escaping of message Content (5.4) and the group prefix ``@sender:<br/>`` (5.5).

Web user names are derived from wxnet's own names without any state: a user ``alice``
is ``"@" + hex("alice")`` and a chatroom ``1f2e@chatroom`` is ``"@@" + hex("1f2e@chatroom")``.
Lowercase hex keeps itchat's ``@[0-9a-z]*`` sender pattern happy (1.4) and the mapping
is its own inverse, so a name the client sends back can always be checked and decoded.

Section numbers refer to research/web-protocol.md. No I/O here. (Over 500 lines: it is
the one codec of every web format, each small, kept together by one codec per format.)
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from typing import Any

from wxnet.proto.enums import MsgType
from wxnet.proto.errors import RemoteProtocolError
from wxnet.proto.synckey import SyncKey

__all__ = [
    "FILEHELPER",
    "MAX_JSON_BODY",
    "RET_LOGGED_OUT",
    "RET_LOGIN_ELSEWHERE",
    "RET_OK",
    "RET_SESSION_REJECTED",
    "TOKEN_RE",
    "BaseRequest",
    "LoginPoll",
    "LoginTicket",
    "WebContact",
    "WebMember",
    "WebMessage",
    "WebProtocolError",
    "contact_json",
    "decode_web_name",
    "encode_login_poll",
    "encode_login_ticket",
    "encode_qrlogin",
    "encode_synccheck",
    "escape_content",
    "group_content",
    "is_token",
    "member_json",
    "message_json",
    "parse_base_request",
    "parse_json_body",
    "parse_login_poll",
    "parse_login_ticket",
    "parse_qrlogin",
    "parse_synccheck",
    "parse_uin",
    "parse_web_synckey",
    "split_group_content",
    "unescape_content",
    "web_chatroom_name",
    "web_name",
    "web_synckey",
    "web_user_name",
]

RET_OK = 0
#: Ret / retcode values of a dead web session (5.1, 8): 1100 logged out from the phone,
#: 1101 logged out / expired / elsewhere, 1102 session or cookie rejected.
RET_LOGGED_OUT = 1100
RET_LOGIN_ELSEWHERE = 1101
RET_SESSION_REJECTED = 1102

#: The special account the web clients send notes-to-self to.
FILEHELPER = "filehelper"

#: A JSON body larger than this is refused (the largest real one, a webwxbatchgetcontact
#: of 50 full contact objects, is about 60 kB).
MAX_JSON_BODY = 1 << 20

#: Every token the server hands out (uuid, ticket, wxsid, skey, pass_ticket, MediaId)
#: must survive itchat's hand-built URLs (1.2): no ``+ / & # % "`` and no whitespace.
TOKEN_RE = re.compile(r"[A-Za-z0-9@_=-]{1,256}")
_MAX_WEB_NAME = 520  # "@@" + hex of a 256-byte name


class WebProtocolError(RemoteProtocolError):
    """A web request cannot be understood. ``ret`` is the BaseResponse Ret to answer with."""

    def __init__(self, message: str, ret: int = -1) -> None:
        super().__init__(message)
        self.ret = ret


def is_token(text: str) -> bool:
    """True if ``text`` may be used as a web token (uuid, wxsid, ticket, ...)."""
    return TOKEN_RE.fullmatch(text) is not None


# -- jslogin (3.1) --------------------------------------------------------------------
_QRLOGIN_RE = re.compile(r'window\.QRLogin\.code = (\d+); window\.QRLogin\.uuid = "(\S*)";')


def encode_qrlogin(code: int, uuid: str) -> str:
    if not is_token(uuid):
        raise ValueError(f"uuid {uuid!r} is not URL-safe")
    return f'window.QRLogin.code = {code}; window.QRLogin.uuid = "{uuid}";'


def parse_qrlogin(text: str) -> tuple[int, str]:
    m = _QRLOGIN_RE.search(text)
    if m is None:
        raise WebProtocolError("not a window.QRLogin reply")
    return int(m.group(1)), m.group(2)


# -- login poll (3.3) -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LoginPoll:
    """One login-poll answer: 408 nothing yet, 201 scanned, 200 confirmed, 400 gone."""

    code: int
    redirect_uri: str = ""
    avatar: str = ""  # a data: URL shown while scanned (201)


_POLL_CODE_RE = re.compile(r"window\.code=(\d+);")
_POLL_REDIRECT_RE = re.compile(r'window\.redirect_uri="(\S+?)";')
_POLL_AVATAR_RE = re.compile(r"window\.userAvatar = '([^']*)';")


def encode_login_poll(poll: LoginPoll) -> str:
    if poll.code == 200:
        if not poll.redirect_uri or re.search(r'[\s"]', poll.redirect_uri):
            raise ValueError("a 200 login poll needs a redirect_uri without spaces or quotes")
        return f'window.code=200;\nwindow.redirect_uri="{poll.redirect_uri}";'
    if poll.code == 201 and poll.avatar:
        if "'" in poll.avatar:
            raise ValueError("avatar must not contain a single quote")
        return f"window.code=201;window.userAvatar = '{poll.avatar}';"
    return f"window.code={poll.code};"


def parse_login_poll(text: str) -> LoginPoll:
    m = _POLL_CODE_RE.search(text)
    if m is None:
        raise WebProtocolError("not a window.code reply")
    code = int(m.group(1))
    redirect = _POLL_REDIRECT_RE.search(text)
    avatar = _POLL_AVATAR_RE.search(text)
    if code == 200 and redirect is None:
        raise WebProtocolError("login poll 200 without window.redirect_uri")
    return LoginPoll(code, redirect.group(1) if redirect else "", avatar.group(1) if avatar else "")


# -- webwxnewloginpage (3.4) ----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LoginTicket:
    """What webwxnewloginpage hands over: every value must be a non-empty token."""

    skey: str
    wxsid: str
    wxuin: int
    pass_ticket: str
    ret: int = 0
    message: str = ""


_XML_FIELD = re.compile(r"<(ret|message|skey|wxsid|wxuin|pass_ticket)>([^<]*)</\1>")


def encode_login_ticket(t: LoginTicket) -> str:
    """The XML body; one line, no CDATA (wechat4u matches each tag with a regex)."""
    for name in ("skey", "wxsid", "pass_ticket"):
        if not is_token(getattr(t, name)):
            raise ValueError(f"{name} is not a URL-safe token")
    if t.wxuin <= 0:
        raise ValueError("wxuin must be positive")
    return (
        f"<error><ret>{t.ret}</ret><message>{html.escape(t.message, quote=False)}</message>"
        f"<skey>{t.skey}</skey><wxsid>{t.wxsid}</wxsid><wxuin>{t.wxuin}</wxuin>"
        f"<pass_ticket>{t.pass_ticket}</pass_ticket><isgrayscale>1</isgrayscale></error>"
    )


def parse_login_ticket(text: str) -> LoginTicket:
    found: dict[str, str] = {}
    for m in _XML_FIELD.finditer(text):
        found.setdefault(m.group(1), m.group(2))
    try:
        ret = int(found.get("ret", ""))
    except ValueError:
        raise WebProtocolError("login XML without a numeric <ret>") from None
    message = html.unescape(found.get("message", ""))
    if ret != 0:
        return LoginTicket("", "", 0, "", ret, message)
    missing = [k for k in ("skey", "wxsid", "wxuin", "pass_ticket") if not found.get(k)]
    if missing:
        raise WebProtocolError(f"login XML lacks {', '.join(missing)}")
    if not found["wxuin"].isdigit():
        raise WebProtocolError("wxuin must be digits")
    return LoginTicket(
        found["skey"], found["wxsid"], int(found["wxuin"]), found["pass_ticket"], ret, message
    )


# -- synccheck (5.1) ------------------------------------------------------------------
_SYNCCHECK_RE = re.compile(r'window\.synccheck=\{retcode:"(\d+)",selector:"(\d+)"\}')


def encode_synccheck(retcode: int, selector: int) -> str:
    return f'window.synccheck={{retcode:"{retcode}",selector:"{selector}"}}'


def parse_synccheck(text: str) -> tuple[int, int]:
    m = _SYNCCHECK_RE.search(text)
    if m is None:
        raise WebProtocolError("not a window.synccheck reply")
    return int(m.group(1)), int(m.group(2))


# -- SyncKey (4.1, 5.2) ---------------------------------------------------------------
def web_synckey(key: SyncKey) -> dict[str, Any]:
    """The JSON form; webwxsync replies put it under both SyncKey and SyncCheckKey."""
    return key.to_json()


def parse_web_synckey(obj: object) -> SyncKey:
    """A SyncKey from a webwxsync body (JSON) or a synccheck query (``1_5|2_7``)."""
    try:
        if isinstance(obj, str):
            return SyncKey.from_query(obj)
        return SyncKey.from_json(obj)
    except RemoteProtocolError as exc:
        raise WebProtocolError(str(exc)) from None


# -- request bodies (1.2, 1.3) --------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BaseRequest:
    """The session part of a JSON POST. Only uin and sid authenticate (1.3)."""

    uin: int
    sid: str
    skey: str = ""
    device_id: str = ""


def parse_json_body(data: bytes, limit: int = MAX_JSON_BODY) -> dict[str, Any]:
    """Parse a JSON POST body whatever its Content-Type (itchat sends none, 1.2)."""
    if len(data) > limit:
        raise WebProtocolError(f"body of {len(data)} bytes exceeds {limit}")
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WebProtocolError(f"body is not UTF-8 JSON: {exc}") from None
    except RecursionError:  # arrays or objects nested about a thousand deep
        raise WebProtocolError("body is nested too deeply") from None
    if not isinstance(obj, dict):
        raise WebProtocolError("body must be a JSON object")
    return obj


def _uin(value: object) -> int | None:
    # itchat sends the uin as a string, wechat4u as a number (1.3); anything else is junk.
    if type(value) is int and 0 < value <= 0xFFFFFFFF:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 10:
        n = int(value)
        return n if 0 < n <= 0xFFFFFFFF else None
    return None


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise WebProtocolError("BaseRequest fields must be strings or numbers")


def parse_base_request(body: dict[str, Any]) -> BaseRequest | None:
    """The BaseRequest of a body, or None if it has no usable Uin/Sid (then the caller
    falls back to the cookies, as itchat-uos relies on, 1.3)."""
    base = body.get("BaseRequest")
    if base is None:
        return None
    if not isinstance(base, dict):
        raise WebProtocolError("BaseRequest must be an object")
    uin = _uin(base.get("Uin"))
    sid = _text(base.get("Sid"))
    if uin is None or not sid:
        return None
    return BaseRequest(uin, sid, _text(base.get("Skey")), _text(base.get("DeviceID")))


def parse_uin(value: object) -> int | None:
    """A uin from a query parameter or cookie (digits only)."""
    return _uin(value)


# -- names (1.4) ----------------------------------------------------------------------
def web_user_name(name: str) -> str:
    return "@" + name.encode("utf-8").hex()


def web_chatroom_name(name: str) -> str:
    return "@@" + name.encode("utf-8").hex()


def web_name(name: str, is_chatroom: bool) -> str:
    return web_chatroom_name(name) if is_chatroom else web_user_name(name)


def decode_web_name(web: str) -> tuple[str, bool]:
    """The wxnet name behind a web UserName and whether it is a chatroom.

    Raises WebProtocolError for names this server never issued (including ``filehelper``,
    which callers map themselves)."""
    if len(web) > _MAX_WEB_NAME:
        raise WebProtocolError("UserName too long")
    is_room = web.startswith("@@")
    hexpart = web[2:] if is_room else web[1:] if web.startswith("@") else None
    if not hexpart or re.fullmatch(r"(?:[0-9a-f]{2})+", hexpart) is None:
        raise WebProtocolError(f"unknown UserName {web[:40]!r}")
    try:
        return bytes.fromhex(hexpart).decode("utf-8"), is_room
    except UnicodeDecodeError:
        raise WebProtocolError(f"unknown UserName {web[:40]!r}") from None


# -- Content (5.4, 5.5) ---------------------------------------------------------------
def escape_content(text: str) -> str:
    """Raw text as the real server relays it: HTML-escaped, newlines as ``<br/>``."""
    text = text.replace("\r\n", "\n")
    return html.escape(text, quote=False).replace("\n", "<br/>")


def unescape_content(content: str) -> str:
    """Inverse of :func:`escape_content`."""
    return html.unescape(content.replace("<br/>", "\n"))


_GROUP_RE = re.compile(r"(@[0-9a-z]*):<br/>")


def group_content(sender_web_name: str, escaped: str) -> str:
    """Content of a chatroom message from another member (5.5)."""
    if re.fullmatch(r"@[0-9a-z]+", sender_web_name) is None:
        raise ValueError("group senders must match @[0-9a-z]+ (itchat's pattern)")
    return f"{sender_web_name}:<br/>{escaped}"


def split_group_content(content: str) -> tuple[str | None, str]:
    """``(sender, rest)`` of a chatroom message's Content; sender None without prefix."""
    m = _GROUP_RE.match(content)
    if m is None:
        return None, content
    return m.group(1), content[m.end() :]


# -- JSON objects (4.2, 5.3) ----------------------------------------------------------
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
    pinned: bool = False  # ContactFlag bit 2048 (research 1.4)


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
    """The full contact object of 4.2 (every field real clients may read)."""
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
    """The full message object of 5.3. MsgId is a decimal string, NewMsgId the integer."""
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
