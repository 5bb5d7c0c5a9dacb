"""``webwxpushloginurl``: log in again without a QR code (docs/web.md, "Push login").

A web client that was logged in as an account (itchat after a failed hot reload) asks
with ``?uin=`` and its cookies; if the browser's ``webwx_auth_ticket`` is one this
account logged in with (and that login is not past its expiry), a new login is made
that only this account may approve, and every device of the account gets a
``WebLoginPrompt`` sync item naming who asks (user agent, address). The phone approves
it with ``scanqrcode`` (``wxnet scan --push-approve``); the client's login poll goes on
as after a QR scan. Rate-limited per address (as ``/jslogin``) and per account.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from wxnet.proto import web as wp
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMError
from wxnet.server.web.common import _json
from wxnet.server.web.handlers.login import LoginHandlers
from wxnet.server.web.limits import address_key

__all__ = ["PushLoginHandlers"]

log = logging.getLogger(__name__)


def _answer(ret: int, msg: str, uuid: str = "", status: int = 200) -> web.Response:
    """The reply itchat reads (``ret`` "0" and ``uuid``), with a BaseResponse as well."""
    out: dict[str, Any] = {"ret": str(ret), "msg": msg, "uuid": uuid}
    out["BaseResponse"] = {"Ret": ret, "ErrMsg": "" if ret == 0 else msg}
    return _json(out, status)


class PushLoginHandlers(LoginHandlers):
    async def pushloginurl(self, request: web.Request) -> web.StreamResponse:
        now = self.clock()
        addr = address_key(request.remote or "")
        uin = wp.parse_uin(request.query.get("uin"))
        if uin is None:
            return _answer(wp.RET_SESSION_REJECTED, "uin must be the account's number")
        if await self.jslogin_limit.take(addr, now):
            self.count("jslogin_rate")
            return _answer(-1, "too many logins from this address; retry later", status=429)
        ticket = request.cookies.get("webwx_auth_ticket", "")
        try:
            if await self.sessions.browser_uin(ticket, now) != uin:
                return _answer(
                    wp.RET_SESSION_REJECTED, "this browser was not logged in as that account"
                )
            if await self.push_limit.take(str(uin), now):
                self.count("push_login_rate")
                return _answer(-1, "too many push logins for this account; scan a QR code")
            q = await self._new_login(request, addr, now, push_uin=uin)
        except MMError as exc:  # the store cannot be reached
            return _answer(-1, exc.message)
        if q is None:
            return _answer(-1, "too many pending logins; retry later")
        prompt = pb.WebLoginPrompt(
            uuid=q.uuid, user_agent=q.user_agent, address=q.address, expires=int(q.expires)
        )
        try:
            await self.backend.prompt_login(uin, prompt)
        except Exception:  # the client falls back to a QR code
            log.exception("push login prompt for uin=%s", uin)
            return _answer(-1, "the phone could not be told; scan a QR code")
        return _answer(0, "all ok", q.uuid)
