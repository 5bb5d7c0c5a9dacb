"""The sync loop as a sans-IO driver: responses in, the next request and pages out.

Every client of the sync model runs the same loop (``docs/protocol.md``, "Sync"):

* start from a key: an empty one means ``newinit`` (a snapshot), any other ``newsync``;
* while a reply's ``continue_flag`` is set, ask again with the new key;
* ``-1001 ERR_SYNCKEY_INVALID`` on newsync (or syncdone): the key cannot be served, so
  drop local sync state (:class:`KeyReset`) and start over with ``newinit``, once;
* at the end, commit the final key with ``syncdone`` (only when it moved: presenting a
  key in newsync already commits it);
* stop after ``max_pages`` pages even when the server has more (:attr:`SyncDriver.more`
  says so; run another driver from :attr:`SyncDriver.key` to go on).

:class:`SyncDriver` keeps that loop and no I/O. Its state machine, as a table::

    INIT   --page, continue-->  INIT        SYNC  --page, continue-->  SYNC
    INIT   --last page------->  COMMIT      SYNC  --last page------->  COMMIT | DONE
    SYNC   --key invalid----->  INIT        COMMIT --key invalid---->  INIT
    COMMIT --reply----------->  DONE        (a second key invalid raises; DONE is final)

Use::

    driver = SyncDriver(key, base=base)
    while (call := driver.next_request()) is not None:
        try:
            response = await transport(call.cgi, call.request)    # any link
        except MMError as exc:
            event = driver.receive_error(exc)                     # KeyReset, or raises
        else:
            event = driver.receive(response)                      # Page | Committed
        ...apply event...

or ``async for event in drive(driver, call): ...`` with ``call(SyncCall) -> response``.

Push with data (cmd 122, ``docs/protocol.md`` "Push with data") is the other way in:
:func:`apply_push` takes the key a client holds and a pushed ``NewSyncResponse`` and
returns the :class:`Page` of items that follow that key (store it as a pulled page) or a
:class:`Gap` (an item is missing between the key and the push: pull with newsync). A
client applies pushes only while no pull of its own is under way (one that arrives
during a pull is a notify: sync once more), so the key moves along one path at a time
and every item counts once, in log order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from google.protobuf.message import Message

from wxnet.proto import commands as C
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.enums import Selector
from wxnet.proto.errors import LocalProtocolError, MMError, MMRet, RemoteProtocolError
from wxnet.proto.synckey import SyncKey

__all__ = [
    "MAX_PAGES",
    "Committed",
    "Gap",
    "KeyReset",
    "Page",
    "SyncCall",
    "SyncDriver",
    "SyncEvent",
    "SyncState",
    "apply_push",
    "drive",
]

#: Default bound on the pages one driver fetches (newinit + newsync replies). A server
#: window is ~100 items, so this is ~100,000 items; a caller with a tighter budget per
#: reply (a web poll) passes its own ``max_pages``.
MAX_PAGES = 1000

_INIT = C.BY_NAME["newinit"]
_SYNC = C.BY_NAME["newsync"]
_DONE = C.BY_NAME["syncdone"]


class SyncState(Enum):
    INIT = "init"  # next request: newinit
    SYNC = "sync"  # next request: newsync
    COMMIT = "commit"  # next request: syncdone
    DONE = "done"  # nothing more to ask


@dataclass(frozen=True, slots=True)
class SyncCall:
    """A request to send: ``request`` is a ``cgi.request`` message, answered by a
    ``cgi.response`` message."""

    cgi: C.CGI
    request: Message


@dataclass(frozen=True, slots=True)
class Page:
    """One reply's items, in order. ``key`` is the key after them (store it with the
    items, atomically); ``init`` is True for a newinit snapshot page; ``response`` is
    the whole reply (a newinit's ``user``, say)."""

    items: Sequence[pb.CmdItem]
    key: bytes
    init: bool
    response: Message


@dataclass(frozen=True, slots=True)
class KeyReset:
    """The key was refused (-1001): drop local sync state; the driver goes on with
    newinit from an empty key."""

    reason: str


@dataclass(frozen=True, slots=True)
class Committed:
    """syncdone accepted ``key``."""

    key: bytes


SyncEvent = Page | KeyReset | Committed


@dataclass(frozen=True, slots=True)
class Gap:
    """A pushed item of log ``key`` has seq ``got`` but the client holds ``have``: items
    between are missing (a push the server left out, or a key from before a reset).
    Pull with newsync from the key held."""

    key: int
    have: int
    got: int


def apply_push(key: bytes, push: pb.NewSyncResponse) -> Page | Gap:
    """The items of ``push`` that follow ``key``, in order, and the key after them.

    An item at or below the key's value for its log is one the client already has (a
    pull overtook the push) and is left out; one at the value + 1 is taken and moves the
    key; any other is a :class:`Gap`, and then nothing of the push is taken. An empty or
    undecodable key is a gap too (such a client starts with newinit).
    """
    try:
        held = SyncKey.from_bytes(key) if key else SyncKey()
    except RemoteProtocolError:
        held = SyncKey()
    if not held:
        first = push.cmd_list[0] if push.cmd_list else None
        return Gap(first.key if first else 0, 0, first.seq if first else 0)
    vec = held.as_dict()
    fresh: list[pb.CmdItem] = []
    for item in push.cmd_list:
        have = vec.get(item.key)
        if have is not None and item.seq <= have:
            continue
        if have is None or item.seq != have + 1:
            return Gap(item.key, have or 0, item.seq)
        vec[item.key] = item.seq
        fresh.append(item)
    new_key = SyncKey.of(vec).to_bytes() if fresh else bytes(key)
    return Page(fresh, new_key, False, push)


class SyncDriver:
    """One run of the sync loop (see the module docstring).

    Args:
        key: the key to start from (``b""``: none, begin with newinit).
        base: copied into every request (session key, uin, device id); None leaves
            ``base`` for the transport to fill.
        selector: newsync selector bits.
        scene: newsync scene (1: a notify or a poll woke us).
        max_pages: stop after this many pages (:attr:`more` tells if the server had more).
        commit: send syncdone for the final key when it moved.
        snapshot: an empty ``key`` starts with newinit (the snapshot); False starts with
            newsync from the empty key instead (wxnet serves the whole log from it).
    """

    __slots__ = (
        "_awaiting",
        "_base",
        "_start",
        "commit",
        "key",
        "max_pages",
        "more",
        "pages",
        "resets",
        "scene",
        "selector",
        "state",
    )

    def __init__(
        self,
        key: bytes = b"",
        *,
        base: pb.BaseRequest | None = None,
        selector: int = Selector.ALL,
        scene: int = 1,
        max_pages: int = MAX_PAGES,
        commit: bool = True,
        snapshot: bool = True,
    ) -> None:
        if max_pages < 1:
            raise ValueError("max_pages must be at least 1")
        self.key = bytes(key)
        self._start = self.key
        self._base = base
        self.selector = int(selector)
        self.scene = scene
        self.max_pages = max_pages
        self.commit = commit
        self.state = SyncState.SYNC if self.key or not snapshot else SyncState.INIT
        self.pages = 0
        self.resets = 0
        self.more = False
        self._awaiting: C.CGI | None = None

    @property
    def done(self) -> bool:
        return self.state is SyncState.DONE

    def next_request(self) -> SyncCall | None:
        """The request to send now, or None when the run is over.

        Raises:
            LocalProtocolError: the previous request has not been answered yet.
        """
        if self._awaiting is not None:
            raise LocalProtocolError(f"{self._awaiting.name} is still waiting for its reply")
        state = self.state
        if state is SyncState.DONE:
            return None
        req: Message
        if state is SyncState.INIT:
            cgi, req = _INIT, pb.NewInitRequest(current_synckey=self.key)
        elif state is SyncState.SYNC:
            cgi = _SYNC
            req = pb.NewSyncRequest(key_buf=self.key, selector=self.selector, scene=self.scene)
        else:
            cgi, req = _DONE, pb.SyncDoneRequest(key_buf=self.key)
        if self._base is not None:
            req.base.CopyFrom(self._base)
        self._awaiting = cgi
        return SyncCall(cgi, req)

    def receive(self, response: Message) -> SyncEvent:
        """Take the reply to the last :meth:`next_request`.

        A reply whose ``base.ret`` is not 0 is handled as :meth:`receive_error` would.

        Raises:
            MMError: the server refused, other than with a key it cannot serve (or a
                second time with one).
            RemoteProtocolError: ``continue_flag`` set without the key moving (the
                server would send the same page forever).
            LocalProtocolError: no request waits, or ``response`` is of the wrong type.
        """
        cgi = self._expect(response)
        err = MMError.from_base(response.base, cgi.name)  # type: ignore[attr-defined]
        if err is not None:
            self._awaiting = cgi  # receive_error checks and clears it
            return self.receive_error(err)
        if cgi is _DONE:
            self.state = SyncState.DONE
            return Committed(self.key)
        init = cgi is _INIT
        if init:
            assert isinstance(response, pb.NewInitResponse)
            new_key = bytes(response.current_synckey)
            cont = bool(response.continue_flag)
        else:
            assert isinstance(response, pb.NewSyncResponse)
            new_key = bytes(response.key_buf) or self.key
            cont = bool(response.continue_flag)
        if cont and new_key == self.key:
            self.state = SyncState.DONE
            raise RemoteProtocolError(f"{cgi.name}: continue_flag set but the key did not move")
        self.key = new_key
        self.pages += 1
        if cont and self.pages < self.max_pages:
            self.state = SyncState.INIT if init else SyncState.SYNC
        else:
            self.more = cont
            moved = self.key != self._start or self.resets > 0
            self.state = SyncState.COMMIT if self.commit and moved else SyncState.DONE
        return Page(response.cmd_list, self.key, init, response)

    def receive_error(self, error: MMError) -> KeyReset:
        """Take an MM error that answered the last request.

        Returns:
            KeyReset: the key cannot be served; the driver continues with newinit.

        Raises:
            MMError: ``error`` itself, for any other code, for a refused newinit, or for
                a second refused key in one run.
            LocalProtocolError: no request waits for a reply.
        """
        cgi = self._awaiting
        if cgi is None:
            raise LocalProtocolError("no sync request waits for a reply")
        self._awaiting = None
        if error.code != MMRet.ERR_SYNCKEY_INVALID or cgi is _INIT or self.resets:
            self.state = SyncState.DONE
            raise error
        self.resets += 1
        self.key = b""
        self.state = SyncState.INIT
        return KeyReset(str(error))

    def _expect(self, response: Message) -> C.CGI:
        cgi = self._awaiting
        if cgi is None:
            raise LocalProtocolError("no sync request waits for a reply")
        if not isinstance(response, cgi.response):
            raise LocalProtocolError(
                f"{cgi.name} is answered by {cgi.response.__name__}, not {type(response).__name__}"
            )
        self._awaiting = None
        return cgi


async def drive(
    driver: SyncDriver, call: Callable[[SyncCall], Awaitable[Message]]
) -> AsyncIterator[SyncEvent]:
    """Run ``driver`` to the end over ``call`` (send one request, return its decoded
    reply; it may raise :class:`MMError` for a refusal), yielding each event."""
    while (c := driver.next_request()) is not None:
        try:
            response = await call(c)
        except MMError as exc:
            yield driver.receive_error(exc)
            continue
        yield driver.receive(response)
