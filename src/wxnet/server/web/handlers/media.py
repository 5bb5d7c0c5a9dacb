"""Media downloads: images, voice, avatars (docs/web.md, "How it works")."""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path

from aiohttp import web

from wxnet.proto.errors import MMError, MMRet
from wxnet.server.web.base import WebBase
from wxnet.server.web.common import WebError, _q, _sniff_image
from wxnet.server.web.login import WebSession


class MediaHandlers(WebBase):
    # -- media downloads ---------------------------------------------------------------
    async def _media_session(self, request: web.Request) -> WebSession:
        try:
            return await self._session(request, None)
        except WebError:
            raise web.HTTPUnauthorized(text="not logged in\n") from None

    async def _stream_media(self, request: web.Request, kind: str) -> web.StreamResponse:
        """Send a message's media straight from its file (sendfile, or chunks that wait
        for the socket to drain): a reader that never drains holds no copy of it."""
        s = await self._media_session(request)
        msg_id = _msg_id_param(request)
        try:
            path = await self.backend.media_file(s.session_key, s.uin, msg_id, kind)
            head = await asyncio.to_thread(_head, path)
        except MMError as exc:
            if exc.code == MMRet.ERR_SESSIONTIMEOUT:
                self.sessions.end(s.wxsid, self.clock())
                await self.sessions.save(s)
                raise web.HTTPUnauthorized(text="not logged in\n") from None
            raise web.HTTPNotFound(text=f"no such {_KIND_NAMES[kind]}\n") from None
        except OSError:
            raise web.HTTPNotFound(text=f"no such {_KIND_NAMES[kind]}\n") from None
        ctype = "audio/mp3" if kind == "voice" else _sniff_image(head)
        return web.FileResponse(path, chunk_size=64 * 1024, headers={"Content-Type": ctype})

    async def getmsgimg(self, request: web.Request) -> web.StreamResponse:
        return await self._stream_media(
            request, "thumb" if _q(request, "type") == "slave" else "img"
        )

    async def getvoice(self, request: web.Request) -> web.StreamResponse:
        return await self._stream_media(request, "voice")

    async def geticon(self, request: web.Request) -> web.StreamResponse:
        await self._media_session(request)
        name = _q(request, "username")[:600]
        png = self._avatars.get(name)
        if png is None:
            png = _avatar(name)
            if len(self._avatars) > 4096:
                self._avatars.clear()
            self._avatars[name] = png
        return web.Response(body=png, content_type="image/png")


_KIND_NAMES = {"img": "image", "thumb": "image", "voice": "voice message"}


def _msg_id_param(request: web.Request) -> int:
    """``msgid`` / ``MsgID``: a positive signed 64-bit number, else 400."""
    raw = _q(request, "msgid")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        raise web.HTTPBadRequest(text="msgid must be a number below 2**63\n")
    n = int(raw)
    if not 0 < n < 1 << 63:
        raise web.HTTPBadRequest(text="msgid must be a number below 2**63\n")
    return n


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(8)


def _avatar(name: str) -> bytes:
    """A plain coloured square: an avatar for clients that fetch one."""
    from PIL import Image

    digest = hashlib.sha256(name.encode()).digest()
    img = Image.new(
        "RGB", (64, 64), (digest[0] // 2 + 64, digest[1] // 2 + 64, digest[2] // 2 + 64)
    )
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
