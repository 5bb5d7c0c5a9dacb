"""The web page and its assets."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from wxnet.server.web.base import WebBase


class PageHandlers(WebBase):
    # -- the page ------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.StreamResponse:
        resp = web.Response(body=_static("index.html"), content_type="text/html", charset="utf-8")
        resp.headers.update(_PAGE_HEADERS)
        return resp

    async def asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        types = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}
        ext = name.rsplit(".", 1)[-1]
        if ext not in types or not name.replace(".", "").replace("-", "").isalnum():
            raise web.HTTPNotFound()
        try:
            data = _static(name)
        except FileNotFoundError:
            raise web.HTTPNotFound() from None
        resp = web.Response(body=data, content_type=types[ext], charset="utf-8")
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp


#: The page's own files only; no frames, no plugins, no inline script (CSRF, DESIGN 8).
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _static(name: str) -> bytes:
    return resources.files("wxnet.server.web").joinpath("static", name).read_bytes()
