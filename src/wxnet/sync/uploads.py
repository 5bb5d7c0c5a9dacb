"""Media messages (S24, S25): resumable, parallel image upload joined on the server with
a thumbnail; files (with a name) and videos (with a thumbnail: the sender's, or
:func:`~wxnet.sync.media.placeholder_thumb`) uploaded the same way; voice streamed in
chunks with end and cancel flags; chunked downloads.

Unfinished uploads are bounded per account (``uploads_per_account``, and
``upload_bytes_per_account`` of declared sizes; a voice message counts as its maximum
size), expire after ``upload_ttl`` (:meth:`Uploads.sweep`), and no upload grows once the
disk has less than ``min_free_disk_bytes`` free, so that one account cannot fill the disk
and stop everyone's sends. A refusal is ``ERR_BUSY`` with a message saying which bound.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from wxnet.proto import mediaxml
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.enums import MsgType
from wxnet.proto.errors import MMError, MMRet
from wxnet.sync import media
from wxnet.sync.engine import MSG_IMAGE, MSG_VOICE, Engine, Session

__all__ = ["Uploads"]

log = logging.getLogger("wxnet.server")

#: Which messages' media each download kind may read.
_KIND_TYPES: dict[str, frozenset[int]] = {
    "img": frozenset({MSG_IMAGE}),
    "thumb": frozenset({MSG_IMAGE, MsgType.VIDEO}),
    "voice": frozenset({MSG_VOICE}),
    "video": frozenset({MsgType.VIDEO}),
    "file": frozenset({MsgType.APP}),
}
#: A video's thumbnail while its upload is unfinished (beside the partial video).
_VTHUMB = "vthumb"
#: Bytes of a file name (WeChat's limit is about this too).
MAX_FILE_NAME = 255


def _read_or(path: Path, default: Callable[[], bytes]) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return default()


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Uploads:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.config = engine.config
        self.media = engine.media
        self.store = engine.store
        self._locks: dict[tuple[int, str, str], asyncio.Lock] = {}
        #: uploads refused, by the bound that refused them (``wxnet_upload_refused_total``)
        self.refused: dict[str, float] = {}
        self.expired = 0

    def _lock(self, owner: int, cid: str, kind: str) -> asyncio.Lock:
        """Chunks of one upload are handled one at a time (they may still be sent in
        parallel); different uploads proceed concurrently."""
        k = (owner, cid, kind)
        lock = self._locks.get(k)
        if lock is None:
            if len(self._locks) > 10_000:
                self._locks = {key: lk for key, lk in self._locks.items() if lk.locked()}
            lock = self._locks[k] = asyncio.Lock()
        return lock

    def _check_chunk(self, cid: str, data: bytes, what: str) -> None:
        if not cid or len(cid) > 64:
            raise MMError(MMRet.ERR_ARG, f"{what} must be 1-64 characters")
        if len(data) > self.config.max_chunk_bytes:
            raise MMError(
                MMRet.ERR_TOO_LARGE, f"chunks are at most {self.config.max_chunk_bytes} bytes"
            )

    def _refuse(self, reason: str, message: str) -> MMError:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return MMError(MMRet.ERR_BUSY, message)

    def _check_disk(self) -> None:
        floor = self.config.min_free_disk_bytes
        if floor and self.media.free_bytes() < floor:
            raise self._refuse("disk", "the server is low on disk space: retry later")

    async def _begin(
        self, sess: Session, cid: str, kind: str, to_user: str, total: int
    ) -> list[tuple[int, int]]:
        self._check_disk()
        # the quota check and the insert are one step per account, so that parallel
        # new uploads cannot both slip under it
        async with self._lock(sess.uin, "", "quota"):
            mine = await self.store.uploads_of(sess.uin)
            if not any(c == cid and k == kind for c, k, _ in mine):
                cfg = self.config
                if len(mine) >= cfg.uploads_per_account:
                    raise self._refuse(
                        "count",
                        f"{len(mine)} unfinished uploads (at most {cfg.uploads_per_account}):"
                        " finish or cancel one, or wait for them to expire",
                    )
                held = sum(self._reserved(k, t) for _, k, t in mine)
                if held + self._reserved(kind, total) > cfg.upload_bytes_per_account:
                    raise self._refuse(
                        "bytes",
                        f"unfinished uploads of {held} bytes (at most"
                        f" {cfg.upload_bytes_per_account}): finish one first",
                    )
            was_to, was_total, ranges = await self.store.upload_begin(
                sess.uin, cid, kind, to_user, total, self.engine.now()
            )
        if (was_to, was_total) != (to_user, total):
            raise MMError(
                MMRet.ERR_ARG,
                f"upload {cid!r} was started with to_user={was_to!r} total_len={was_total}",
            )
        return ranges

    def _reserved(self, kind: str, total: int) -> int:
        return self.config.max_voice_bytes if kind == "voice" else total

    def _unlink_partials(self, owner: int, cid: str, kind: str) -> None:
        _unlink(self.media.partial(owner, cid, kind))
        if kind == "video":
            _unlink(self.media.partial(owner, cid, _VTHUMB))

    async def _drop(self, sess: Session, cid: str, kind: str, *, delete_file: bool) -> None:
        await self.store.upload_drop(sess.uin, cid, kind)
        if delete_file:
            await asyncio.to_thread(self._unlink_partials, sess.uin, cid, kind)

    async def sweep(self, batch: int = 1000) -> int:
        """Delete unfinished uploads older than ``upload_ttl`` (row and partial file).
        Returns how many."""
        cutoff = int(self.engine.now() - self.config.upload_ttl)
        n = 0
        while rows := await self.store.uploads_older(cutoff, batch):
            for owner, cid, kind in rows:
                async with self._lock(owner, cid, kind):
                    await self.store.upload_drop(owner, cid, kind)
                    await asyncio.to_thread(self._unlink_partials, owner, cid, kind)
                n += 1
            if len(rows) < batch:
                break
        if n:
            self.expired += n
            log.info("expired %d unfinished uploads", n)
        return n

    async def run_sweeper(self, interval: float = 60.0) -> None:
        """Run :meth:`sweep` every ``interval`` seconds (until cancelled)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception:  # the store may be closing; the next round retries
                log.exception("upload sweep failed")

    async def image(self, sess: Session, req: pb.UploadMsgImgRequest) -> pb.UploadMsgImgResponse:
        """Store one chunk of an image; chunks may come in any order, several at once
        (S24). The reply's start_pos is the lowest offset still missing; once every byte
        is stored the image message exists and the reply carries its id and thumbnail."""
        cid, total = req.client_img_id, req.total_len
        self._check_chunk(cid, req.data, "client_img_id")
        self._check_total(total, self.config.max_image_bytes, "images", req.start_pos, req.data)
        rcpts = await self.engine.recipients(sess, req.to_user)
        resp = pb.UploadMsgImgResponse(client_img_id=cid, total_len=total)
        async with self._lock(sess.uin, cid, "img"):
            if await self._done(sess, cid, resp):
                return resp
            resp.start_pos = await self._put(sess, cid, "img", req.to_user, total, req)
            if resp.start_pos < total:
                return resp
            path = self.media.partial(sess.uin, cid, "img")
            try:
                thumb, w, h = await asyncio.to_thread(self.media.finish_image, path)
            except media.MediaError as exc:
                await self._drop(sess, cid, "img", delete_file=True)
                raise MMError(MMRet.ERR_ARG, str(exc)) from None
            content = f'<msg><img length="{total}" width="{w}" height="{h}"/></msg>'
            template = pb.AddMsg(img_buf=thumb, media_len=total)
            await self._finish(
                sess, cid, "img", req.to_user, MSG_IMAGE, content, rcpts, template, resp
            )
            resp.thumb = thumb
            return resp

    def _check_total(self, total: int, cap: int, what: str, start: int, data: bytes) -> None:
        if not 0 < total <= cap:
            raise MMError(MMRet.ERR_TOO_LARGE, f"{what} are 1 to {cap} bytes (total_len={total})")
        if start + len(data) > total:
            raise MMError(MMRet.ERR_UPLOAD_OFFSET, "chunk ends past total_len")

    async def _done(
        self, sess: Session, cid: str, resp: pb.UploadMsgImgResponse | pb.UploadMediaResponse
    ) -> bool:
        """Fill ``resp`` and say True when the message of ``cid`` exists already (a
        retried last chunk, or a resend)."""
        done = await self.store.message_by_client_id(sess.uin, cid)
        if done is None:
            return False
        resp.start_pos, resp.msg_id, resp.create_time = (
            resp.total_len,
            done.msg_id,
            done.create_time,
        )
        return True

    async def _put(
        self,
        sess: Session,
        cid: str,
        kind: str,
        to_user: str,
        total: int,
        req: pb.UploadMsgImgRequest | pb.UploadAppAttachRequest | pb.UploadVideoRequest,
    ) -> int:
        """Store one chunk of a parallel upload (under its lock); returns the lowest
        offset still missing."""
        ranges = await self._begin(sess, cid, kind, to_user, total)
        if req.data:
            path = self.media.partial(sess.uin, cid, kind)
            await asyncio.to_thread(self.media.write_at, path, req.start_pos, req.data)
            ranges = media.add_range(ranges, req.start_pos, req.start_pos + len(req.data))
            await self.store.upload_save(sess.uin, cid, kind, ranges)
        return media.next_missing(ranges, total)

    async def _finish(
        self,
        sess: Session,
        cid: str,
        kind: str,
        to_user: str,
        msg_type: int,
        content: str,
        rcpts: Sequence[int],
        template: pb.AddMsg,
        resp: pb.UploadMsgImgResponse | pb.UploadMediaResponse,
    ) -> None:
        """Every byte is stored: make the file permanent and the message (one item in
        every recipient's log), then forget the upload."""
        path = self.media.partial(sess.uin, cid, kind)
        ref = self.media.ref_for(sess.uin, cid, kind)
        thumb = bytes(template.img_buf) if template.img_buf else None
        await asyncio.to_thread(self.media.promote, path, ref, thumb)
        msg = self.engine.new_message(sess, cid, to_user, msg_type, content, rcpts, template, ref)
        ((mid, ctime),) = await self.engine.store_messages(sess, [msg])
        await self._drop(sess, cid, kind, delete_file=False)
        resp.msg_id, resp.create_time = mid, ctime

    async def file(self, sess: Session, req: pb.UploadAppAttachRequest) -> pb.UploadMediaResponse:
        """Store one chunk of a file (chunks in any order, several at once, as images);
        once every byte is stored the file message exists (msg_type 49, app_msg_type 6,
        the name and size in its fields and its appmsg XML)."""
        cid, total, name = req.client_msg_id, req.total_len, req.file_name
        self._check_chunk(cid, req.data, "client_msg_id")
        if (
            not name.strip()
            or len(name.encode()) > MAX_FILE_NAME
            or any(c in name for c in "/\\")
            or not name.isprintable()
        ):
            raise MMError(
                MMRet.ERR_ARG,
                f"file_name must be 1-{MAX_FILE_NAME} bytes of printable text without slashes",
            )
        self._check_total(total, self.config.max_file_bytes, "files", req.start_pos, req.data)
        rcpts = await self.engine.recipients(sess, req.to_user)
        resp = pb.UploadMediaResponse(client_msg_id=cid, total_len=total)
        async with self._lock(sess.uin, cid, "file"):
            if await self._done(sess, cid, resp):
                return resp
            resp.start_pos = await self._put(sess, cid, "file", req.to_user, total, req)
            if resp.start_pos < total:
                return resp
            template = pb.AddMsg(media_len=total, file_name=name, app_msg_type=mediaxml.APP_FILE)
            content = mediaxml.file_content(name, total)
            await self._finish(
                sess, cid, "file", req.to_user, MsgType.APP, content, rcpts, template, resp
            )
            return resp

    async def video(self, sess: Session, req: pb.UploadVideoRequest) -> pb.UploadMediaResponse:
        """Store one chunk of a video (as images: any order, several at once). The chunk
        at start_pos 0 carries the thumbnail (an image, made into a JPEG of at most
        100x100; none: :func:`~wxnet.sync.media.placeholder_thumb`)."""
        cid, total = req.client_msg_id, req.total_len
        self._check_chunk(cid, req.data, "client_msg_id")
        self._check_total(total, self.config.max_video_bytes, "videos", req.start_pos, req.data)
        if len(req.thumb) > self.config.max_thumb_bytes:
            raise MMError(
                MMRet.ERR_TOO_LARGE, f"thumbnails are at most {self.config.max_thumb_bytes} bytes"
            )
        if req.thumb and req.start_pos != 0:
            raise MMError(MMRet.ERR_ARG, "the thumbnail goes with the chunk at start_pos 0")
        thumb = b""
        if req.start_pos == 0:
            try:
                thumb = (
                    (await asyncio.to_thread(media.thumbnail, bytes(req.thumb)))[0]
                    if req.thumb
                    else media.placeholder_thumb()
                )
            except media.MediaError as exc:
                raise MMError(MMRet.ERR_ARG, f"the thumbnail: {exc}") from None
        rcpts = await self.engine.recipients(sess, req.to_user)
        resp = pb.UploadMediaResponse(client_msg_id=cid, total_len=total)
        async with self._lock(sess.uin, cid, "video"):
            if await self._done(sess, cid, resp):
                return resp
            tpath = self.media.partial(sess.uin, cid, _VTHUMB)
            if thumb:  # quota first, then the thumbnail, then the chunk's bytes
                await self._begin(sess, cid, "video", req.to_user, total)
                await asyncio.to_thread(self.media.write_file, tpath, thumb)
            resp.start_pos = await self._put(sess, cid, "video", req.to_user, total, req)
            if resp.start_pos < total:
                return resp
            thumb = await asyncio.to_thread(_read_or, tpath, media.placeholder_thumb)
            template = pb.AddMsg(img_buf=thumb, media_len=total, play_length=req.play_length)
            content = mediaxml.video_content(total, req.play_length)
            await self._finish(
                sess, cid, "video", req.to_user, MsgType.VIDEO, content, rcpts, template, resp
            )
            await asyncio.to_thread(_unlink, tpath)
            return resp

    async def voice(self, sess: Session, req: pb.UploadVoiceRequest) -> pb.UploadVoiceResponse:
        """Append one chunk of a voice message (S25): chunks come in order while the user
        records; end_flag creates the message, cancel_flag throws it away."""
        cid = req.client_msg_id
        self._check_chunk(cid, req.data, "client_msg_id")
        rcpts = await self.engine.recipients(sess, req.to_user)
        resp = pb.UploadVoiceResponse(client_msg_id=cid)
        async with self._lock(sess.uin, cid, "voice"):
            done = await self.store.message_by_client_id(sess.uin, cid)
            if done is not None:
                resp.msg_id, resp.create_time = done.msg_id, done.create_time
                resp.offset = req.offset + len(req.data)
                return resp
            if req.cancel_flag:
                await self._drop(sess, cid, "voice", delete_file=True)
                resp.cancelled = True
                return resp
            ranges = await self._begin(sess, cid, "voice", req.to_user, 0)
            have = ranges[0][1] if ranges else 0
            end = req.offset + len(req.data)
            if req.offset > have:
                raise MMError(MMRet.ERR_UPLOAD_OFFSET, f"expected offset {have}, got {req.offset}")
            if end > self.config.max_voice_bytes:
                raise MMError(
                    MMRet.ERR_TOO_LARGE,
                    f"voice messages are at most {self.config.max_voice_bytes} bytes",
                )
            path = self.media.partial(sess.uin, cid, "voice")
            if end > have:  # a retried chunk (end <= have) is already stored
                await asyncio.to_thread(self.media.write_at, path, req.offset, req.data)
                have = end
                await self.store.upload_save(sess.uin, cid, "voice", [(0, have)])
            resp.offset = have
            if not req.end_flag:
                return resp
            if have == 0:
                raise MMError(MMRet.ERR_ARG, "a voice message needs at least one byte")
            ref = self.media.ref_for(sess.uin, cid, "voice")
            await asyncio.to_thread(self.media.promote, path, ref, None)
            content = f'<msg><voicemsg length="{have}" voicelength="{req.voice_length}"/></msg>'
            template = pb.AddMsg(
                media_len=have, voice_length=req.voice_length, voice_format=req.voice_format
            )
            msg = self.engine.new_message(
                sess, cid, req.to_user, MSG_VOICE, content, rcpts, template, ref
            )
            ((mid, ctime),) = await self.engine.store_messages(sess, [msg])
            await self._drop(sess, cid, "voice", delete_file=False)
            resp.msg_id, resp.create_time = mid, ctime
            return resp

    async def _media_ref(self, sess: Session, msg_id: int, kind: str) -> str:
        if not 0 < msg_id < 1 << 63:  # message ids are signed 64-bit in every store
            raise MMError(MMRet.ERR_NOT_FOUND, f"no message {msg_id}")
        msg = await self.store.message(msg_id)
        if (
            msg is None
            or msg.media is None
            or not await self.engine.can_see(sess, msg.sender, msg.to_user)
        ):
            raise MMError(MMRet.ERR_NOT_FOUND, f"no media for message {msg_id}")
        if msg.msg_type not in _KIND_TYPES.get(kind, ()):
            raise MMError(MMRet.ERR_NOT_FOUND, f"message {msg_id} has no {kind}")
        return msg.media

    async def media_file(self, sess: Session, msg_id: int, kind: str) -> Path:
        """The file of a message's media, for a server that streams it from disk (the
        web downloads); the same checks as :meth:`download`.

        Raises:
            MMError: ERR_NOT_FOUND when there is no such media or it is not yours to see.
        """
        return self.media.path_of(await self._media_ref(sess, msg_id, kind), kind)

    async def download(
        self, sess: Session, msg_id: int, kind: str, offset: int, length: int
    ) -> tuple[int, bytes]:
        """(total length, bytes) of a message's media; ``kind`` is img, thumb or voice.
        At most ``max_chunk_bytes`` per call, whatever ``length`` asks for, so a reply
        never holds more than one chunk of a file.

        Raises:
            MMError: ERR_NOT_FOUND when there is no such media or it is not yours to see.
        """
        ref = await self._media_ref(sess, msg_id, kind)
        length = min(length or self.config.max_chunk_bytes, self.config.max_chunk_bytes)
        if offset < 0:
            raise MMError(MMRet.ERR_ARG, "offset must not be negative")
        try:
            return await asyncio.to_thread(self.media.read, ref, kind, offset, length)
        except media.MediaError as exc:
            raise MMError(MMRet.ERR_NOT_FOUND, str(exc)) from None
