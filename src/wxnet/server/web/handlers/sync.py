"""Receiving: synccheck and webwxsync (research 5)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from wxnet.proto import web as wp
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.enums import Selector
from wxnet.proto.errors import MMRet
from wxnet.proto.syncdriver import SyncDriver
from wxnet.proto.synckey import SyncKey
from wxnet.server.web import convert
from wxnet.server.web.base import WebBase, _newest
from wxnet.server.web.common import _SYNC_PAGES, SessionGone, WebError, _js, _q
from wxnet.server.web.login import WebSession


class SyncHandlers(WebBase):
    # -- receiving (research 5) ----------------------------------------------------------
    async def synccheck(self, request: web.Request) -> web.StreamResponse:
        try:
            s = await self._session(request, None)
        except WebError as exc:
            return _js(wp.encode_synccheck(exc.ret, 0))
        try:
            key = wp.parse_web_synckey(_q(request, "synckey"))
        except wp.WebProtocolError:
            return _js(wp.encode_synccheck(wp.RET_SESSION_REJECTED, 0))
        if self._polls.get(s.wxsid, 0) >= self.config.max_polls_per_session:
            return _js(wp.encode_synccheck(0, 0))
        self._polls[s.wxsid] = self._polls.get(s.wxsid, 0) + 1
        self.pending_polls += 1
        self._hold()
        inits = s.inits
        try:
            await self._commit(s, key.to_bytes())  # the client has everything up to it
            req = pb.SyncCheckRequest(
                key_buf=key.to_bytes(), timeout_ms=int(self.config.synccheck_hold * 1000)
            )
            resp = await self._cgi(s, "newsynccheck", req, pb.SyncCheckResponse)
        except SessionGone:
            return _js(wp.encode_synccheck(wp.RET_LOGIN_ELSEWHERE, 0))
        except WebError as exc:
            if exc.ret == MMRet.ERR_SYNCKEY_INVALID:
                return _js(wp.encode_synccheck(wp.RET_SESSION_REJECTED, 0))
            return _js(wp.encode_synccheck(0, 0))
        finally:
            self.pending_polls -= 1
            left = self._polls.get(s.wxsid, 1) - 1
            if left:
                self._polls[s.wxsid] = left
            else:
                self._polls.pop(s.wxsid, None)
        if not s.alive:
            return _js(wp.encode_synccheck(wp.RET_LOGIN_ELSEWHERE, 0))
        if s.inits != inits:
            # a webwxinit came while this poll was held (wechat4u's restart() leaves its
            # old loop's poll pending): news goes to the client's new poll only, so that
            # two loops do not both fetch it
            return _js(wp.encode_synccheck(0, 0))
        return _js(wp.encode_synccheck(0, 2 if resp.selector else 0))

    @staticmethod
    def _fold(
        s: WebSession,
        items: Sequence[pb.CmdItem],
        msgs: list[dict[str, Any]],
        mod: list[pb.Contact],
        dels: list[str],
        now: int,
    ) -> None:
        """Sort one page's items into webwxsync's lists."""
        for item in items:
            kind = item.WhichOneof("body")
            if kind == "add_msg":
                m = item.add_msg
                if m.from_user == s.user_name and m.client_msg_id in s.sent:
                    continue  # this session's own send: not echoed (research 5.2)
                msgs.append(convert.message_obj(m, s.user_name))
            elif kind == "contact":
                mod.append(item.contact)
            elif kind == "del_contact":
                dels.append(item.del_contact.user_name)
            elif kind == "revoke":
                msgs.append(convert.revoke_obj(item.revoke, s.user_name, now))

    async def sync(
        self, request: web.Request, s: WebSession, body: dict[str, Any]
    ) -> dict[str, Any]:
        raw_key = body.get("SyncKey")
        if not isinstance(raw_key, dict):
            raise WebError(-1, "SyncKey must be an object")
        key_buf = wp.parse_web_synckey(raw_key).to_bytes()
        msgs: list[dict[str, Any]] = []
        mod: list[pb.Contact] = []
        dels: list[str] = []
        now = int(self.clock())
        driver = SyncDriver(key_buf, selector=Selector.ALL, max_pages=_SYNC_PAGES, commit=False)
        try:
            async for page in self._sync_pages(s, driver):
                self._fold(s, page.items, msgs, mod, dels, now)
        except WebError as exc:
            if exc.ret == MMRet.ERR_SYNCKEY_INVALID:
                # A web client cannot take a newinit snapshot here: it logs in again.
                raise WebError(-1, "SyncKey cannot be served; log in again") from None
            raise
        s.committed = _newest(s.committed, key_buf)  # newsync committed what it was given
        key_buf = driver.key
        nicks = await self._nicks(s, [m for c in mod for m in c.members]) if mod else {}
        mods = [convert.contact_obj(c, nicks) for c in mod]
        new_key = wp.web_synckey(SyncKey.from_bytes(key_buf))
        return {
            "AddMsgCount": len(msgs),
            "AddMsgList": msgs,
            "ModContactCount": len(mods),
            "ModContactList": mods,
            "DelContactCount": len(dels),
            "DelContactList": [{"UserName": wp.web_name(d, convert.is_chatroom(d))} for d in dels],
            "ModChatRoomMemberCount": 0,
            "ModChatRoomMemberList": [],
            "Profile": {
                "BitFlag": 0,
                "UserName": {"Buff": ""},
                "NickName": {"Buff": ""},
                "BindUin": 0,
                "BindEmail": {"Buff": ""},
                "BindMobile": {"Buff": ""},
                "Status": 0,
                "Sex": 0,
                "PersonalCard": 0,
                "Alias": "",
                "HeadImgUpdateFlag": 0,
                "HeadImgUrl": "",
                "Signature": "",
            },
            "ContinueFlag": 0,
            "SyncKey": new_key,
            "SyncCheckKey": new_key,
            "SKey": s.skey,
        }
