"""Sync (S19): the SDK's consumer of the shared sans-IO sync loop
(:class:`wxnet.proto.syncdriver.SyncDriver`, which owns the rules: newinit or newsync,
ContinueFlag, -1001 leading to newinit, syncdone, the page bound).

This module adds what is the client's own: each page is applied to the profile in one
transaction together with its SyncKey (an item already applied is skipped, so every
item counts once), the new items are published as events, and kicks (a notify, a
selector, a poll hit) that arrive during a sync are coalesced into one more round.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from google.protobuf.message import Message

from wxnet.client.errors import TransportError
from wxnet.client.store import AppliedItem, ProfileStore
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.enums import Selector
from wxnet.proto.errors import MMError, RemoteProtocolError
from wxnet.proto.syncdriver import KeyReset, Page, SyncDriver, SyncEvent

__all__ = ["SELECTOR_ALL", "Requester", "Syncer"]

SELECTOR_ALL = Selector.ALL
#: Back-off after a failed background sync: 0.2 s doubling, at most this (seconds).
MAX_RETRY_DELAY = 10.0
R = TypeVar("R", bound=Message)


class Requester(Protocol):
    async def request(
        self,
        name: str,
        req: Message,
        resp_type: type[R],
        *,
        via: str = ...,
        timeout: float | None = ...,
    ) -> R: ...


class Syncer:
    """Runs sync rounds for one profile; :meth:`run` is the background task."""

    def __init__(
        self,
        links: Requester,
        store: ProfileStore,
        me: Callable[[], str],
        publish: Callable[[list[AppliedItem]], None],
        note_error: Callable[[str], None],
    ) -> None:
        self.links = links
        self.store = store
        self.me = me
        self.publish = publish
        self.note_error = note_error
        self.closing = False
        self._lock = asyncio.Lock()
        self._wanted = False
        self._kick = asyncio.Event()

    def kick(self) -> None:
        """Something is new on the server: sync soon (once, however many kicks)."""
        self._wanted = True
        self._kick.set()

    async def run(self) -> None:
        failures = 0
        while not self.closing:
            await self._kick.wait()
            self._kick.clear()
            try:
                await self.sync()
                failures = 0
            except (TransportError, MMError, RemoteProtocolError) as exc:
                self.note_error(f"sync: {exc}")
                failures += 1
                await asyncio.sleep(min(MAX_RETRY_DELAY, 0.2 * 2**failures))
                self.kick()

    async def sync(self) -> list[AppliedItem]:
        """Fetch everything new; returns the items new to this profile."""
        self._wanted = True
        fresh: list[AppliedItem] = []
        async with self._lock:
            while self._wanted:
                self._wanted = False
                fresh += await self._round()
        return fresh

    async def _round(self) -> list[AppliedItem]:
        """One run of the shared :class:`~wxnet.proto.syncdriver.SyncDriver` from the
        profile's key, over whichever link is up."""
        driver = SyncDriver(self.store.synckey())
        fresh: list[AppliedItem] = []
        while (call := driver.next_request()) is not None:
            event: SyncEvent
            try:
                resp = await self.links.request(call.cgi.name, call.request, call.cgi.response)
            except MMError as exc:
                event = driver.receive_error(exc)  # KeyReset, or raises
            else:
                event = driver.receive(resp)
            if isinstance(event, KeyReset):
                self.store.reset_sync()  # -1001: start over with newinit
            elif isinstance(event, Page):
                fresh += self._apply(event.items, event.key)
        if driver.more:
            self._wanted = True  # the page bound cut the round: another one follows
        return fresh

    def _apply(self, items: Iterable[pb.CmdItem], key: bytes) -> list[AppliedItem]:
        got = self.store.apply_batch(self.me(), items, key)
        self.publish(got)
        return got
