"""Client errors::

    ClientError
    ├── TransportError        no answer: cannot connect, link lost, timeout
    │   └── LinkClosed        the long link closed while a request was waiting
    ├── NotLoggedIn           the profile has no session
    └── SendFailed            a message ended in the failed state (S23)

Server refusals are :class:`wxnet.proto.errors.MMError` (``code`` = the MM result).
:class:`AmbiguousName` is bad input (a ``ValueError``): a group name that several of
the user's groups have.
Both hang under :class:`wxnet.proto.errors.WxnetError` (the whole tree is drawn there).
"""

from __future__ import annotations

from wxnet.proto.errors import WxnetError

__all__ = [
    "AmbiguousName",
    "ClientError",
    "LinkClosed",
    "NotLoggedIn",
    "SendFailed",
    "TransportError",
]


class ClientError(WxnetError):
    """Base of the client's own errors."""


class TransportError(ClientError):
    """The request got no answer (connect failed, link lost, timeout)."""


class LinkClosed(TransportError):
    """The long link closed."""


class NotLoggedIn(ClientError):
    """No session in this profile: run ``wxnet login`` first."""


class SendFailed(ClientError):
    """The message was marked failed; ``wxnet resend ID`` sends it again."""

    def __init__(self, client_msg_id: str, reason: str) -> None:
        super().__init__(f"message {client_msg_id} failed: {reason}")
        self.client_msg_id = client_msg_id
        self.reason = reason


class AmbiguousName(ValueError):
    """A group name that more than one of the user's groups has; ``ids`` are theirs."""

    def __init__(self, name: str, ids: list[str]) -> None:
        super().__init__(
            f"{len(ids)} of your groups are named {name!r}: {', '.join(ids)}; use the group id"
        )
        self.name = name
        self.ids = ids
