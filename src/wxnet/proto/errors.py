"""Errors and MM result codes shared by every layer.

Exception tree::

    ProtocolError                 the peer or we broke the wire contract
    ├── RemoteProtocolError       bytes from the peer cannot be decoded
    └── LocalProtocolError        we were asked to send something invalid
    MMError                       a request failed with an MM result code (``code``)

Result codes follow research/mobile-protocol.md 2.9 where WeChat's are known; codes
below -1000 are wxnet's own and are documented in docs/protocol.md.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "LocalProtocolError",
    "MMError",
    "MMRet",
    "ProtocolError",
    "RemoteProtocolError",
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


class ProtocolError(Exception):
    """The wire contract was broken."""


class RemoteProtocolError(ProtocolError):
    """Bytes from the peer cannot be decoded; the connection must be closed."""


class LocalProtocolError(ProtocolError):
    """We were asked to encode something the protocol does not allow."""


class MMError(Exception):
    """A request failed with an MM result code."""

    def __init__(self, code: MMRet, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} (ret {int(self.code)} {self.code.name})"
