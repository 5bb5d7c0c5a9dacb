"""Errors and MM result codes shared by every layer: wxnet's one error tree.

Every error wxnet raises on purpose derives from :class:`WxnetError`::

    WxnetError
    ├── ProtocolError                 the peer or we broke the wire contract
    │   ├── RemoteProtocolError       bytes from the peer break the protocol: close the link
    │   │   ├── DnsWireError          wxnet.proto.dnswire: DNS bytes that do not parse
    │   │   ├── NewDnsError           wxnet.proto.newgetdns: a newgetdns answer that does not parse
    │   │   └── WebProtocolError      wxnet.proto.web: a Web WeChat form that does not parse
    │   └── LocalProtocolError        we were asked to send something the protocol forbids
    │       └── OutboxStateError      wxnet.client.outbox: an input the message's state forbids
    ├── MMError                       a request failed with an MM result code (``code``)
    ├── ClientError                   wxnet.client.errors: the SDK's own failures
    │   ├── TransportError            no answer: cannot connect, link lost, timeout
    │   │   ├── LinkClosed            the long link closed while a request was waiting
    │   │   └── UploadStalled         wxnet.client.mediaplan: an upload makes no progress
    │   ├── NotLoggedIn               the profile has no session
    │   ├── SendFailed                a message ended in the failed state
    │   ├── ProfileError              wxnet.client.rows: the profile cannot be used
    │   └── DnsFailure                wxnet.client.resolver: a name could not be resolved
    ├── MediaError                    wxnet.sync.media: a media file missing or not what it claims
    ├── NetnsError                    wxnet.netns: a namespace command failed
    ├── BadRequest                    wxnet.server.dispatch: a body that does not decode
    └── QrLoginError                  wxnet.server.web.login: a QR login cannot go on
        ├── QrLoginUnknown            no such (or an expired) uuid
        └── QrLoginRefused            scanned by another account, or already approved

A ``BaseResponse`` with ``ret != 0`` becomes an :class:`MMError` in one place,
:meth:`MMError.from_base` (or :func:`check_base` for a whole response message).

Result codes are WeChat's where known; codes below -1000 are wxnet's own. All are listed
in docs/protocol.md ("Result codes").
"""

from __future__ import annotations

from enum import IntEnum
from typing import Protocol

__all__ = [
    "LocalProtocolError",
    "MMError",
    "MMRet",
    "ProtocolError",
    "RemoteProtocolError",
    "WxnetError",
    "check_base",
]


class MMRet(IntEnum):
    OK = 0
    ERR_SYS = -1
    ERR_ARG = -2
    ERR_PASSWORD = -3
    ERR_NOUSER = -4
    ERR_SESSIONTIMEOUT = -13
    ERR_FREQ_LIMITED = -34
    ERR_BLOCKED = -22
    ERR_NOT_FRIEND = -44
    ERR_AUTH_ANOTHERPLACE = -100
    ERR_NO_RETRY = -101
    ERR_IDC_REDIRECT = -301
    # wxnet's own codes
    ERR_SYNCKEY_INVALID = -1001  # the key cannot be served: newinit (EAS SyncKey 0)
    ERR_TOO_LARGE = -1002  # a request or upload exceeds a configured bound
    ERR_UNKNOWN_CMD = -1003  # no such command or CGI
    ERR_BAD_REQUEST = -1004  # the body did not decode
    ERR_NOT_FOUND = -1005  # no such message, media, chatroom or member
    ERR_REVOKE_EXPIRED = -1006  # revoke after the two-minute window
    ERR_NOT_ALLOWED = -1007  # not yours to change
    ERR_UPLOAD_OFFSET = -1008  # chunk does not fit the declared total
    ERR_BUSY = -1009  # a bound on concurrent work was reached; retry later


class WxnetError(Exception):
    """The root of every error wxnet raises on purpose (see the tree above)."""


class ProtocolError(WxnetError):
    """The wire contract was broken."""


class RemoteProtocolError(ProtocolError):
    """Bytes from the peer cannot be decoded; the connection must be closed."""


class LocalProtocolError(ProtocolError):
    """We were asked to encode something the protocol does not allow."""


class _Base(Protocol):
    """What :meth:`MMError.from_base` reads: a ``BaseResponse`` (``ret``, ``err_msg``)."""

    @property
    def ret(self) -> int: ...

    @property
    def err_msg(self) -> str: ...


class MMError(WxnetError):
    """A request failed with an MM result code."""

    def __init__(self, code: MMRet, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @classmethod
    def from_base(cls, base: _Base, what: str = "request") -> MMError | None:
        """The error a ``BaseResponse`` reports, or None when ``ret`` is 0.

        A code wxnet does not know becomes ``ERR_SYS`` (the raw number stays in the
        message); an empty ``err_msg`` becomes "``what`` refused".
        """
        ret = int(base.ret)
        if ret == 0:
            return None
        code = _BY_VALUE.get(ret)
        message = base.err_msg or f"{what} refused"
        if code is None:
            return cls(MMRet.ERR_SYS, f"{message} (unknown ret {ret})")
        return cls(code, message)

    def __str__(self) -> str:
        return f"{self.message} (ret {int(self.code)} {self.code.name})"


_BY_VALUE: dict[int, MMRet] = {int(c): c for c in MMRet}


def check_base(response: object, what: str = "request") -> None:
    """Raise the :class:`MMError` of ``response.base`` if it reports one.

    ``response`` is any response message (all of them have ``base`` as field 1); one
    without a ``base`` passes.

    Raises:
        MMError: ``response.base.ret`` is not 0.
    """
    base = getattr(response, "base", None)
    if base is None:
        return
    err = MMError.from_base(base, what)
    if err is not None:
        raise err
