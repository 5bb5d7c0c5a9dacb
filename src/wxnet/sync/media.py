"""Media files of the embedded store: partial uploads, finished images, voice, files and
videos, thumbnails (S24, S25). Blocking file I/O: the engine calls these from a thread.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path

from PIL import Image, ImageDraw

__all__ = [
    "MediaError",
    "MediaStore",
    "add_range",
    "next_missing",
    "placeholder_thumb",
    "thumbnail",
]

#: Thumbnails are at most 100x100 (research/mobile-protocol.md 2.7).
THUMB_SIZE = (100, 100)
#: Refuse images that decode to more pixels than this (decompression bombs).
MAX_PIXELS = 40_000_000


class MediaError(Exception):
    """A media file is missing or not what it claims to be."""


def add_range(ranges: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """Merge [start, end) into a sorted list of disjoint half-open ranges."""
    out: list[tuple[int, int]] = []
    for a, b in sorted([*ranges, (start, end)]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def next_missing(ranges: list[tuple[int, int]], total: int) -> int:
    """The lowest offset below ``total`` not covered by ``ranges`` (``total`` if none)."""
    pos = 0
    for a, b in ranges:
        if a > pos:
            return pos
        pos = max(pos, b)
    return min(pos, total)


def thumbnail(src: Path | bytes) -> tuple[bytes, int, int]:
    """(JPEG thumbnail of at most :data:`THUMB_SIZE`, width, height) of an image file or
    its bytes.

    Raises:
        MediaError: not an image Pillow can read, or one of more than MAX_PIXELS.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise MediaError(f"image of {width}x{height} pixels is too large")
                img.draft("RGB", THUMB_SIZE)
                thumb = img.convert("RGB")
                thumb.thumbnail(THUMB_SIZE)
                buf = io.BytesIO()
                thumb.save(buf, "JPEG", quality=70)
    except MediaError:
        raise
    except (
        OSError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise MediaError(f"not an image Pillow can read: {exc}") from None
    return buf.getvalue(), width, height


def placeholder_thumb() -> bytes:
    """The thumbnail of a video sent without one: a 96x64 dark grey JPEG with a light
    play triangle, made here (wxnet does not decode videos)."""
    img = Image.new("RGB", (96, 64), (48, 48, 48))
    ImageDraw.Draw(img).polygon([(38, 18), (38, 46), (62, 32)], fill=(220, 220, 220))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=70)
    return buf.getvalue()


class MediaStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        for d in (root, root / "partial", root / "files"):  # media is private: 0700
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            if d.stat().st_mode & 0o077:
                d.chmod(0o700)

    @staticmethod
    def _digest(owner: int, cid: str, kind: str) -> str:
        return hashlib.sha256(f"{owner}\0{cid}\0{kind}".encode()).hexdigest()[:40]

    def partial(self, owner: int, cid: str, kind: str) -> Path:
        return self.root / "partial" / f"{self._digest(owner, cid, kind)}.{kind}"

    def ref_for(self, owner: int, cid: str, kind: str) -> str:
        return f"{self._digest(owner, cid, kind)}.{kind}"

    def free_bytes(self) -> int:
        """Bytes free for us on the media file system."""
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def write_at(self, path: Path, offset: int, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, data, offset)
        finally:
            os.close(fd)

    def write_file(self, path: Path, data: bytes) -> None:
        """Write a whole small file (a video's thumbnail while its upload runs)."""
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(data)

    def finish_image(self, path: Path) -> tuple[bytes, int, int]:
        """Check the joined file is an image; return (JPEG thumbnail, width, height)."""
        return thumbnail(path)

    def promote(self, path: Path, ref: str, thumb: bytes | None) -> None:
        """Make a finished upload permanent: fsync it and move it under files/."""
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if thumb is not None:
            tpath = self.root / "files" / f"{ref}.thumb"
            with os.fdopen(os.open(tpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
                f.write(thumb)
                f.flush()
                os.fsync(f.fileno())
        os.replace(path, self.root / "files" / ref)
        dfd = os.open(self.root / "files", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def path_of(self, ref: str, kind: str) -> Path:
        """Where a finished media file (``kind`` thumb: its thumbnail) lives."""
        return self.root / "files" / (f"{ref}.thumb" if kind == "thumb" else ref)

    def read(self, ref: str, kind: str, offset: int, length: int) -> tuple[int, bytes]:
        path = self.path_of(ref, kind)
        name = path.name
        try:
            with open(path, "rb") as f:
                total = os.fstat(f.fileno()).st_size
                f.seek(offset)
                return total, f.read(max(0, length))
        except FileNotFoundError:
            raise MediaError(f"media file {name} is missing") from None
