"""Sending text and images, and revoking (docs/web.md, "How it works")."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMRet
from wxnet.server.web.base import WebBase
from wxnet.server.web.common import WebError, _client_msg_id
from wxnet.server.web.login import WebSession, sid_key


class MessageHandlers(WebBase):
    # -- sending -----------------------------------------------------------------------

    async def sendmsg(
        self, request: web.Request, s: WebSession, body: dict[str, Any]
    ) -> dict[str, Any]:
        msg = self._msg(body)
        to = self._target(s, msg.get("ToUserName"))
        content = msg.get("Content")
        if not isinstance(content, str):
            raise WebError(-1, "Content must be a string")
        if len(content.encode("utf-8")) > 64 * 1024:
            raise WebError(int(MMRet.ERR_TOO_LARGE), "Content too long")
        cmid = _client_msg_id(msg)
        mtype = msg.get("Type", 1)
        item = pb.MicroMsg(
            to_user=to,
            content=content,
            msg_type=mtype if isinstance(mtype, int) and mtype in (1, 42, 48, 49) else 1,
            create_time=int(self.clock()),
            client_msg_id=cmid,
        )
        s.remember_sent(cmid)
        resp = await self._cgi(s, "newsendmsg", pb.SendMsgRequest(list=[item]), pb.SendMsgResponse)
        if not resp.list:
            raise WebError(-1, "send failed")
        r = resp.list[0]
        if r.ret != 0:
            raise WebError(int(r.ret), r.err_msg or "send failed")
        return {"MsgID": str(r.msg_id), "LocalID": cmid}

    async def sendmsgimg(
        self, request: web.Request, s: WebSession, body: dict[str, Any]
    ) -> dict[str, Any]:
        msg = self._msg(body)
        to = self._target(s, msg.get("ToUserName"))
        media_id = msg.get("MediaId")
        up = (
            await self.spool.finished(sid_key(s.wxsid), media_id)
            if isinstance(media_id, str)
            else None
        )
        if up is None:
            raise WebError(int(MMRet.ERR_NOT_FOUND), "no uploaded media with this MediaId")
        cmid = _client_msg_id(msg)
        s.remember_sent(cmid)

        def chunk(pos: int, data: bytes) -> pb.UploadMsgImgRequest:
            return pb.UploadMsgImgRequest(
                client_img_id=cmid, to_user=to, total_len=up.total, start_pos=pos, data=data
            )

        msg_id = await self._feed(
            s, up, "uploadmsgimg", chunk, pb.UploadMsgImgResponse, "image was not stored"
        )
        return {"MsgID": str(msg_id), "LocalID": cmid}

    async def revokemsg(
        self, request: web.Request, s: WebSession, body: dict[str, Any]
    ) -> dict[str, Any]:
        svr = body.get("SvrMsgId")
        try:
            msg_id = int(svr) if isinstance(svr, int | str) and not isinstance(svr, bool) else 0
        except ValueError:
            raise WebError(-1, "SvrMsgId must be a number") from None
        cmid = body.get("ClientMsgId")
        req = pb.RevokeMsgRequest(
            msg_id=msg_id if 0 < msg_id < 1 << 63 else 0,
            client_msg_id=str(cmid) if isinstance(cmid, int | str) else "",
        )
        await self._cgi(s, "revokemsg", req, pb.RevokeMsgResponse)
        return {"Introduction": "", "SysWording": ""}
