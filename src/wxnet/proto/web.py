"""Web WeChat text formats (S26-S29; docs/web.md), sans-IO.

The web API (``/jslogin``, ``/cgi-bin/mmwebwx-bin/*``) speaks a handful of odd text forms
that real clients match with regular expressions, so the spacing of each one matters:

* ``window.QRLogin.code = 200; window.QRLogin.uuid = "...";``   (jslogin)
* ``window.code=201;`` / ``window.code=200;\\nwindow.redirect_uri="...";`` / 408 / 400
  (login poll)
* ``<error><ret>0</ret>...<wxsid>...</wxsid>...</error>``          (webwxnewloginpage)
* ``window.synccheck={retcode:"0",selector:"2"}``                 (synccheck)

plus the ``BaseRequest`` every JSON POST carries with each client's quirks, the escaping
of message Content and the group prefix ``@sender:<br/>``. The JSON objects of webwxinit /
webwxsync / webwxgetcontact (contacts, messages) are :mod:`wxnet.proto.webjson`'s,
re-exported here.

Web user names are derived from wxnet's own names without any state: a user ``alice``
is ``"@" + hex("alice")`` and a chatroom ``1f2e@chatroom`` is ``"@@" + hex("1f2e@chatroom")``.
Lowercase hex keeps itchat's ``@[0-9a-z]*`` sender pattern happy and the mapping
is its own inverse, so a name the client sends back can always be checked and decoded.

No I/O here.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from typing import Any

from wxnet.proto.errors import RemoteProtocolError
from wxnet.proto.synckey import SyncKey
from wxnet.proto.webjson import (
    WebContact,
    WebMember,
    WebMessage,
    contact_json,
    member_json,
    message_json,
)

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
#: Ret / retcode values of a dead web session: 1100 logged out from the phone,
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
#: must survive itchat's hand-built URLs: no ``+ / & # % "`` and no whitespace.
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


# -- jslogin --------------------------------------------------------------------------
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


# -- login poll -----------------------------------------------------------------------
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


# -- webwxnewloginpage ----------------------------------------------------------------
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


# -- synccheck ------------------------------------------------------------------------
_SYNCCHECK_RE = re.compile(r'window\.synccheck=\{retcode:"(\d+)",selector:"(\d+)"\}')


def encode_synccheck(retcode: int, selector: int) -> str:
    return f'window.synccheck={{retcode:"{retcode}",selector:"{selector}"}}'


def parse_synccheck(text: str) -> tuple[int, int]:
    m = _SYNCCHECK_RE.search(text)
    if m is None:
        raise WebProtocolError("not a window.synccheck reply")
    return int(m.group(1)), int(m.group(2))


# -- SyncKey --------------------------------------------------------------------------
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


# -- request bodies -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BaseRequest:
    """The session part of a JSON POST. Only uin and sid authenticate."""

    uin: int
    sid: str
    skey: str = ""
    device_id: str = ""


def parse_json_body(data: bytes, limit: int = MAX_JSON_BODY) -> dict[str, Any]:
    """Parse a JSON POST body whatever its Content-Type (itchat sends none)."""
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
    # itchat sends the uin as a string, wechat4u as a number; anything else is junk.
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
    falls back to the cookies, as itchat-uos relies on)."""
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


# -- names ----------------------------------------------------------------------------
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


# -- Content -----------------------------------------------------------------------
def escape_content(text: str) -> str:
    """Raw text as the real server relays it: HTML-escaped, newlines as ``<br/>``."""
    text = text.replace("\r\n", "\n")
    return html.escape(text, quote=False).replace("\n", "<br/>")


def unescape_content(content: str) -> str:
    """Inverse of :func:`escape_content`."""
    return html.unescape(content.replace("<br/>", "\n"))


_GROUP_RE = re.compile(r"(@[0-9a-z]*):<br/>")


def group_content(sender_web_name: str, escaped: str) -> str:
    """Content of a chatroom message from another member."""
    if re.fullmatch(r"@[0-9a-z]+", sender_web_name) is None:
        raise ValueError("group senders must match @[0-9a-z]+ (itchat's pattern)")
    return f"{sender_web_name}:<br/>{escaped}"


def split_group_content(content: str) -> tuple[str | None, str]:
    """``(sender, rest)`` of a chatroom message's Content; sender None without prefix."""
    m = _GROUP_RE.match(content)
    if m is None:
        return None, content
    return m.group(1), content[m.end() :]
