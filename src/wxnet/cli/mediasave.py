"""``--save DIR`` of ``wxnet history`` and ``wxnet listen``: a received message's media
downloaded into a directory, under names made from the message id.

Names: ``<msg id>.jpg|png|gif`` (an image, by its bytes), ``<msg id>.voice`` (voice, as
sent), ``<msg id>.mp4`` and ``<msg id>.thumb.jpg`` (a video and its thumbnail),
``<msg id>-<file name>`` (a file, its name made safe). A file that is already there is
not downloaded again; a download lands under ``.part`` and is renamed when complete.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from wxnet.client.sdk import MSG_FILE, MSG_IMAGE, MSG_VIDEO, MSG_VOICE, Client
from wxnet.proto import mediaxml

__all__ = ["MEDIA_TYPES", "safe_name", "save_media"]

MEDIA_TYPES = frozenset({MSG_IMAGE, MSG_VOICE, MSG_VIDEO, MSG_FILE})
_IMAGE_EXT = ((b"\x89PNG", ".png"), (b"GIF8", ".gif"), (b"\xff\xd8", ".jpg"))


def safe_name(name: str) -> str:
    """A received file name usable in a directory: no separators, no control
    characters, no leading dots, at most 200 characters."""
    out = "".join(c if c.isprintable() and c not in "/\\\0" else "_" for c in name)
    out = out.lstrip(". ")[:200]
    return out or "file"


async def _write(path: Path, data: bytes) -> None:
    part = path.with_name(path.name + ".part")
    await asyncio.to_thread(part.write_bytes, data)
    await asyncio.to_thread(os.replace, part, path)


async def save_media(
    client: Client, msg_id: int, msg_type: int, content: str, directory: Path
) -> list[Path]:
    """Download message ``msg_id``'s media into ``directory``; returns the files written
    or already there (none for a message without media)."""
    if msg_type not in MEDIA_TYPES:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    if msg_type == MSG_FILE:
        info = mediaxml.parse_file(content)
        if info is None or info.app_type != mediaxml.APP_FILE:
            return []  # a link or other app message: nothing to download
        dest = directory / f"{msg_id}-{safe_name(info.name)}"
        if not dest.exists():
            part = dest.with_name(dest.name + ".part")
            await client.download_file(msg_id, part)
            await asyncio.to_thread(os.replace, part, dest)
        return [dest]
    if msg_type == MSG_VIDEO:
        dest, thumb = directory / f"{msg_id}.mp4", directory / f"{msg_id}.thumb.jpg"
        for path, want_thumb in ((dest, False), (thumb, True)):
            if not path.exists():
                part = path.with_name(path.name + ".part")
                await client.download_video(msg_id, part, thumb=want_thumb)
                await asyncio.to_thread(os.replace, part, path)
        return [dest, thumb]
    if msg_type == MSG_VOICE:
        dest = directory / f"{msg_id}.voice"
        if not dest.exists():
            await _write(dest, await client.download_voice(msg_id))
        return [dest]
    for ext in (e for _, e in _IMAGE_EXT):
        if (directory / f"{msg_id}{ext}").exists():
            return [directory / f"{msg_id}{ext}"]
    data = await client.download_image(msg_id)
    ext = next((e for magic, e in _IMAGE_EXT if data.startswith(magic)), ".img")
    dest = directory / f"{msg_id}{ext}"
    await _write(dest, data)
    return [dest]
