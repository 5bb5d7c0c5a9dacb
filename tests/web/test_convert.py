"""Sync items to web JSON: every AddMsg becomes a complete, JSON-safe message object."""

from __future__ import annotations

import json
import re

from hypothesis import given
from hypothesis import strategies as st

from wxnet.proto import web as wp
from wxnet.proto import wxnet_pb2 as pb
from wxnet.server.web import convert

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=12)
rooms = st.text(alphabet="0123456789abcdef", min_size=2, max_size=16).map(lambda h: h + "@chatroom")


@given(
    me=names,
    sender=names,
    room=st.none() | rooms,
    text=st.text(max_size=40),
    msg_type=st.sampled_from([1, 3, 34, 10000]),
    msg_id=st.integers(1, 2**53 - 1),
)
def test_message_obj(
    me: str, sender: str, room: str | None, text: str, msg_type: int, msg_id: int
) -> None:
    to = room or me
    m = pb.AddMsg(
        msg_id=msg_id,
        from_user=sender,
        to_user=to,
        msg_type=msg_type,
        content=text,
        create_time=1,
        real_from=sender,
        media_len=10,
    )
    obj = convert.message_obj(m, me)
    json.dumps(obj)
    assert obj["MsgId"] == str(msg_id) and obj["NewMsgId"] == msg_id
    assert "\n" not in obj["Content"]
    body = obj["Content"]
    if room is not None and sender != me:
        # from another member: from the room to me, with the sender prefix
        assert obj["FromUserName"] == wp.web_chatroom_name(room)
        assert obj["ToUserName"] == wp.web_user_name(me)
        prefix, body = wp.split_group_content(obj["Content"])
        assert prefix == wp.web_user_name(sender)
    else:
        assert obj["FromUserName"] == wp.web_user_name(sender)
        assert text.startswith("@") or re.match(r"@[0-9a-f]+:<br/>", body) is None
    if msg_type == 1:
        assert wp.unescape_content(body) == text.replace("\r\n", "\n")


@given(names, st.lists(names, max_size=5), st.booleans())
def test_contact_obj(owner: str, members: list[str], room: bool) -> None:
    name = "ab@chatroom" if room else owner
    c = pb.Contact(user_name=name, nick_name="", is_chatroom=room, members=members, owner=owner)
    obj = convert.contact_obj(c, {m: m.upper() for m in members})
    json.dumps(obj)
    assert obj["NickName"] == name  # falls back to the name
    assert obj["Sex"] == 0
    if room:
        assert obj["MemberCount"] == len(members)
        assert [x["NickName"] for x in obj["MemberList"]] == [m.upper() for m in members]
