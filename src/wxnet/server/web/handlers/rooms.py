"""Chatrooms and friend requests (research 8)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from wxnet.proto import web as wp
from wxnet.proto import wxnet_pb2 as pb
from wxnet.server.web import convert
from wxnet.server.web.base import WebBase
from wxnet.server.web.common import WebError, _q
from wxnet.server.web.login import WebSession


class RoomHandlers(WebBase):
    # -- chatrooms (research 8) ----------------------------------------------------------
    def _names(self, s: WebSession, value: object) -> list[str]:
        if isinstance(value, str):
            raw = [v for v in value.split(",") if v]
        elif isinstance(value, list):
            raw = [str(v.get("UserName")) if isinstance(v, dict) else str(v) for v in value]
        else:
            raw = []
        if len(raw) > 500:
            raise WebError(-1, "too many members")
        return [self._target(s, r) for r in raw]

    async def createchatroom(
        self, request: web.Request, s: WebSession, body: dict[str, Any]
    ) -> dict[str, Any]:
        members = self._names(s, body.get("MemberList"))
        topic = body.get("Topic") if isinstance(body.get("Topic"), str) else ""
        req = pb.CreateChatRoomRequest(topic=str(topic), members=members)
        resp = await self._cgi(s, "createchatroom", req, pb.CreateChatRoomResponse)
        room = resp.chatroom
        nicks = await self._nicks(s, list(room.members))
        obj = convert.contact_obj(room, nicks)
        return {
            "Topic": room.nick_name,
            "PYInitial": "",
            "QuanPin": "",
            "MemberCount": obj["MemberCount"],
            "MemberList": obj["MemberList"],
            "ChatRoomName": obj["UserName"],
            "BlackList": "",
        }

    async def updatechatroom(
        self, request: web.Request, s: WebSession, body: dict[str, Any]
    ) -> dict[str, Any]:
        fun = _q(request, "fun")
        room_web = body.get("ChatRoomName")
        if not isinstance(room_web, str) or not room_web.startswith("@@"):
            raise WebError(-1, "ChatRoomName must be a chatroom")
        room = wp.decode_web_name(room_web)[0]
        if fun == "modtopic":
            topic = body.get("NewTopic")
            req = pb.ModChatRoomRequest(chatroom=room, op=3, topic=str(topic or ""))
        elif fun in ("addmember", "invitemember"):
            field = "AddMemberList" if fun == "addmember" else "InviteMemberList"
            req = pb.ModChatRoomRequest(
                chatroom=room, op=1, members=self._names(s, body.get(field))
            )
        elif fun == "delmember":
            req = pb.ModChatRoomRequest(
                chatroom=room, op=2, members=self._names(s, body.get("DelMemberList"))
            )
        else:
            raise WebError(-1, "fun must be modtopic, addmember, invitemember or delmember")
        await self._cgi(s, "modchatroom", req, pb.ModChatRoomResponse)
        return {}

    async def verifyuser(
        self, request: web.Request, s: WebSession, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Opcode 2 sends a friend request (VerifyContent is its greeting), 3 accepts
        one (the Value of the request's RecommendInfo.UserName)."""
        users = body.get("VerifyUserList")
        if not isinstance(users, list) or not users or len(users) > 20:
            raise WebError(-1, "VerifyUserList must list 1..20 users")
        opcode = body.get("Opcode", 2)
        if opcode not in (2, 3):
            raise WebError(-1, "Opcode must be 2 (send a request) or 3 (accept one)")
        greeting = body.get("VerifyContent", "")
        if not isinstance(greeting, str) or len(greeting) > 256:
            raise WebError(-1, "VerifyContent must be a string of at most 256 characters")
        for u in users:
            value = u.get("Value") if isinstance(u, dict) else None
            name = self._target(s, value)
            req = pb.AddContactRequest(user_name=name, opcode=opcode, verify_content=greeting)
            await self._cgi(s, "verifyuser", req, pb.AddContactResponse)
        return {}
