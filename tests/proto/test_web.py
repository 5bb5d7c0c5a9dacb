"""The Web WeChat text forms: exact strings the real clients' regexes need, round trips,
and garbage that either decodes or raises WebProtocolError."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wxnet.proto import web
from wxnet.proto.synckey import SyncKey
from wxnet.proto.web import WebProtocolError

tokens = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789@_=-")
tokens = tokens.filter(lambda s: 0 < len(s) <= 64)

# The patterns itchat 1.3.10 uses on these replies (jslogin, login poll, synccheck), verbatim.
ITCHAT_QR = r'window.QRLogin.code = (\d+); window.QRLogin.uuid = "(\S+?)";'
ITCHAT_CODE = r"window.code=(\d+)"
ITCHAT_REDIRECT = r'window.redirect_uri="(\S+)";'
ITCHAT_SYNCCHECK = r'window.synccheck={retcode:"(\d+)",selector:"(\d+)"}'


def test_qrlogin_golden() -> None:
    text = web.encode_qrlogin(200, "Zm9vYmFyUQ==")
    assert text == 'window.QRLogin.code = 200; window.QRLogin.uuid = "Zm9vYmFyUQ==";'
    m = re.search(ITCHAT_QR, text)
    assert m is not None and m.group(1) == "200" and m.group(2) == "Zm9vYmFyUQ=="


@given(tokens, st.integers(0, 999))
def test_qrlogin_round_trip(uuid: str, code: int) -> None:
    assert web.parse_qrlogin(web.encode_qrlogin(code, uuid)) == (code, uuid)


def test_qrlogin_refuses_unsafe_uuid() -> None:
    for bad in ("a/b", "a+b", "a b", "", 'a"'):
        with pytest.raises(ValueError):
            web.encode_qrlogin(200, bad)


def test_login_poll_golden() -> None:
    assert web.encode_login_poll(web.LoginPoll(408)) == "window.code=408;"
    assert web.encode_login_poll(web.LoginPoll(400)) == "window.code=400;"
    scanned = web.encode_login_poll(web.LoginPoll(201, avatar="data:img/jpg;base64,AA=="))
    assert scanned == "window.code=201;window.userAvatar = 'data:img/jpg;base64,AA==';"
    uri = "http://127.0.0.1:8000/cgi-bin/mmwebwx-bin/webwxnewloginpage?ticket=T&uuid=U"
    ok = web.encode_login_poll(web.LoginPoll(200, redirect_uri=uri))
    assert ok == f'window.code=200;\nwindow.redirect_uri="{uri}";'
    m1, m2 = re.search(ITCHAT_CODE, ok), re.search(ITCHAT_REDIRECT, ok)
    assert m1 is not None and m1.group(1) == "200"
    assert m2 is not None and m2.group(1) == uri


@given(st.sampled_from([200, 201, 400, 408]), tokens, tokens)
def test_login_poll_round_trip(code: int, ticket: str, avatar: str) -> None:
    poll = web.LoginPoll(
        code,
        redirect_uri=f"http://127.0.0.1:1/x?ticket={ticket}" if code == 200 else "",
        avatar=avatar if code == 201 else "",
    )
    assert web.parse_login_poll(web.encode_login_poll(poll)) == poll


def test_login_poll_200_needs_clean_uri() -> None:
    with pytest.raises(ValueError):
        web.encode_login_poll(web.LoginPoll(200, redirect_uri="http://a b"))
    with pytest.raises(WebProtocolError):
        web.parse_login_poll("window.code=200;")


def test_login_ticket_golden() -> None:
    t = web.LoginTicket("@crypt_0123abcd_x", "SidSid123", 123456789, "PassTicket123")
    xml = web.encode_login_ticket(t)
    assert xml == (
        "<error><ret>0</ret><message></message><skey>@crypt_0123abcd_x</skey>"
        "<wxsid>SidSid123</wxsid><wxuin>123456789</wxuin><pass_ticket>PassTicket123"
        "</pass_ticket><isgrayscale>1</isgrayscale></error>"
    )
    assert "\n" not in xml and "CDATA" not in xml
    assert web.parse_login_ticket(xml) == t


@given(tokens, tokens, st.integers(1, 2**32 - 1), tokens)
def test_login_ticket_round_trip(skey: str, sid: str, uin: int, pt: str) -> None:
    t = web.LoginTicket(skey, sid, uin, pt)
    assert web.parse_login_ticket(web.encode_login_ticket(t)) == t


def test_login_ticket_errors() -> None:
    with pytest.raises(WebProtocolError):
        web.parse_login_ticket("<error><ret>0</ret><wxsid>x</wxsid></error>")
    refused = web.parse_login_ticket("<error><ret>1203</ret><message>no</message></error>")
    assert refused.ret == 1203 and refused.message == "no"
    with pytest.raises(ValueError):
        web.encode_login_ticket(web.LoginTicket("a/b", "s", 1, "p"))


def test_synccheck_golden() -> None:
    text = web.encode_synccheck(0, 2)
    assert text == 'window.synccheck={retcode:"0",selector:"2"}'
    m = re.search(ITCHAT_SYNCCHECK, text)
    assert m is not None and m.groups() == ("0", "2")
    assert web.parse_synccheck(web.encode_synccheck(1101, 0)) == (1101, 0)


@given(st.text(max_size=80))
def test_text_parsers_never_crash(text: str) -> None:
    for parse in (
        web.parse_qrlogin,
        web.parse_login_poll,
        web.parse_login_ticket,
        web.parse_synccheck,
    ):
        try:
            parse(text)
        except WebProtocolError:
            pass


def test_synckey_forms() -> None:
    key = SyncKey(((1, 5), (2, 7), (3, 1), (1000, 1500000000)))
    assert web.web_synckey(key) == {
        "Count": 4,
        "List": [
            {"Key": 1, "Val": 5},
            {"Key": 2, "Val": 7},
            {"Key": 3, "Val": 1},
            {"Key": 1000, "Val": 1500000000},
        ],
    }
    assert web.parse_web_synckey(web.web_synckey(key)) == key
    assert web.parse_web_synckey("1_5|2_7|3_1|1000_1500000000") == key
    for bad in ("1_x", "1-2", {"List": "no"}, {"Count": 3, "List": []}, 5, None):
        with pytest.raises(WebProtocolError):
            web.parse_web_synckey(bad)


@given(st.recursive(st.none() | st.integers() | st.text(max_size=5), st.lists, max_leaves=8))
def test_synckey_garbage(obj: object) -> None:
    try:
        web.parse_web_synckey(obj)
    except WebProtocolError:
        pass


def test_base_request_quirks() -> None:
    itchat = {"BaseRequest": {"Uin": "123", "Sid": "s", "Skey": "@crypt", "DeviceID": "pt"}}
    uos = {"BaseRequest": {"Uin": "123", "Sid": "s", "Skey": "", "DeviceID": "e1"}}
    w4u = {"BaseRequest": {"Uin": 123, "Sid": "s", "Skey": "@k", "DeviceID": "e2"}}
    for body in (itchat, uos, w4u):
        br = web.parse_base_request(body)
        assert br is not None and br.uin == 123 and br.sid == "s"
    assert web.parse_base_request({}) is None
    assert web.parse_base_request({"BaseRequest": {"Uin": "abc", "Sid": "s"}}) is None
    assert web.parse_base_request({"BaseRequest": {"Uin": 1, "Sid": ""}}) is None
    assert web.parse_base_request({"BaseRequest": {"Uin": True, "Sid": "s"}}) is None
    assert web.parse_base_request({"BaseRequest": {"Uin": -5, "Sid": "s"}}) is None
    with pytest.raises(WebProtocolError):
        web.parse_base_request({"BaseRequest": []})
    with pytest.raises(WebProtocolError):
        web.parse_base_request({"BaseRequest": {"Uin": 1, "Sid": ["x"]}})


@given(st.binary(max_size=200))
def test_json_body_garbage(data: bytes) -> None:
    try:
        body = web.parse_json_body(data)
    except WebProtocolError:
        return
    assert isinstance(body, dict)
    try:
        web.parse_base_request(body)
    except WebProtocolError:
        pass


def test_json_body_rules() -> None:
    raw = json.dumps({"BaseRequest": {"Uin": 1, "Sid": "s"}, "x": "心跳"}, ensure_ascii=False)
    assert web.parse_json_body(raw.encode())["x"] == "心跳"
    with pytest.raises(WebProtocolError):
        web.parse_json_body(b"[1]")
    with pytest.raises(WebProtocolError):
        web.parse_json_body(b"{" * 10, limit=5)


@given(st.text(min_size=1, max_size=40), st.booleans())
def test_names_round_trip(name: str, room: bool) -> None:
    w = web.web_name(name, room)
    assert re.fullmatch(r"@@?[0-9a-f]+", w)
    assert w.startswith("@@") == room
    assert web.decode_web_name(w) == (name, room)


def test_names_reject_foreign() -> None:
    for bad in ("filehelper", "@", "@@", "@xyz", "@abc", "@ff", "@" + "00" * 400):
        with pytest.raises(WebProtocolError):
            web.decode_web_name(bad)


@given(st.text(max_size=60))
def test_content_escaping(text: str) -> None:
    esc = web.escape_content(text)
    assert "<" not in esc.replace("<br/>", "")
    assert ">" not in esc.replace("<br/>", "")
    assert "\n" not in esc
    assert web.unescape_content(esc) == text.replace("\r\n", "\n")


def test_content_golden() -> None:
    assert web.escape_content("a<b>&c\nd") == "a&lt;b&gt;&amp;c<br/>d"


@given(st.text(alphabet="0123456789abcdef", min_size=1, max_size=20), st.text(max_size=30))
def test_group_prefix(sender_hex: str, text: str) -> None:
    sender = "@" + sender_hex
    content = web.group_content(sender, web.escape_content(text))
    # itchat's own group pattern
    m = re.match(r"(@[0-9a-z]*?):<br/>(.*)$", content)
    assert m is not None and m.group(1) == sender
    assert web.split_group_content(content) == (sender, web.escape_content(text))
    assert web.split_group_content("plain") == (None, "plain")


def test_contact_and_member_fields() -> None:
    owner = web.web_user_name("alice")
    room = web.WebContact(
        web.web_chatroom_name("ab@chatroom"),
        "room",
        is_chatroom=True,
        sex=1,
        owner=owner,
        members=(web.WebMember(owner, "Alice"), web.WebMember(web.web_user_name("bob"), "Bob")),
    )
    obj = web.contact_json(room)
    assert obj["Sex"] == 0 and obj["MemberCount"] == 2 and obj["ChatRoomOwner"] == owner
    assert obj["EncryChatRoomId"].startswith("@") and obj["HeadImgUrl"].startswith("/")
    for key in ("VerifyFlag", "NickName", "MemberList", "RemarkName", "DisplayName", "Uin"):
        assert key in obj
    assert set(obj["MemberList"][0]) == {
        "Uin",
        "UserName",
        "NickName",
        "AttrStatus",
        "PYInitial",
        "PYQuanPin",
        "RemarkPYInitial",
        "RemarkPYQuanPin",
        "MemberStatus",
        "DisplayName",
        "KeyWord",
    }
    # the owner is dropped when it is not in a non-empty list (itchat 1.3.10 crash)
    stray = web.contact_json(
        web.WebContact(
            room.user_name,
            "room",
            is_chatroom=True,
            owner=web.web_user_name("zed"),
            members=room.members,
        )
    )
    assert stray["ChatRoomOwner"] == ""
    bare_room = web.WebContact(room.user_name, "r", is_chatroom=True, with_members=False)
    bare = web.contact_json(bare_room)
    assert bare["MemberList"] == [] and bare["MemberCount"] == 0


def test_message_fields() -> None:
    m = web.WebMessage(4442356190966618, "@a", "@b", 1, "hi", 1463839052)
    obj = web.message_json(m)
    assert obj["MsgId"] == "4442356190966618" and obj["NewMsgId"] == 4442356190966618
    assert obj["FileSize"] == "" and obj["Url"] == "" and obj["RecommendInfo"]["UserName"] == ""
    # the real clients' field set of a message
    real = (
        "MsgId FromUserName ToUserName MsgType Content Status ImgStatus CreateTime VoiceLength "
        "PlayLength FileName FileSize MediaId Url AppMsgType StatusNotifyCode "
        "StatusNotifyUserName RecommendInfo ForwardFlag AppInfo HasProductId Ticket ImgHeight "
        "ImgWidth SubMsgType NewMsgId OriContent EncryFileName"
    )
    assert set(obj) == set(real.split())
    with pytest.raises(ValueError):
        web.message_json(web.WebMessage(-1, "@a", "@b", 1, "", 0))


def test_tokens() -> None:
    assert web.is_token("Ab0@_=-")
    for bad in ("", "a/b", "a+b", "a b", "a%b", "a&b", "a#b", 'a"b', "x" * 257):
        assert not web.is_token(bad)
