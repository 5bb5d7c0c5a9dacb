"""Media over the links: image and voice uploads carried out as
:mod:`wxnet.client.mediaplan` plans them, and chunked downloads.

The server's offset for each upload is remembered here between attempts (and a
restarted process learns it from the first reply), so a retry resumes.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from wxnet.client.config import ClientConfig
from wxnet.client.errors import TransportError
from wxnet.client.links import LinkManager
from wxnet.client.mediaplan import Chunk, ImagePlan, VoicePlan
from wxnet.client.store import OutboxRow
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMError, MMRet

__all__ = ["MAX_DOWNLOAD_CHUNKS", "Media"]

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
        try:
            data = Path(row.media_path).read_bytes()
        except OSError as exc:
            raise MMError(MMRet.ERR_ARG, f"cannot read {row.media_path}: {exc}") from None
        if not data:
            raise MMError(MMRet.ERR_ARG, f"{row.media_path} is empty")
        cid = row.client_msg_id
        plan = ImagePlan(len(data), self.config.image_chunk, self.progress.get(cid, 0))
        result: list[tuple[int, int]] = []

        async def put(chunk: Chunk) -> None:
            if not plan.needed(chunk):
                return
            req = pb.UploadMsgImgRequest(
                base=self.links.base(),
                client_img_id=cid,
                to_user=row.to_user,
                total_len=plan.total,
                start_pos=chunk.offset,
                data=data[chunk.offset : chunk.end],
            )
            resp = await self.links.request("uploadmsgimg", req, pb.UploadMsgImgResponse)
            plan.on_reply(int(resp.start_pos), bool(resp.msg_id))
            self.progress[cid] = plan.progress
            if resp.msg_id:
                result.append((int(resp.msg_id), int(resp.create_time)))

        await put(plan.probe())
        while not result and (chunks := plan.next_round()):
            jobs = [functools.partial(put, c) for c in chunks]
            await _bounded(jobs, self.config.parallel_chunks)
        if not result:
            raise TransportError("uploadmsgimg: the server never completed the image")
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
