"""Web uploads (``webwxuploadmedia``) spooled to disk, with quotas and expiry.

A web client uploads a file in multipart chunks (512 KiB for the real clients),
then sends it by MediaId (``webwxsendmsgimg``). Nothing of it is held in memory:
each chunk is streamed into a file under the spool directory and the file's chunks are
read back 64 KiB at a time when the message is sent.

Bounds (all in :class:`~wxnet.server.web.config.WebConfig`): a file's size, a chunk's
size, uploads per session and per account (unfinished or not yet sent), spooled bytes per
account, and a lifetime after which an upload is deleted (:meth:`WebSpool.sweep`).
Going over one raises :class:`SpoolFull` (``Ret -1009``) or :class:`SpoolTooLarge`
(``Ret -1002``); the caller turns it into the web error form.

The spool is kept apart from the session storage: it is keyed by the session's wxsid
and its account's uin, which is all it needs to know of a session.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

from wxnet.server.web.config import WebConfig

__all__ = ["SpoolFull", "SpoolTooLarge", "Upload", "WebSpool"]


class SpoolFull(Exception):
    """A quota (uploads or bytes, per session or account) is reached: retry later."""


class SpoolTooLarge(Exception):
    """A chunk or file is over its size bound."""


@dataclass(slots=True)
class Upload:
    key: str  # ClientMediaId (or name) and the declared size, as the client gave them
    sid: str
    uin: int
    media_id: str
    total: int
    chunks: int
    created: float
    base: Path
    sizes: dict[int, int] = field(default_factory=dict)  # chunk index -> bytes spooled
    done: bool = False
    sent: bool = False

    @property
    def spooled(self) -> int:
        return sum(self.sizes.values())

    def chunk_path(self, i: int) -> Path:
        return self.base.with_name(f"{self.base.name}.{i}")

    def read(self, piece: int = 64 * 1024) -> Generator[bytes, None, None]:
        """The finished file, ``piece`` bytes at a time (blocking: run in a thread)."""
        for i in range(self.chunks):
            with open(self.chunk_path(i), "rb") as f:
                while data := f.read(piece):
                    yield data


class WebSpool:
    """Every web upload of the server, on disk under ``root``.

    Args:
        root: a directory of its own; emptied when the spool is created (uploads do not
            outlive the process, as web sessions do not).
    """

    def __init__(self, root: Path, config: WebConfig) -> None:
        self.root = root
        self.config = config
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True, mode=0o700)
        self._uploads: dict[tuple[str, str], Upload] = {}  # (wxsid, key)
        self._by_media: dict[str, Upload] = {}
        self._bytes: dict[int, int] = {}  # uin -> spooled bytes (incl. parts arriving)
        self.total_bytes = 0
        #: below this much free disk no web upload grows (the server sets it from
        #: ``[sync] min_free_disk_bytes``; 0: no floor)
        self.min_free = 0

    def disk_low(self) -> bool:
        if not self.min_free:
            return False
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize < self.min_free

    # -- accounting ------------------------------------------------------------------
    def account_bytes(self, uin: int) -> int:
        return self._bytes.get(uin, 0)

    def charge(self, uin: int, n: int) -> None:
        """Count ``n`` more (or, negative, fewer) spooled bytes against account ``uin``."""
        left = self._bytes.get(uin, 0) + n
        if left > 0:
            self._bytes[uin] = left
        else:
            self._bytes.pop(uin, None)
        self.total_bytes += n

    def room(self, uin: int) -> int:
        """Bytes account ``uin`` may still spool."""
        return self.config.upload_bytes_per_account - self.account_bytes(uin)

    def make_room(self, uin: int, need: int) -> int:
        """Delete the account's sent uploads (oldest first) until ``need`` bytes fit, or
        none is left; returns :meth:`room`. Unsent ones are the client's to send."""
        for old in sorted((u for u in self.uploads_of(uin=uin) if u.sent), key=lambda u: u.created):
            if self.room(uin) >= need:
                break
            self.drop(old)
        return self.room(uin)

    def uploads_of(self, *, sid: str | None = None, uin: int | None = None) -> list[Upload]:
        return [
            u
            for u in self._uploads.values()
            if (sid is None or u.sid == sid) and (uin is None or u.uin == uin)
        ]

    def __len__(self) -> int:
        return len(self._uploads)

    # -- one chunk -------------------------------------------------------------------
    def temp_path(self) -> Path:
        """A fresh file name for a chunk that is still arriving."""
        return self.root / f"in-{secrets.token_hex(12)}"

    def open_temp(self) -> tuple[Path, int]:
        path = self.temp_path()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return path, fd

    def upload_for(
        self, sid: str, uin: int, key: str, total: int, chunks: int, now: float
    ) -> Upload:
        """The upload ``key`` of session ``sid``, created if new.

        Raises:
            SpoolTooLarge: ``total`` is over ``max_upload``.
            SpoolFull: the session or the account has too many uploads.
        """
        cfg = self.config
        up = self._uploads.get((sid, key))
        if up is not None and not up.done:
            return up
        if not 0 < total <= cfg.max_upload:
            raise SpoolTooLarge(f"file size must be 1..{cfg.max_upload}")
        for scope, limit, mine in (
            ("session", cfg.max_pending_uploads, self.uploads_of(sid=sid)),
            ("account", cfg.uploads_per_account, self.uploads_of(uin=uin)),
        ):
            # finished and sent uploads make room first (oldest first); unfinished or
            # unsent ones are the client's to finish, or expire
            for old in sorted((u for u in mine if u.sent), key=lambda u: u.created):
                if len(mine) < limit:
                    break
                self.drop(old)
                mine.remove(old)
            if len(mine) >= limit:
                raise SpoolFull(f"too many uploads in progress for this {scope} ({limit})")
        if up is not None:  # the same file again, after it was finished: a new upload
            self.drop(up)
        up = Upload(
            key=key,
            sid=sid,
            uin=uin,
            media_id="@crypt_" + secrets.token_hex(16),
            total=total,
            chunks=chunks,
            created=now,
            base=self.root / f"up-{secrets.token_hex(12)}",
        )
        self._uploads[(sid, key)] = up
        self._by_media[up.media_id] = up
        return up

    def commit_chunk(self, up: Upload, index: int, temp: Path, size: int) -> None:
        """Make the streamed ``temp`` (``size`` bytes, already charged) chunk ``index``.

        Raises:
            SpoolTooLarge: the chunks add up to more than the declared size.
        """
        old = up.sizes.get(index)
        os.replace(temp, up.chunk_path(index))
        if old is not None:
            self.charge(up.uin, -old)
        up.sizes[index] = size
        if up.spooled > up.total:
            self.drop(up)
            raise SpoolTooLarge("chunks exceed the declared size")
        if len(up.sizes) == up.chunks:
            if up.spooled != up.total:
                self.drop(up)
                raise SpoolTooLarge("upload size does not match")
            up.done = True

    def finished(self, sid: str, media_id: str) -> Upload | None:
        up = self._by_media.get(media_id)
        if up is None or up.sid != sid or not up.done:
            return None
        return up

    # -- ending ----------------------------------------------------------------------
    def drop(self, up: Upload) -> None:
        if self._uploads.get((up.sid, up.key)) is up:
            del self._uploads[(up.sid, up.key)]
        self._by_media.pop(up.media_id, None)
        for i in list(up.sizes):
            try:
                os.unlink(up.chunk_path(i))
            except FileNotFoundError:
                pass
        self.charge(up.uin, -up.spooled)
        up.sizes.clear()

    def drop_session(self, sid: str) -> int:
        gone = self.uploads_of(sid=sid)
        for up in gone:
            self.drop(up)
        return len(gone)

    def sweep(self, now: float, alive: set[str] | None = None) -> int:
        """Delete uploads older than ``upload_ttl`` (and, given ``alive``, those of
        sessions not in it). Returns how many."""
        cutoff = now - self.config.upload_ttl
        gone = [
            u
            for u in self._uploads.values()
            if u.created <= cutoff or (alive is not None and u.sid not in alive)
        ]
        for up in gone:
            self.drop(up)
        return len(gone)
