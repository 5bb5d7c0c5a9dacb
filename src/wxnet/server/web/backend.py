"""What the web API needs from the messaging server: the mobile CGIs, in process.

A web session is a device of its account (DESIGN 8): it holds a mobile-protocol session
and does everything through the same CGIs a phone uses (newinit, newsync, newsynccheck,
newsendmsg, uploadmsgimg, ...), so one sync engine and one dedup serve both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from google.protobuf.message import Message

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
