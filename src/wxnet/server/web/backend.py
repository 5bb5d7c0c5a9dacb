"""What the web API needs from the messaging server: the mobile CGIs, in process.

A web session is a device of its account (docs/web.md, "Security"): it holds a
mobile-protocol session and does everything through the same CGIs a phone uses (newinit,
newsync, newsynccheck, newsendmsg, uploadmsgimg, ...), so one sync engine and one dedup
serve both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from google.protobuf.message import Message

from wxnet.proto import wxnet_pb2 as pb

__all__ = ["Backend", "DeviceSession"]


@dataclass(frozen=True, slots=True)
class DeviceSession:
    session_key: str
    uin: int
    user_name: str
    nick_name: str


class Backend(Protocol):
    async def call(self, name: str, request: Message) -> Message:
        """Run CGI ``name`` (``request.base`` already carries session_key and uin) and
        return its response message. MM errors come back in ``response.base.ret``."""
        ...

    async def open_device(self, uin: int, device_name: str) -> DeviceSession | None:
        """Create a new session (a device) for account ``uin`` without a password:
        the caller has checked that a logged-in device of the account approved it.
        None if the account does not exist."""
        ...

    async def committed_key(self, session_key: str, uin: int) -> bytes | None:
        """The key the session's device last committed (newsync presenting it, or
        syncdone), from the store; None if it never committed one.

        Raises:
            MMError: ERR_SESSIONTIMEOUT (the session is gone).
        """
        ...

    async def prompt_login(self, uin: int, prompt: pb.WebLoginPrompt) -> None:
        """Tell every device of account ``uin`` that a web client asks to log in again
        (a push login): a sync item in its message log."""
        ...

    async def media_file(self, session_key: str, uin: int, msg_id: int, kind: str) -> Path:
        """The file of message ``msg_id``'s media (``kind`` img, thumb or voice), for
        the session to stream from disk, after the same checks as the download CGIs.

        Raises:
            MMError: ERR_SESSIONTIMEOUT (the session is gone) or ERR_NOT_FOUND (no such
                media, or not the session's to see).
        """
        ...

    async def message_log(
        self, session_key: str, uin: int, before: int, limit: int
    ) -> list[tuple[int, bytes]]:
        """Up to ``limit`` items of the account's message log and sent log (``(position,
        CmdItem bytes)``: ``Store.message_history``) below ``before`` (0: from the
        newest), newest first: what the
        ``webwxhistory`` page reads (:mod:`wxnet.server.web.history`).

        Raises:
            MMError: ERR_SESSIONTIMEOUT (the session is gone).
        """
        ...
