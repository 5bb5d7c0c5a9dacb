"""Requests under ``/cgi-bin/mmwebwx-bin/`` that no route serves: a JSON
``BaseResponse`` (``Ret``, ``ErrMsg``), the form every web client parses, with the HTTP
status kept meaningful (404 for an unknown endpoint, 405 with ``Allow`` for a method the
endpoint does not take). A handler's own 4xx (a media download's "no such image") is
left as it is."""

from __future__ import annotations

from aiohttp import web

from wxnet.server.web.common import _CGI, Handler, _base, _json

__all__ = ["RET_UNSERVED", "unserved_as_json"]

#: ``BaseResponse.Ret`` of an endpoint that is not served (WeChat's generic failure).
RET_UNSERVED = -1


@web.middleware
async def unserved_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    exc = request.match_info.http_exception
    if exc is None or not request.path.startswith(_CGI + "/"):
        return await handler(request)
    name = request.path[len(_CGI) + 1 :][:80]
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        resp = _json(_base(RET_UNSERVED, f"{name} takes {allowed}, not {request.method}"), 405)
        resp.headers["Allow"] = allowed
        return resp
    return _json(_base(RET_UNSERVED, f"{name} is not served by this server"), exc.status)
