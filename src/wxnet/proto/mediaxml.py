"""The XML a file or video message carries in its content: one codec, used by the
server (making the message), the web API (itchat's and wechat4u's ``webwxsendappmsg``
Content, and the AddMsgList element) and the client (history).

A file is WeChat's app message (MsgType 49) of AppMsgType 6::

    <msg><appmsg appid="" sdkver="0"><title>NAME</title><des></des><type>6</type>
    <appattach><totallen>SIZE</totallen><attachid>ID</attachid><fileext>EXT</fileext>
    </appattach></appmsg></msg>

(web clients send the ``<appmsg>`` element alone, without ``<msg>``); a video
(MsgType 43) is ``<msg><videomsg length="SIZE" playlength="SECONDS"/></msg>``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

__all__ = [
    "APP_FILE",
    "MAX_XML",
    "FileInfo",
    "VideoInfo",
    "file_content",
    "file_ext",
    "parse_file",
    "parse_video",
    "video_content",
]

#: AppMsgType of a file attachment.
APP_FILE = 6
#: Longer content is not parsed (the server caps message content below this anyway).
MAX_XML = 64 * 1024


@dataclass(frozen=True, slots=True)
class FileInfo:
    name: str
    size: int
    attach_id: str = ""
    app_type: int = APP_FILE


@dataclass(frozen=True, slots=True)
class VideoInfo:
    size: int
    play_length: int


def file_ext(name: str) -> str:
    """The extension WeChat puts in ``<fileext>``: after the last dot, lower case."""
    _, dot, ext = name.rpartition(".")
    return ext.lower()[:16] if dot and ext else ""


def file_content(name: str, size: int, attach_id: str = "") -> str:
    return (
        '<msg><appmsg appid="" sdkver="0">'
        f"<title>{escape(name)}</title><des></des><type>{APP_FILE}</type>"
        f"<appattach><totallen>{size}</totallen><attachid>{escape(attach_id)}</attachid>"
        f"<fileext>{escape(file_ext(name))}</fileext></appattach></appmsg></msg>"
    )


def video_content(size: int, play_length: int) -> str:
    return (
        f"<msg><videomsg length={quoteattr(str(size))}"
        f" playlength={quoteattr(str(play_length))}/></msg>"
    )


def _root(content: str) -> ET.Element | None:
    if not content or len(content) > MAX_XML or "<!" in content:  # no DTDs, no entities
        return None
    try:
        return ET.fromstring(content.strip())
    except ET.ParseError:
        return None


def _int(text: str | None) -> int:
    try:
        value = int((text or "").strip())
    except ValueError:
        return -1
    return value if 0 <= value < 1 << 63 else -1


def _lenient_file(content: str) -> FileInfo | None:
    """itchat and wechat4u paste the file name into ``<title>`` unescaped, so a name
    with ``&`` or ``<`` is not well-formed XML: read such a Content by its tags."""
    found = {
        tag: m.group(1)
        for tag in ("title", "type", "totallen", "attachid")
        if (m := re.search(f"<{tag}>(.*?)</{tag}>", content, re.S)) is not None
    }
    name, size = found.get("title", "").strip(), _int(found.get("totallen"))
    app_type = _int(found.get("type"))
    if not name or size < 0 or app_type < 0:
        return None
    return FileInfo(name, size, found.get("attachid", "").strip(), app_type)


def parse_file(content: str) -> FileInfo | None:
    """The file an app message's XML describes (``<msg><appmsg>`` or a bare
    ``<appmsg>``, as web clients send it; one that is not well-formed is read by its
    tags); None when it has no title, or its size is not a number."""
    if not content or len(content) > MAX_XML:
        return None
    root = _root(content)
    if root is None:
        return _lenient_file(content)
    app = root if root.tag == "appmsg" else root.find("appmsg")
    if app is None:
        return None
    name = (app.findtext("title") or "").strip()
    size = _int(app.findtext("appattach/totallen"))
    app_type = _int(app.findtext("type"))
    if not name or size < 0 or app_type < 0:
        return None
    return FileInfo(name, size, (app.findtext("appattach/attachid") or "").strip(), app_type)


def parse_video(content: str) -> VideoInfo | None:
    root = _root(content)
    node = None if root is None else (root if root.tag == "videomsg" else root.find("videomsg"))
    if node is None:
        return None
    size, play = _int(node.get("length")), _int(node.get("playlength") or "0")
    if size < 0 or play < 0:
        return None
    return VideoInfo(size, play)
