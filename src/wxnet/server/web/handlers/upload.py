"""webwxuploadmedia: multipart uploads streamed to the spool (docs/web.md, "Limits and
what is left out")."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from wxnet._compat import wait_for
from wxnet.proto import web as wp
from wxnet.proto.errors import MMError, MMRet
from wxnet.server.web.base import WebBase
from wxnet.server.web.common import WebError, _base, _json
from wxnet.server.web.login import WebSession, sid_key
from wxnet.server.web.spool import SpoolFull, SpoolTooLarge


class UploadHandlers(WebBase):
    async def uploadmedia(self, request: web.Request) -> web.StreamResponse:
        """One chunk of a multipart upload. The session is checked from the query or the
        cookies before a byte of the body is read; the body is then streamed (fields in
        memory up to ``max_form_bytes``, the file part to the spool on disk up to
        ``max_chunk`` and the account's quota), all within ``upload_timeout``."""
        refused = self._refuse_cross_site(request, _MULTIPART)
        if refused is not None:
            return refused
        try:
            s = await self._session(request, None)
        except WebError as exc:
            self.count("upload_no_session")
            return _json(_base(exc.ret, exc.message))
        try:
            return await self._uploadmedia(request, s)
        except MMError as exc:  # the store cannot be reached
            return _json(_base(int(exc.code), exc.message))
        except wp.WebProtocolError as exc:
            return _json(_base(exc.ret, str(exc)))
        except WebError as exc:
            return _json(_base(exc.ret, exc.message))

    async def _uploadmedia(self, request: web.Request, s: WebSession) -> web.StreamResponse:
        cfg = self.config
        if not request.content_type.startswith("multipart/"):
            raise WebError(-1, "webwxuploadmedia wants multipart/form-data")
        declared = request.content_length
        if declared is not None and declared > cfg.max_chunk + cfg.max_form_bytes + 8192:
            self.count("upload_too_large")
            raise WebError(int(MMRet.ERR_TOO_LARGE), "chunk too large")
        if self.spool.disk_low():
            self.count("disk")
            raise WebError(int(MMRet.ERR_BUSY), "the server is low on disk space: retry later")
        need = min(declared or cfg.max_chunk, cfg.max_chunk)
        room = await self.spool.make_room(s.uin, need)
        if room <= 0:
            self.count("upload_quota")
            raise WebError(int(MMRet.ERR_BUSY), "upload quota of the account is used up")
        temp: Path | None = None
        size = 0
        try:
            try:
                fields, temp, size = await wait_for(
                    self._read_upload_body(request, s, room), cfg.upload_timeout
                )
            except TimeoutError:
                self.count("upload_timeout")
                raise WebError(-1, "the upload did not arrive in time") from None
            upreq, total, chunks, chunk = self._upload_request(s, fields)
            if temp is None:
                raise WebError(-1, "no file part (filename)")
            ident = str(upreq.get("ClientMediaId") or fields.get("name", ""))[:64] + f":{total}"
            key = sid_key(s.wxsid)
            try:
                up = await self.spool.upload_for(key, s.uin, ident, total, chunks, self.clock())
                committing: Path = temp
                temp = None  # the spool owns the file from here on
                up = await self.spool.commit_chunk(up, chunk, committing, size)
            except SpoolFull as exc:
                self.count("upload_quota")
                raise WebError(int(MMRet.ERR_BUSY), str(exc)) from None
            except SpoolTooLarge as exc:
                self.count("upload_too_large")
                raise WebError(int(MMRet.ERR_UPLOAD_OFFSET), str(exc)) from None
            return _json(
                {
                    **_base(),
                    "MediaId": up.media_id,
                    "StartPos": up.spooled,
                    "CDNThumbImgHeight": 100,
                    "CDNThumbImgWidth": 100,
                    "EncryFileName": "",
                }
            )
        finally:
            if temp is not None:
                await asyncio.to_thread(_unlink, temp)
                self.spool.charge(s.uin, -size)

    def _upload_request(
        self, s: WebSession, fields: dict[str, str]
    ) -> tuple[dict[str, Any], int, int, int]:
        """The upload's request JSON and its (total, chunks, chunk) numbers, checked."""
        cfg = self.config
        upreq = wp.parse_json_body(fields.get("uploadmediarequest", "").encode())
        br = wp.parse_base_request(upreq)
        if br is not None and br.sid and (br.uin != s.uin or br.sid != s.wxsid):
            raise WebError(wp.RET_LOGIN_ELSEWHERE, "BaseRequest names another session")
        try:
            total = int(upreq.get("TotalLen") or fields.get("size") or 0)
            chunks = int(fields.get("chunks") or 1)
            chunk = int(fields.get("chunk") or 0)
        except (TypeError, ValueError):
            raise WebError(-1, "TotalLen, chunks and chunk must be numbers") from None
        if not 0 < total <= cfg.max_upload:
            self.count("upload_too_large")
            raise WebError(int(MMRet.ERR_TOO_LARGE), f"file size must be 1..{cfg.max_upload}")
        if not (0 < chunks <= total // (64 * 1024) + 2 and 0 <= chunk < chunks):
            raise WebError(-1, "bad chunk numbers")
        return upreq, total, chunks, chunk

    async def _read_upload_body(
        self, request: web.Request, s: WebSession, room: int
    ) -> tuple[dict[str, str], Path | None, int]:
        """Stream the multipart body: returns (fields, spooled file part, its size).

        The file part's bytes are charged to the account as they arrive (in this
        process; ``room`` is what the account had left when the request began, beyond
        what was arriving here), so parallel requests cannot overrun its quota; on error
        the caller's cleanup (by size) does not apply, so this uncharges and deletes what
        it spooled itself."""
        base = room + self.spool.inflight(s.uin)
        cfg = self.config
        fields: dict[str, str] = {}
        form_bytes = 0
        temp: Path | None = None
        size = 0
        fd = -1
        try:
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    raise WebError(-1, "nested multipart is not accepted")
                if part.name == "filename":
                    if temp is not None:
                        raise WebError(-1, "more than one file part")
                    temp, fd = await asyncio.to_thread(self.spool.open_temp)
                    while chunk := await part.read_chunk(64 * 1024):
                        size += len(chunk)
                        self.spool.charge(s.uin, len(chunk))
                        if size > cfg.max_chunk:
                            self.count("upload_too_large")
                            raise WebError(int(MMRet.ERR_TOO_LARGE), "chunk too large")
                        if self.spool.inflight(s.uin) > base:
                            self.count("upload_quota")
                            raise WebError(
                                int(MMRet.ERR_BUSY), "upload quota of the account is used up"
                            )
                        await asyncio.to_thread(_write_all, fd, chunk)
                    await asyncio.to_thread(os.close, fd)
                    fd = -1
                else:
                    if len(fields) >= 32:
                        raise WebError(-1, "too many form fields")
                    raw = await _read_part(part, cfg.max_form_bytes - form_bytes)
                    form_bytes += len(raw) + len(part.name or "")
                    if part.name:
                        fields[part.name[:64]] = raw.decode("utf-8", "replace")
        except BaseException:
            if fd >= 0:
                os.close(fd)
            if temp is not None:
                await asyncio.shield(asyncio.to_thread(_unlink, temp))
                self.spool.charge(s.uin, -size)
            raise
        return fields, temp, size


_MULTIPART = frozenset({"multipart/form-data"})


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def _read_part(part: BodyPartReader, limit: int) -> bytes:
    """A multipart part's bytes, refusing more than ``limit`` without buffering them."""
    buf = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        buf += chunk
        if len(buf) > limit:
            raise WebError(int(MMRet.ERR_TOO_LARGE), f"form field {part.name} too large")
    return bytes(buf)
