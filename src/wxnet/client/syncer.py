"""Sync (S19): the SDK's consumer of the shared sans-IO sync loop
(:class:`wxnet.proto.syncdriver.SyncDriver`, which owns the rules: newinit or newsync,
ContinueFlag, -1001 leading to newinit, syncdone, the page bound).

This module adds what is the client's own: each page is applied to the profile in one
transaction together with its SyncKey (an item already applied is skipped, so every
item counts once), the new items are published as events, and kicks (a notify, a
selector, a poll hit) that arrive during a sync are coalesced into one more round.

A push with data (cmd 122) on the long link is applied the same way when it follows the
profile's key, with no request at all; one that arrives during a sync is held and
applied when the sync ends, against the key it reached; one that leaves a gap is a kick
(the rule is :class:`wxnet.proto.syncdriver.PushInbox`'s). The key a push moved is
committed in one batched ``syncdone`` :data:`COMMIT_DELAY` seconds later, unless a sync
(whose newsync presents the key, S19) comes first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from google.protobuf.message import DecodeError, Message

from wxnet.client.errors import TransportError
from wxnet.client.store import AppliedItem, ProfileStore
from wxnet.proto import commands as C
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.enums import Selector
from wxnet.proto.errors import MMError, MMRet, RemoteProtocolError
from wxnet.proto.syncdriver import (
    MAX_HELD_BYTES,
    Gap,
    Held,
    KeyReset,
    Page,
    PushInbox,
    SyncDriver,
    SyncEvent,
)

__all__ = ["SELECTOR_ALL", "Requester", "Syncer"]

SELECTOR_ALL = Selector.ALL
#: Back-off after a failed background sync: 0.2 s doubling, at most this (seconds).
MAX_RETRY_DELAY = 10.0
#: Seconds after a push before its key is committed with syncdone (pushes in between
#: share the one syncdone).
COMMIT_DELAY = 1.0
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
        hold_bytes: int = MAX_HELD_BYTES,
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
        self._commit_wanted = False
        self._commit_timer: asyncio.TimerHandle | None = None
        #: pushes taken at once / held during a sync (and taken when it ended) / that
        #: left a gap (a sync) / times the held ones passed ``hold_bytes`` (a sync)
        self.pushes = {"applied": 0, "held": 0, "gap": 0, "dropped": 0}
        self._inbox = PushInbox(hold_bytes)
        #: set by a login that kept the profile's key: the next round first applies a
        #: newinit snapshot's items without taking its key. What the account sent from
        #: another device while this one had no session is only there (the sent log,
        #: S17); the rest comes by newsync from the key, as always.
        self.catch_up = False

    @property
    def hold_bytes(self) -> int:
        """The bound on pushes held during a sync (``ClientConfig.push_hold_bytes``)."""
        return self._inbox.max_bytes

    @hold_bytes.setter
    def hold_bytes(self, value: int) -> None:
        self._inbox.max_bytes = max(0, value)

    def kick(self) -> None:
        """Something is new on the server: sync soon (once, however many kicks)."""
        self._wanted = True
        self._kick.set()

    @property
    def busy(self) -> bool:
        """A sync runs or is due."""
        return self._lock.locked() or self._kick.is_set()

    def push(self, body: bytes) -> None:
        """A push with data (cmd 122) from the long link: apply it, hold it (a sync is
        under way), or sync instead (a gap)."""
        if self.closing:
            self.kick()
            return
        resp = pb.NewSyncResponse()
        try:
            resp.ParseFromString(body)
        except DecodeError:
            self.note_error("sync: an undecodable push; syncing instead")
            self.kick()
            return
        got = self._inbox.push(self.store.synckey(), resp, len(body))
        if isinstance(got, Held):
            self.pushes["held"] += 1
        else:
            self._took(got)

    def _took(self, got: Page | Gap) -> list[AppliedItem]:
        if isinstance(got, Gap):
            self.pushes["gap"] += 1
            self.kick()
            return []
        self.pushes["applied"] += 1
        if not got.items:
            return []
        fresh = self._apply(got.items, got.key)
        if self._commit_timer is None:
            loop = asyncio.get_running_loop()
            self._commit_timer = loop.call_later(COMMIT_DELAY, self._commit_due)
        return fresh

    def _commit_due(self) -> None:
        self._commit_timer = None
        self._commit_wanted = True
        self._kick.set()

    async def _commit(self) -> None:
        """syncdone for the key pushes moved (S19: commit on the next key)."""
        self._commit_wanted = False
        key = self.store.synckey()
        cgi = C.BY_NAME["syncdone"]
        try:
            await self.links.request(cgi.name, pb.SyncDoneRequest(key_buf=key), cgi.response)
        except MMError as exc:
            if exc.code != MMRet.ERR_SYNCKEY_INVALID:
                raise
            self.kick()  # the sync that follows starts over (newinit)

    async def run(self) -> None:
        failures = 0
        while not self.closing:
            await self._kick.wait()
            self._kick.clear()
            try:
                if self._commit_wanted and not self._wanted:
                    await self._commit()
                else:
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
        self._commit_wanted = False  # its newsync presents (commits) the key
        fresh: list[AppliedItem] = []
        inbox = self._inbox
        async with self._lock:
            try:
                while self._wanted:
                    self._wanted = False
                    if not self._commit_wanted:
                        self._kick.clear()  # this round serves every kick so far
                    inbox.begin()  # pushes from now on wait for the round's end
                    fresh += await self._round()
                    if self._wanted:
                        continue  # a kick, or the page bound cut the round: hold on
                    for got in inbox.end(self.store.synckey()):
                        fresh += self._took(got)  # a gap: self._wanted, one more round
            except BaseException:
                if inbox.abort():
                    self.kick()  # what it held comes with the next sync
                raise
        self.pushes["dropped"] = inbox.dropped
        return fresh

    async def _round(self) -> list[AppliedItem]:
        """One run of the shared :class:`~wxnet.proto.syncdriver.SyncDriver` from the
        profile's key, over whichever link is up."""
        fresh: list[AppliedItem] = []
        if self.catch_up and self.store.synckey():
            snap = await self.links.request("newinit", pb.NewInitRequest(), pb.NewInitResponse)
            fresh += self._apply(snap.cmd_list, None)
        self.catch_up = False
        driver = SyncDriver(self.store.synckey())
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
                self._inbox.reset()
            elif isinstance(event, Page):
                fresh += self._apply(event.items, event.key)
        if driver.more:
            self._wanted = True  # the page bound cut the round: another one follows
        return fresh

    def _apply(self, items: Iterable[pb.CmdItem], key: bytes | None) -> list[AppliedItem]:
        got = self.store.apply_batch(self.me(), items, key)
        self.publish(got)
        return got
