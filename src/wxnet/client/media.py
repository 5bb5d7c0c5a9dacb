"""Media over the links: image, file, video and voice uploads carried out as
:mod:`wxnet.client.mediaplan` plans them, and chunked downloads.

The server's offset for each upload is remembered here between attempts (and a
restarted process learns it from the first reply), so a retry resumes.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from google.protobuf.message import Message

from wxnet.client.config import ClientConfig
from wxnet.client.errors import TransportError
from wxnet.client.links import LinkManager
from wxnet.client.mediaplan import Chunk, ImagePlan, VoicePlan
from wxnet.client.store import OutboxRow
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMError, MMRet
from wxnet.sync.media import MediaError, thumbnail

__all__ = ["MAX_DOWNLOAD_CHUNKS", "Media"]

_Resp = TypeVar("_Resp", pb.UploadMsgImgResponse, pb.UploadMediaResponse)

#: Bound on the replies of one download (a server that keeps sending empty pages).
MAX_DOWNLOAD_CHUNKS = 100_000


class Media:
    def __init__(self, links: LinkManager, config: ClientConfig) -> None:
        self.links = links
        self.config = config
        #: ClientMsgId -> the server's lowest missing offset, as last reported.
        self.progress: dict[str, int] = {}

    def forget(self, cid: str) -> None:
        self.progress.pop(cid, None)

    async def upload_image(self, row: OutboxRow) -> tuple[int, int]:
        """Chunks in parallel (``parallel_chunks`` in flight), resumed from the server's
        lowest missing offset (S24). Returns (MsgId, CreateTime)."""

        def request(chunk: Chunk, total: int, data: bytes) -> Message:
            return pb.UploadMsgImgRequest(
                base=self.links.base(),
                client_img_id=row.client_msg_id,
                to_user=row.to_user,
                total_len=total,
                start_pos=chunk.offset,
                data=data,
            )

        return await self._parallel(row, "uploadmsgimg", pb.UploadMsgImgResponse, request)

    async def upload_file(self, row: OutboxRow) -> tuple[int, int]:
        """A file, as an image is sent (parallel chunks, resumed); its name is the
        file's own. Returns (MsgId, CreateTime)."""
        name = Path(row.media_path).name

        def request(chunk: Chunk, total: int, data: bytes) -> Message:
            return pb.UploadAppAttachRequest(
                base=self.links.base(),
                client_msg_id=row.client_msg_id,
                to_user=row.to_user,
                total_len=total,
                start_pos=chunk.offset,
                data=data,
                file_name=name,
            )

        return await self._parallel(row, "uploadappattach", pb.UploadMediaResponse, request)

    async def upload_video(self, row: OutboxRow) -> tuple[int, int]:
        """A video, as an image is sent; the chunk at offset 0 carries the thumbnail
        (the image named by the row's ``content``, made a JPEG of at most 100x100 here,
        as the server would; none: the server makes a placeholder).
        Returns (MsgId, CreateTime)."""
        thumb = b""
        if row.content:
            try:
                thumb = (await asyncio.to_thread(thumbnail, Path(row.content)))[0]
            except (OSError, MediaError) as exc:
                raise MMError(MMRet.ERR_ARG, f"thumbnail {row.content}: {exc}") from None

        def request(chunk: Chunk, total: int, data: bytes) -> Message:
            return pb.UploadVideoRequest(
                base=self.links.base(),
                client_msg_id=row.client_msg_id,
                to_user=row.to_user,
                total_len=total,
                start_pos=chunk.offset,
                data=data,
                thumb=thumb if chunk.offset == 0 else b"",
                play_length=row.voice_length,
            )

        return await self._parallel(row, "uploadvideo", pb.UploadMediaResponse, request)

    async def _parallel(
        self,
        row: OutboxRow,
        cgi: str,
        resp_type: type[_Resp],
        request: Callable[[Chunk, int, bytes], Message],
    ) -> tuple[int, int]:
        """The chunks of ``row.media_path`` as :class:`ImagePlan` plans them, each read
        from the file when it is sent (a big file is never in memory whole)."""
        cid = row.client_msg_id
        try:
            fh = open(row.media_path, "rb")  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            raise MMError(MMRet.ERR_ARG, f"cannot read {row.media_path}: {exc}") from None
        with fh:
            total = os.fstat(fh.fileno()).st_size
            if not total:
                raise MMError(MMRet.ERR_ARG, f"{row.media_path} is empty")
            plan = ImagePlan(total, self.config.image_chunk, self.progress.get(cid, 0))
            result: list[tuple[int, int]] = []

            async def put(chunk: Chunk) -> None:
                if not plan.needed(chunk):
                    return
                data = await asyncio.to_thread(os.pread, fh.fileno(), chunk.length, chunk.offset)
                resp = await self.links.request(cgi, request(chunk, total, data), resp_type)
                plan.on_reply(int(resp.start_pos), bool(resp.msg_id))
                self.progress[cid] = plan.progress
                if resp.msg_id:
                    result.append((int(resp.msg_id), int(resp.create_time)))

            await put(plan.probe())
            while not result and (chunks := plan.next_round()):
                jobs = [functools.partial(put, c) for c in chunks]
                await _bounded(jobs, self.config.parallel_chunks)
        if not result:
            raise TransportError(f"{cgi}: the server never completed the upload")
        return result[0]

    async def upload_voice(
        self, row: OutboxRow, cancel_after: int | None = None
    ) -> tuple[int, int]:
        """Sequential chunks from the file, end_flag on the last (S25); resumes from the
        server's offset. With ``cancel_after``, the cancel flag after that many chunks:
        returns (0, 0)."""
        cid = row.client_msg_id
        try:
            fh = open(row.media_path, "rb")  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            raise MMError(MMRet.ERR_ARG, f"cannot read {row.media_path}: {exc}") from None
        with fh:
            total = fh.seek(0, 2)
            plan = VoicePlan(
                total, self.config.voice_chunk, self.progress.get(cid, 0), cancel_after
            )
            while True:
                chunk = plan.next_chunk()
                fh.seek(chunk.offset)
                req = pb.UploadVoiceRequest(
                    base=self.links.base(),
                    client_msg_id=cid,
                    to_user=row.to_user,
                    offset=chunk.offset,
                    data=fh.read(chunk.length) if chunk.length else b"",
                    voice_length=row.voice_length,
                    voice_format=0,
                    end_flag=chunk.end,
                    cancel_flag=chunk.cancel,
                )
                resp = await self.links.request("uploadvoice", req, pb.UploadVoiceResponse)
                if chunk.cancel:
                    return 0, 0
                if resp.msg_id:
                    return int(resp.msg_id), int(resp.create_time)
                plan.on_reply(chunk, int(resp.offset))
                self.progress[cid] = plan.offset

    async def download_image(self, msg_id: int, thumb: bool = False) -> bytes:
        out = bytearray()
        for _ in range(MAX_DOWNLOAD_CHUNKS):
            resp = await self.links.request(
                "getmsgimg",
                pb.DownloadMsgImgRequest(msg_id=msg_id, start_pos=len(out), thumb=thumb),
                pb.DownloadMsgImgResponse,
            )
            out += resp.data
            if len(out) >= resp.total_len or not resp.data:
                break
        return bytes(out)

    async def download_file(self, msg_id: int, dest: Path) -> int:
        """A file message's bytes into ``dest`` (chunk by chunk, never whole in memory);
        returns the size."""
        return await self._download_to("downloadappattach", msg_id, False, dest)

    async def download_video(self, msg_id: int, dest: Path, thumb: bool = False) -> int:
        """A video (``thumb``: its thumbnail) into ``dest``; returns the size."""
        return await self._download_to("downloadvideo", msg_id, thumb, dest)

    async def _download_to(self, cgi: str, msg_id: int, thumb: bool, dest: Path) -> int:
        fh = await asyncio.to_thread(open, dest, "wb")
        try:
            pos = 0
            for _ in range(MAX_DOWNLOAD_CHUNKS):
                resp = await self.links.request(
                    cgi,
                    pb.DownloadMediaRequest(msg_id=msg_id, start_pos=pos, thumb=thumb),
                    pb.DownloadMediaResponse,
                )
                await asyncio.to_thread(fh.write, resp.data)
                pos += len(resp.data)
                if pos >= resp.total_len or not resp.data:
                    break
        finally:
            await asyncio.to_thread(fh.close)
        return pos

    async def download_voice(self, msg_id: int) -> bytes:
        out = bytearray()
        for _ in range(MAX_DOWNLOAD_CHUNKS):
            resp = await self.links.request(
                "downloadvoice",
                pb.DownloadVoiceRequest(msg_id=msg_id, offset=len(out)),
                pb.DownloadVoiceResponse,
            )
            out += resp.data
            if len(out) >= resp.total_len or not resp.data:
                break
        return bytes(out)


async def _bounded(jobs: Sequence[Callable[[], Awaitable[None]]], limit: int) -> None:
    """Run the jobs with at most ``limit`` in flight; the first failure cancels the rest
    and is raised. A cancel of the caller propagates (the jobs are cancelled too)."""
    sem = asyncio.Semaphore(max(1, limit))

    async def run(job: Callable[[], Awaitable[None]]) -> None:
        async with sem:
            await job()

    tasks = [asyncio.ensure_future(run(j)) for j in jobs]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        if tasks:
            # Let the cancelled jobs finish; asyncio.wait never raises their errors, and
            # a cancel of this task still interrupts it (no suppress(BaseException)).
            await asyncio.wait(tasks)
