"""Web uploads (``webwxuploadmedia``) spooled to disk, with quotas and expiry, shared by
every worker and node.

A web client uploads a file in multipart chunks (512 KiB for the real clients),
then sends it by MediaId (``webwxsendmsgimg``). Nothing of it is held in memory:
each chunk is streamed into a file under the spool directory and the file's chunks are
read back 64 KiB at a time when the message is sent.

Chunks of one upload may arrive at different processes (``serve --workers N``, several
nodes behind one name), and the send at yet another one. So an upload's metadata (its
session, account, declared size, the size of every chunk so far, finished, sent) is a
row in the store (:class:`~wxnet.sync.shared.WebUploadRow`), and the chunk files are in
``<data>/web-spool``, the data directory every node already shares for media files
(docs/scaling.md). The bytes stay on that disk rather than in the store: a 20 MiB file
through PostgreSQL would cost its WAL and a round trip per chunk, and media files need
the shared directory anyway.

Bounds (all in :class:`~wxnet.server.web.config.WebConfig`): a file's size, a chunk's
size, uploads per session and per account (unfinished or not yet sent), spooled bytes per
account, and a lifetime after which an upload is deleted (:meth:`WebSpool.sweep`).
Going over one raises :class:`SpoolFull` (``Ret -1009``) or :class:`SpoolTooLarge`
(``Ret -1002``); the caller turns it into the web error form. The bytes of a chunk still
arriving count against the account's quota in the process that receives it; what other
processes receive counts once it is recorded, so N processes may admit at most N chunks
(``max_chunk`` each) over the quota at once.

The spool is kept apart from the session storage: it is keyed by the session's wxsid
hash and its account's uin, which is all it needs to know of a session.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from pathlib import Path

from wxnet.server.web.config import WebConfig
from wxnet.sync.shared import SharedState, WebUploadRow

__all__ = ["SpoolFull", "SpoolTooLarge", "Upload", "WebSpool"]

#: Uploads the sweep looks at per run (the rest wait for the next run).
SWEEP_BATCH = 1000


class SpoolFull(Exception):
    """A quota (uploads or bytes, per session or account) is reached: retry later."""


class SpoolTooLarge(Exception):
    """A chunk or file is over its size bound."""


@dataclass(slots=True)
class Upload:
    """An upload as stored, and where its chunks are."""

    row: WebUploadRow
    base: Path

    @property
    def media_id(self) -> str:
        return self.row.media_id

    @property
    def total(self) -> int:
        return self.row.total

    @property
    def uin(self) -> int:
        return self.row.uin

    @property
    def spooled(self) -> int:
        return self.row.spooled

    def chunk_path(self, i: int) -> Path:
        return self.base.with_name(f"{self.base.name}.{i}")

    def read(self, piece: int = 64 * 1024) -> Generator[bytes, None, None]:
        """The finished file, ``piece`` bytes at a time (blocking: run in a thread)."""
        for i in range(self.row.chunks):
            with open(self.chunk_path(i), "rb") as f:
                while data := f.read(piece):
                    yield data


class WebSpool:
    """Every web upload of the server's store, on disk under ``root`` (shared by the
    processes that share the store).

    Args:
        root: a directory of its own (created if missing; what is in it stays: other
            processes may be using it, and their uploads outlive a restart as web
            sessions do).
        store: where the uploads' rows are.
    """

    def __init__(self, root: Path, config: WebConfig, store: SharedState) -> None:
        self.root = root
        self.config = config
        self.store = store
        root.mkdir(parents=True, mode=0o700, exist_ok=True)
        self._inflight: dict[int, int] = {}  # uin -> bytes of parts arriving here
        #: uploads and bytes in the spool (every process's: exact after each sweep,
        #: kept up to date in between by this process's own changes)
        self.uploads = 0
        self.total_bytes = 0
        #: below this much free disk no web upload grows (the server sets it from
        #: ``[sync] min_free_disk_bytes``; 0: no floor)
        self.min_free = 0

    def disk_low(self) -> bool:
        if not self.min_free:
            return False
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize < self.min_free

    def __len__(self) -> int:
        return self.uploads

    def _upload(self, row: WebUploadRow) -> Upload:
        return Upload(row, self.root / f"up-{row.media_id.removeprefix('@crypt_')}")

    # -- accounting ------------------------------------------------------------------
    def inflight(self, uin: int) -> int:
        return self._inflight.get(uin, 0)

    def charge(self, uin: int, n: int) -> None:
        """Count ``n`` more (or, negative, fewer) bytes arriving here for account ``uin``."""
        left = self._inflight.get(uin, 0) + n
        if left > 0:
            self._inflight[uin] = left
        else:
            self._inflight.pop(uin, None)
        self.total_bytes += n

    async def stored_bytes(self, uin: int) -> int:
        """Bytes of account ``uin``'s uploads recorded in the store (every process's)."""
        return sum(r.spooled for r in await self.store.web_uploads_of(uin))

    async def make_room(self, uin: int, need: int) -> int:
        """Delete the account's sent uploads (oldest first) until ``need`` bytes fit, or
        none is left; returns the bytes the account may still spool, beyond those
        arriving here now. Unsent ones are the client's to send."""
        rows = await self.store.web_uploads_of(uin)
        limit = self.config.upload_bytes_per_account
        stored = sum(r.spooled for r in rows)
        for old in (r for r in rows if r.sent):
            if limit - stored - self.inflight(uin) >= need:
                break
            await self.drop(self._upload(old))
            stored -= old.spooled
        return limit - stored - self.inflight(uin)

    # -- one chunk -------------------------------------------------------------------
    def open_temp(self) -> tuple[Path, int]:
        """A fresh file for a chunk that is still arriving (blocking)."""
        path = self.root / f"in-{secrets.token_hex(12)}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return path, fd

    async def upload_for(
        self, sid_key: str, uin: int, ident: str, total: int, chunks: int, now: float
    ) -> Upload:
        """The unfinished upload ``ident`` of session ``sid_key`` (made by any process),
        created if new.

        Raises:
            SpoolTooLarge: ``total`` is over ``max_upload``.
            SpoolFull: the session or the account has too many uploads.
        """
        cfg = self.config
        row = await self.store.web_upload_by_ident(sid_key, ident)
        if row is not None and not row.done:
            return self._upload(row)
        if not 0 < total <= cfg.max_upload:
            raise SpoolTooLarge(f"file size must be 1..{cfg.max_upload}")
        account = await self.store.web_uploads_of(uin)
        for scope, limit, mine in (
            ("session", cfg.max_pending_uploads, [r for r in account if r.sid_key == sid_key]),
            ("account", cfg.uploads_per_account, account),
        ):
            # finished and sent uploads make room first (oldest first); unfinished or
            # unsent ones are the client's to finish, or expire
            for old in [r for r in mine if r.sent]:
                if len(mine) < limit:
                    break
                await self.drop(self._upload(old))
                mine.remove(old)
                if old in account:
                    account.remove(old)
            if len(mine) >= limit:
                raise SpoolFull(f"too many uploads in progress for this {scope} ({limit})")
        if row is not None:  # the same file again, after it was finished: a new upload
            await self.drop(self._upload(row))
        new = WebUploadRow(
            "@crypt_" + secrets.token_hex(16), sid_key, uin, ident, total, chunks, {}, now,
            False, False,
        )  # fmt: skip
        await self.store.web_upload_put(new)
        self.uploads += 1
        return self._upload(new)

    async def commit_chunk(self, up: Upload, index: int, temp: Path, size: int) -> Upload:
        """Make the streamed ``temp`` (``size`` bytes, charged as arriving here) chunk
        ``index``, and record it; the upload is finished when its last chunk is.

        Raises:
            SpoolTooLarge: the chunks add up to more than the declared size.
            SpoolFull: the upload expired meanwhile.
        """
        try:
            await asyncio.to_thread(os.replace, temp, up.chunk_path(index))
            row = await self.store.web_upload_chunk(up.media_id, index, size)
        finally:
            self.charge(up.uin, -size)  # recorded (or lost): no longer arriving here
        if row is None:  # swept (expired) meanwhile, by any process
            await asyncio.to_thread(_unlink, up.chunk_path(index))
            raise SpoolFull("the upload expired; upload it again")
        self.total_bytes += row.spooled - up.spooled
        up = self._upload(row)
        if row.spooled > row.total:
            await self.drop(up)
            raise SpoolTooLarge("chunks exceed the declared size")
        if len(row.sizes) == row.chunks:
            if row.spooled != row.total:
                await self.drop(up)
                raise SpoolTooLarge("upload size does not match")
            up.row = dataclasses.replace(row, done=True)
            await self.store.web_upload_put(up.row)
        return up

    async def finished(self, sid_key: str, media_id: str) -> Upload | None:
        """The finished upload ``media_id`` of session ``sid_key`` (made anywhere)."""
        row = await self.store.web_upload(media_id)
        if row is None or row.sid_key != sid_key or not row.done:
            return None
        return self._upload(row)

    async def mark_sent(self, up: Upload) -> None:
        """The upload was sent: it may make room for newer ones from now on."""
        up.row = dataclasses.replace(up.row, sent=True)
        await self.store.web_upload_put(up.row)

    # -- ending ----------------------------------------------------------------------
    async def drop(self, up: Upload) -> None:
        await self.store.web_upload_drop([up.media_id])
        await asyncio.to_thread(self._unlink_chunks, up)
        self.uploads = max(0, self.uploads - 1)
        self.total_bytes = max(0, self.total_bytes - up.spooled)

    def _unlink_chunks(self, up: Upload) -> None:
        for i in range(up.row.chunks):
            _unlink(up.chunk_path(i))

    async def drop_session(self, uin: int, sid_key: str) -> int:
        gone = [r for r in await self.store.web_uploads_of(uin) if r.sid_key == sid_key]
        for row in gone:
            await self.drop(self._upload(row))
        return len(gone)

    async def sweep(
        self, now: float, alive: Callable[[int, str], Awaitable[bool]] | None = None
    ) -> int:
        """Delete uploads older than ``upload_ttl`` (and, given ``alive``, those of
        sessions for which it answers False), and files no upload owns that are older
        than that (a process that died mid-request). Returns how many uploads went."""
        cutoff = now - self.config.upload_ttl
        gone = list(await self.store.web_uploads_older(cutoff, SWEEP_BATCH))
        if alive is not None:
            verdict: dict[str, bool] = {}
            for row in await self.store.web_uploads_older(now + 1, SWEEP_BATCH):
                if row.created <= cutoff:
                    continue
                if row.sid_key not in verdict:
                    verdict[row.sid_key] = await alive(row.uin, row.sid_key)
                if not verdict[row.sid_key]:
                    gone.append(row)
        for row in gone:
            await self.drop(self._upload(row))
        await self._sweep_files(time.time() - self.config.upload_ttl - self.config.upload_timeout)
        self.uploads, self.total_bytes = await self.store.web_upload_totals()
        self.total_bytes += sum(self._inflight.values())
        return len(gone)

    async def _sweep_files(self, older: float) -> None:
        """Files left by a process that died mid-request (its temp parts), or between
        writing a chunk and recording it, older than ``older`` (wall clock)."""

        def stale() -> list[Path]:
            out = []
            for p in self.root.iterdir():
                try:
                    if p.stat().st_mtime < older:
                        out.append(p)
                except FileNotFoundError:
                    continue
            return out

        for p in await asyncio.to_thread(stale):
            if p.name.startswith("up-"):
                media_id = "@crypt_" + p.name[3:].partition(".")[0]
                if await self.store.web_upload(media_id) is not None:
                    continue
            await asyncio.to_thread(_unlink, p)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
