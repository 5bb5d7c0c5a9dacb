"""Files and videos on the web API: ``webwxsendappmsg`` (a file: itchat's ``send_file``,
wechat4u's ``sendMsg({file, filename})``), ``webwxsendvideomsg`` (a video), and the
downloads ``webwxgetmedia`` (files) and ``webwxgetvideo`` (videos), which answer
``Range`` requests (206 with ``Content-Range``, 416 for a range outside the file) as
browsers ask for video.

A send takes a finished upload (``webwxuploadmedia``, by its MediaId) and feeds it to the
same CGIs a phone uses (``uploadappattach``, ``uploadvideo``), one chunk at a time, so a
web file is stored, deduplicated and delivered exactly as a phone's. A received file's
MediaId is ``@wxfile_<MsgId>`` (URL-safe, like every token the server hands out).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any

from aiohttp import web

from wxnet.proto import mediaxml
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMError, MMRet
from wxnet.server.web.common import WebError, _client_msg_id, _q
from wxnet.server.web.convert import msg_id_of_media
from wxnet.server.web.handlers.media import MediaHandlers, _msg_id_param
from wxnet.server.web.login import WebSession, sid_key
from wxnet.server.web.spool import Upload

__all__ = ["FileHandlers"]


def _download_name(name: str) -> str:
    """``Content-Disposition`` for a file called ``name`` (RFC 6266: an ASCII fallback
    and the UTF-8 name, RFC 8187)."""
    ascii_name = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name
    )
    quoted = urllib.parse.quote(name, safe="")
    return f"attachment; filename=\"{ascii_name or 'file'}\"; filename*=UTF-8''{quoted}"


class FileHandlers(MediaHandlers):
    """The handlers (a mixin of :class:`~wxnet.server.web.api.WebApi`, as the others
    are); downloads share :class:`MediaHandlers`' session check."""

    async def _upload(self, s: WebSession, media_id: object) -> Upload:
        up = (
            await self.spool.finished(sid_key(s.wxsid), media_id)
            if isinstance(media_id, str)
            else None
        )
        if up is None:
            raise WebError(int(MMRet.ERR_NOT_FOUND), "no uploaded media with this MediaId")
        return up

    async def sendappmsg(
        self, request: web.Request, s: WebSession, body: dict[str, Any]
    ) -> dict[str, Any]:
        """A file: ``Msg.Content`` is the ``<appmsg>`` XML whose ``<attachid>`` is the
        upload's MediaId (itchat, wechat4u) or ``Msg.MediaId`` names it; the name is the
        XML's ``<title>``, the size the upload's own."""
        msg = self._msg(body)
        to = self._target(s, msg.get("ToUserName"))
        content = msg.get("Content")
        info = mediaxml.parse_file(content) if isinstance(content, str) else None
        if info is None:
            raise WebError(-1, "Content must be an <appmsg> with a <title> and <totallen>")
        if info.app_type != mediaxml.APP_FILE:
            raise WebError(-1, f"AppMsgType {info.app_type} is not served (only 6, a file)")
        up = await self._upload(s, msg.get("MediaId") or info.attach_id)
        name = info.name.replace("/", "_").replace("\\", "_")
        cmid = _client_msg_id(msg)
        s.remember_sent(cmid)

        def chunk(pos: int, data: bytes) -> pb.UploadAppAttachRequest:
            return pb.UploadAppAttachRequest(
                client_msg_id=cmid,
                to_user=to,
                total_len=up.total,
                start_pos=pos,
                data=data,
                file_name=name,
            )

        msg_id = await self._feed(
            s, up, "uploadappattach", chunk, pb.UploadMediaResponse, "the file was not stored"
        )
        return {"MsgID": str(msg_id), "LocalID": cmid}

    async def sendvideomsg(
        self, request: web.Request, s: WebSession, body: dict[str, Any]
    ) -> dict[str, Any]:
        """A video: ``Msg.MediaId`` names the upload. Web clients send no thumbnail, so
        the server's placeholder is the video's."""
        msg = self._msg(body)
        to = self._target(s, msg.get("ToUserName"))
        up = await self._upload(s, msg.get("MediaId"))
        cmid = _client_msg_id(msg)
        s.remember_sent(cmid)

        def chunk(pos: int, data: bytes) -> pb.UploadVideoRequest:
            return pb.UploadVideoRequest(
                client_msg_id=cmid, to_user=to, total_len=up.total, start_pos=pos, data=data
            )

        msg_id = await self._feed(
            s, up, "uploadvideo", chunk, pb.UploadMediaResponse, "the video was not stored"
        )
        return {"MsgID": str(msg_id), "LocalID": cmid}

    async def _stream(
        self, request: web.Request, msg_id: int, kind: str, headers: dict[str, str]
    ) -> web.StreamResponse:
        """The media file from disk; aiohttp's FileResponse answers Range (one range:
        206 and Content-Range; unsatisfiable or malformed: 416) and If-Range, and sends
        with sendfile or in chunks that wait for the socket to drain."""
        s = await self._media_session(request)
        what = "file" if kind == "file" else "video"
        try:
            path = await self.backend.media_file(s.session_key, s.uin, msg_id, kind)
        except MMError as exc:
            if exc.code == MMRet.ERR_SESSIONTIMEOUT:
                self.sessions.end(s.wxsid, self.clock())
                await self.sessions.save(s)
                raise web.HTTPUnauthorized(text="not logged in\n") from None
            raise web.HTTPNotFound(text=f"no such {what}\n") from None
        if not await asyncio.to_thread(path.is_file):
            raise web.HTTPNotFound(text=f"no such {what}\n")
        return web.FileResponse(path, chunk_size=64 * 1024, headers=headers)

    async def getmedia(self, request: web.Request) -> web.StreamResponse:
        """``?mediaid=@wxfile_<MsgId>&filename=NAME`` (itchat, wechat4u; more parameters
        are ignored): the file, as an attachment called NAME."""
        msg_id = msg_id_of_media(_q(request, "mediaid"))
        if not msg_id:
            raise web.HTTPBadRequest(text="mediaid must be a MediaId of a received file\n")
        name = _q(request, "filename")[:255] or "file"
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Disposition": _download_name(name),
        }
        return await self._stream(request, msg_id, "file", headers)

    async def getvideo(self, request: web.Request) -> web.StreamResponse:
        """``?msgid=<MsgId>`` (itchat, wechat4u): the video (its thumbnail is
        ``webwxgetmsgimg?MsgID=<MsgId>&type=slave``)."""
        return await self._stream(
            request, _msg_id_param(request), "video", {"Content-Type": "video/mp4"}
        )
