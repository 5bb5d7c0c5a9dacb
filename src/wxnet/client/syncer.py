"""Sync (S19): fetch what is new, apply each batch to the profile with its key, commit.

``newsync`` until ContinueFlag is clear, each batch applied in one profile transaction
together with its SyncKey (an item already applied is skipped, so every item counts
once), then ``syncdone`` commits; a key the server cannot serve (-1001) starts over
with ``newinit``. Kicks (a notify, a selector, a poll hit) that arrive during a sync
are coalesced into one more round.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from google.protobuf.message import Message

from wxnet.client.errors import TransportError
from wxnet.client.store import AppliedItem, ProfileStore
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMError, MMRet

__all__ = ["SELECTOR_ALL", "Requester", "Syncer"]

SELECTOR_ALL = 0x1 | 0x2 | 0x4 | 0x40
#: Pages of one sync round before it is cut (a server that never clears ContinueFlag).
MAX_PAGES = 10_000
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
            except (TransportError, MMError) as exc:
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
        key = self.store.synckey()
        if not key:
            return await self._init()
        fresh: list[AppliedItem] = []
        for _ in range(MAX_PAGES):
            try:
                resp = await self.links.request(
                    "newsync",
                    pb.NewSyncRequest(key_buf=key, selector=SELECTOR_ALL, scene=1),
                    pb.NewSyncResponse,
                )
            except MMError as exc:
                if exc.code == MMRet.ERR_SYNCKEY_INVALID:
                    self.store.reset_sync()
                    return fresh + await self._init()
                raise
            key = bytes(resp.key_buf) or key
            fresh += self._apply(resp.cmd_list, key)
            if not resp.continue_flag:
                break
        await self._commit(key)
        return fresh

    async def _init(self) -> list[AppliedItem]:
        key = b""
        fresh: list[AppliedItem] = []
        for _ in range(MAX_PAGES):
            resp = await self.links.request(
                "newinit", pb.NewInitRequest(current_synckey=key), pb.NewInitResponse
            )
            key = bytes(resp.current_synckey)
            fresh += self._apply(resp.cmd_list, key)
            if not resp.continue_flag:
                break
        await self._commit(key)
        return fresh

    def _apply(self, items: Iterable[pb.CmdItem], key: bytes) -> list[AppliedItem]:
        got = self.store.apply_batch(self.me(), items, key)
        self.publish(got)
        return got

    async def _commit(self, key: bytes) -> None:
        await self.links.request("syncdone", pb.SyncDoneRequest(key_buf=key), pb.SyncDoneResponse)
