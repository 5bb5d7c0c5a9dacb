"""Shared pieces of the web API handlers: errors, reply forms, query and body helpers."""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import StreamReader, web
from google.protobuf.message import Message

from wxnet.proto import web as wp

T = TypeVar("T", bound=Message)
R = TypeVar("R", bound=Message)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CGI = "/cgi-bin/mmwebwx-bin"
_SYNC_PAGES = 8  # newsync pages folded into one webwxsync reply (clients ignore ContinueFlag)
_INIT_PAGES = 64  # newinit pages of one webwxinit snapshot


class WebError(Exception):
    """Answer with ``BaseResponse{Ret: ret}``."""

    def __init__(self, ret: int, message: str) -> None:
        super().__init__(message)
        self.ret = ret
        self.message = message


class SessionGone(WebError):
    def __init__(self, message: str = "session is not logged in") -> None:
        super().__init__(wp.RET_LOGIN_ELSEWHERE, message)


def _json(obj: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(obj, ensure_ascii=False, separators=(",", ":")),
        content_type="application/json",
        charset="utf-8",
    )


def _js(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/javascript", charset="utf-8")


def _base(ret: int = 0, msg: str = "") -> dict[str, Any]:
    return {"BaseResponse": {"Ret": ret, "ErrMsg": msg}}


def _q(request: web.Request, *names: str) -> str:
    """The first query parameter of ``names``, matched case-insensitively."""
    wanted = {n.lower() for n in names}
    for k, v in request.query.items():
        if k.lower() in wanted:
            return v
    return ""


def _client_msg_id(msg: dict[str, Any]) -> str:
    for k in ("ClientMsgId", "LocalID"):
        v = msg.get(k)
        if isinstance(v, int | str) and not isinstance(v, bool) and str(v):
            text = str(v)
            if len(text) > 64:
                raise WebError(-1, "ClientMsgId too long")
            return text
    return secrets.token_hex(8)


def _sniff_image(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"GIF8"):
        return "image/gif"
    return "image/jpeg"


async def _read_all(stream: StreamReader, limit: int) -> bytes:
    """Everything until the end of the body; OverflowError past ``limit`` bytes."""
    buf = bytearray()
    while chunk := await stream.read(64 * 1024):
        buf += chunk
        if len(buf) > limit:
            raise OverflowError(limit)
    return bytes(buf)
