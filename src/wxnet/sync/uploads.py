"""Media messages (S24, S25): resumable, parallel image upload joined on the server with
a thumbnail; voice streamed in chunks with end and cancel flags; chunked downloads.

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
from pathlib import Path

from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMError, MMRet
from wxnet.sync import media
from wxnet.sync.engine import MSG_IMAGE, MSG_VOICE, Engine, Session

__all__ = ["Uploads"]

log = logging.getLogger("wxnet.server")


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

    async def _drop(self, sess: Session, cid: str, kind: str, *, delete_file: bool) -> None:
        await self.store.upload_drop(sess.uin, cid, kind)
        if delete_file:
            await asyncio.to_thread(_unlink, self.media.partial(sess.uin, cid, kind))

    async def sweep(self, batch: int = 1000) -> int:
        """Delete unfinished uploads older than ``upload_ttl`` (row and partial file).
        Returns how many."""
        cutoff = int(self.engine.now() - self.config.upload_ttl)
        n = 0
        while rows := await self.store.uploads_older(cutoff, batch):
            for owner, cid, kind in rows:
                async with self._lock(owner, cid, kind):
                    await self.store.upload_drop(owner, cid, kind)
                    await asyncio.to_thread(_unlink, self.media.partial(owner, cid, kind))
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
        if not 0 < total <= self.config.max_image_bytes:
            raise MMError(
                MMRet.ERR_TOO_LARGE,
                f"images are 1 to {self.config.max_image_bytes} bytes (total_len={total})",
            )
        if req.start_pos + len(req.data) > total:
            raise MMError(MMRet.ERR_UPLOAD_OFFSET, "chunk ends past total_len")
        rcpts = await self.engine.recipients(sess, req.to_user)
        resp = pb.UploadMsgImgResponse(client_img_id=cid, total_len=total)
        async with self._lock(sess.uin, cid, "img"):
            done = await self.store.message_by_client_id(sess.uin, cid)
            if done is not None:
                resp.start_pos, resp.msg_id, resp.create_time = total, done.msg_id, done.create_time
                return resp
            ranges = await self._begin(sess, cid, "img", req.to_user, total)
            path = self.media.partial(sess.uin, cid, "img")
            if req.data:
                await asyncio.to_thread(self.media.write_at, path, req.start_pos, req.data)
                ranges = media.add_range(ranges, req.start_pos, req.start_pos + len(req.data))
                await self.store.upload_save(sess.uin, cid, "img", ranges)
            resp.start_pos = media.next_missing(ranges, total)
            if resp.start_pos < total:
                return resp
            try:
                thumb, w, h = await asyncio.to_thread(self.media.finish_image, path)
            except media.MediaError as exc:
                await self._drop(sess, cid, "img", delete_file=True)
                raise MMError(MMRet.ERR_ARG, str(exc)) from None
            ref = self.media.ref_for(sess.uin, cid, "img")
            await asyncio.to_thread(self.media.promote, path, ref, thumb)
            content = f'<msg><img length="{total}" width="{w}" height="{h}"/></msg>'
            msg = self.engine.new_message(
                sess,
                cid,
                req.to_user,
                MSG_IMAGE,
                content,
                rcpts,
                pb.AddMsg(img_buf=thumb, media_len=total),
                ref,
            )
            ((mid, ctime),) = await self.engine.store_messages(sess, [msg])
            await self._drop(sess, cid, "img", delete_file=False)
            resp.msg_id, resp.create_time, resp.thumb = mid, ctime, thumb
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
        if msg.msg_type != (MSG_VOICE if kind == "voice" else MSG_IMAGE):
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
