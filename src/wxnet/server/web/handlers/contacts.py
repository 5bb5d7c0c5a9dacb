"""webwxinit, webwxstatusnotify and the contact endpoints (research 4)."""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from wxnet.proto import web as wp
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.enums import OpLogCmd
from wxnet.proto.syncdriver import SyncDriver
from wxnet.proto.synckey import SyncKey
from wxnet.server.web import convert
from wxnet.server.web.base import WebBase
from wxnet.server.web.common import _INIT_PAGES, WebError, _base, _json, _q
from wxnet.server.web.login import WebSession


class ContactHandlers(WebBase):
    # -- init, contacts (research 4) ---------------------------------------------------

    async def init(
        self, request: web.Request, s: WebSession, body: dict[str, Any]
    ) -> dict[str, Any]:
        s.inits += 1  # the client starts over: polls it still holds are stale
        contacts: list[pb.Contact] = []
        user = pb.UserInfo()
        # The snapshot, as newinit pages, for the contacts and the profile. Its key is the
        # head: a session that committed a key before (a second webwxinit: wechat4u's
        # restart, or after a server restart) resumes from that one instead, so nothing
        # that arrived since its last sync is skipped; a new session commits the head.
        driver = SyncDriver(b"", max_pages=_INIT_PAGES, commit=False)
        async for page in self._sync_pages(s, driver):
            resp = page.response
            if isinstance(resp, pb.NewInitResponse) and resp.HasField("user"):
                user = resp.user
            for item in page.items:
                if item.WhichOneof("body") == "contact":
                    contacts.append(item.contact)
                elif item.WhichOneof("body") == "user_info":
                    user = item.user_info
        key = await self._resume_key(s) or driver.key
        await self._commit(s, key)
        if user.user_name:
            s.user_name, s.nick_name = user.user_name, user.nick_name or s.nick_name
        skey = SyncKey.from_bytes(key)
        chat = [convert.contact_obj(c, {}, with_members=False) for c in contacts[:50]]
        return {
            "Count": len(chat),
            "ContactList": chat,
            "SyncKey": wp.web_synckey(skey),
            "SyncCheckKey": wp.web_synckey(skey),
            "User": convert.self_obj(s.uin, s.user_name, s.nick_name),
            "ChatSet": ",".join(c["UserName"] for c in chat),
            "SKey": s.skey,
            "ClientVersion": 369299473,
            "SystemTime": int(self.clock()),
            "GrayScale": 1,
            "InviteStartCount": 40,
            "MPSubscribeMsgCount": 0,
            "MPSubscribeMsgList": [],
            "ClickReportInterval": 600000,
        }

    async def statusnotify(
        self, request: web.Request, s: WebSession, body: dict[str, Any]
    ) -> dict[str, Any]:
        to = body.get("ToUserName")
        if body.get("Code") == 1 and isinstance(to, str) and to.startswith("@"):
            name, _ = wp.decode_web_name(to)
            await self._cgi(s, "statusnotify", pb.MarkReadRequest(talker=name), pb.MarkReadResponse)
        return {"MsgID": secrets.token_hex(8)}

    async def _all_contacts(self, s: WebSession) -> list[pb.Contact]:
        resp = await self._cgi(s, "getcontact", pb.GetContactRequest(), pb.GetContactResponse)
        return [c for c in resp.contacts if c.user_name != s.user_name]

    async def getcontact(self, request: web.Request) -> web.StreamResponse:
        try:
            s = await self._session(request, None)
            try:
                seq = int(_q(request, "seq") or 0)
            except ValueError:
                raise WebError(-1, "seq must be a number") from None
            contacts = await self._all_contacts(s)
        except WebError as exc:
            return _json(_base(exc.ret, exc.message))
        page = self.config.contact_page
        seq = max(0, seq)
        chunk = contacts[seq : seq + page]
        nxt = seq + page if seq + page < len(contacts) else 0
        members = [convert.contact_obj(c, {}, with_members=False) for c in chunk]
        return _json({**_base(), "MemberCount": len(members), "MemberList": members, "Seq": nxt})

    async def batchgetcontact(
        self, request: web.Request, s: WebSession, body: dict[str, Any]
    ) -> dict[str, Any]:
        items = body.get("List")
        if not isinstance(items, list) or len(items) > 500:
            raise WebError(-1, "List must be an array of at most 500 items")
        names: list[str] = []
        for it in items:
            un = it.get("UserName") if isinstance(it, dict) else None
            if not isinstance(un, str) or not un.startswith("@"):
                continue  # filehelper, fmessage, junk: omitted (research 4.5)
            try:
                names.append(wp.decode_web_name(un)[0])
            except wp.WebProtocolError:
                continue
        out: list[dict[str, Any]] = []
        if s.user_name in names:
            out.append(convert.self_obj(s.uin, s.user_name, s.nick_name))
        others = [n for n in dict.fromkeys(names) if n != s.user_name]
        if others:
            resp = await self._cgi(
                s, "getcontact", pb.GetContactRequest(user_names=others), pb.GetContactResponse
            )
            member_names = [m for c in resp.contacts for m in c.members]
            nicks = await self._nicks(s, member_names)
            nicks[s.user_name] = s.nick_name
            for c in resp.contacts:
                out.append(convert.contact_obj(c, nicks))
        return {"Count": len(out), "ContactList": out}

    async def oplog(
        self, request: web.Request, s: WebSession, body: dict[str, Any]
    ) -> dict[str, Any]:
        """CmdId 2 sets the RemarkName, CmdId 3 pins (OP 1) or unpins (OP 0) the
        conversation (research 8): stored, and sent to every device of the account
        as a ModContact."""
        name = self._target(s, body.get("UserName"))
        cmd = body.get("CmdId")
        if cmd == OpLogCmd.REMARK:
            remark = body.get("RemarkName", "")
            if not isinstance(remark, str):
                raise WebError(-1, "RemarkName must be a string")
            req = pb.OpLogRequest(user_name=name, cmd_id=cmd, remark_name=remark)
        elif cmd == OpLogCmd.PIN:
            op = body.get("OP")
            if op not in (0, 1):
                raise WebError(-1, "OP must be 1 (pin) or 0 (unpin)")
            req = pb.OpLogRequest(user_name=name, cmd_id=cmd, pinned=bool(op))
        else:
            raise WebError(-1, "CmdId must be 2 (remark name) or 3 (pin)")
        await self._cgi(s, "oplog", req, pb.OpLogResponse)
        return {}
