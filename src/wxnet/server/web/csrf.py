"""Cross-site request checks for the web API's POST endpoints (pure: headers in, a
reason out).

A browser attaches ``Origin`` to every cross-origin POST (Fetch standard: to every request
whose method is neither GET nor HEAD), and a page cannot leave it out, nor send a JSON
``Content-Type`` cross-origin without a CORS preflight, which this server never approves.
So a POST is refused when:

- it carries an ``Origin`` that is not this server's (or is ``null``: sandboxed frames,
  ``data:`` pages), or
- it carries no ``Origin`` but a ``Referer`` from another origin, and a content type a
  cross-site ``<form>`` can send (``text/plain``, ``application/x-www-form-urlencoded``,
  ``multipart/form-data``), or
- it carries neither and such a form content type that the endpoint does not expect
  (``tolerated``: the multipart upload, wechat4u's empty urlencoded logout): no client
  posts a JSON endpoint as a form, and a browser that omits Origin is a very old one.

What it lets through: our page (same origin), and the real clients (docs/web.md,
"Pointing the real clients at wxnet"), which send no ``Origin``: itchat posts JSON
without any Content-Type, wechat4u with ``application/json``; both upload with
``multipart/form-data``. itchat-uos sends the ``Referer`` of the real service
(``https://wx.qq.com/...``) on some requests, so a foreign Referer only counts against a
form content type. The session cookies are also ``SameSite=Strict``, so a cross-site
request carries none.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["FORM_TYPES", "check", "same_origin"]

#: Content types a cross-site HTML form (or a no-cors fetch) can send (CORS-safelisted).
FORM_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def same_origin(url: str, host: str) -> bool:
    """Whether ``url`` (an Origin or a Referer) names ``host`` (the Host header)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


def check(
    method: str,
    host: str,
    origin: str | None,
    referer: str | None,
    content_type: str | None,
    tolerated: frozenset[str] = frozenset(),
) -> str | None:
    """Why this request must be refused as cross-site, or None if it may proceed."""
    if method in ("GET", "HEAD", "OPTIONS"):
        return None
    if origin is not None:
        if same_origin(origin, host):
            return None
        return f"Origin {origin[:100]!r} is not this server"
    media = _media_type(content_type)
    is_form = media in FORM_TYPES
    if referer is not None and same_origin(referer, host):
        return None
    if referer is not None and is_form:
        return "a form posted from another site"
    if is_form and media not in tolerated:
        return f"{media} without an Origin (send application/json)"
    return None
