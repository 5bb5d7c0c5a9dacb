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
:class:`Gap` (an item is missing between the key and the push: pull with newsync).
:class:`PushInbox` is the rule for a push that arrives while the client's own pull is
under way (every client uses it): it is held, and applied when the pull ends against the
key the pull reached, so the key moves along one path at a time and every item counts
once, in log order::

    inbox = PushInbox()
    # a push: inbox.push(key, resp) -> Page (store it) | Gap (pull) | Held (wait)
    inbox.begin()                       # a pull starts
    ...run the SyncDriver; on KeyReset: inbox.reset()...
    for ev in inbox.end(driver.key):    # the pull reached the head
        ...Page: store it; Gap: pull again (inbox.begin() first)...
    # a pull that failed: inbox.abort() -> True: pull again
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
    "MAX_HELD_BYTES",
    "MAX_PAGES",
    "Committed",
    "Gap",
    "Held",
    "KeyReset",
    "Page",
    "PushInbox",
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
#: Default bound on the pushes :class:`PushInbox` holds during one pull (bytes of the
#: pushed bodies; the SDK's ``push_hold_bytes``). A server pushes at most
#: ``push_max_bytes`` (4 KiB) a commit, so this is 64 big pushes or ~1,000 small ones.
MAX_HELD_BYTES = 256 << 10

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


@dataclass(frozen=True, slots=True)
class Held:
    """A push that came during a pull, kept until the pull ends (``held``: pushes held
    now; 0 when the bound was passed and they were dropped: the pull goes on once more)."""

    held: int


class PushInbox:
    """Pushes with data and the client's own pulls, for one SyncKey (the module
    docstring has the use).

    Outside a pull a push is applied at once (:func:`apply_push`). During one it is held:
    the pull's pages may bring its items first, or may end before them, and only the key
    the pull ends at says which. :meth:`end` applies the held pushes in the order they
    came against that key: items at or below it are already had and dropped, contiguous
    ones are taken (one :class:`Page` for all of them), and the first :class:`Gap` stops
    it (what follows it is dropped too: the pull it asks for brings it all).

    A pull that fails (:meth:`abort`) or whose key the server refused (:meth:`reset`,
    at a :class:`KeyReset`: the held pushes belong to the old key's history) drops what
    it holds and asks for one more pull. So does passing ``max_bytes`` of held bodies
    (counted in :attr:`dropped`): the server's log has all of it.
    """

    __slots__ = ("_held", "_lost", "_size", "dropped", "max_bytes", "pulling")

    def __init__(self, max_bytes: int = MAX_HELD_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        self.max_bytes = max_bytes
        self.pulling = False
        #: times the bound was passed (the held pushes dropped, one more pull)
        self.dropped = 0
        self._held: list[pb.NewSyncResponse] = []
        self._size = 0
        self._lost = False  # something held was dropped: the pull must go on once more

    @property
    def held(self) -> int:
        """Pushes held now."""
        return len(self._held)

    def push(self, key: bytes, push: pb.NewSyncResponse, size: int = -1) -> Page | Gap | Held:
        """Take one push (``size``: its body's length, if the caller has it) for a client
        that holds ``key``: a :class:`Page` to store now, a :class:`Gap` (pull from
        ``key``), or :class:`Held` during a pull."""
        if not self.pulling:
            return apply_push(key, push)
        if self._lost:
            return Held(0)
        size = push.ByteSize() if size < 0 else size
        if self._size + size > self.max_bytes:
            self.dropped += 1
            self._drop()
            self._lost = True
            return Held(0)
        self._held.append(push)
        self._size += size
        return Held(len(self._held))

    def begin(self) -> None:
        """A pull starts (pushes are held from now on)."""
        self.pulling = True

    def reset(self) -> None:
        """The pull's key was refused (:class:`KeyReset`): drop what is held; the pull
        goes on (newinit) and :meth:`end` then asks for one more."""
        self._drop()

    def end(self, key: bytes) -> list[Page | Gap]:
        """The pull reached the head at ``key``: the held pushes applied against it.

        Returns the events, in order: nothing, a :class:`Page` of the items taken (the
        key after them), a :class:`Gap` (pull again from the key: :meth:`begin` first),
        or a Page and then a Gap. ``Gap(0, 0, 0)`` means held pushes were dropped (the
        bound, or :meth:`reset`).
        """
        self.pulling = False
        held, lost = self._held, self._lost
        self._drop()
        self._lost = False
        items: list[pb.CmdItem] = []
        out: list[Page | Gap] = []
        gap: Gap | None = None
        cur = bytes(key)
        last: pb.NewSyncResponse | None = None
        for push in held:
            got = apply_push(cur, push)
            if isinstance(got, Gap):
                gap = got
                break
            if got.items:
                items += got.items
                cur = got.key
                last = push
        if items and last is not None:
            out.append(Page(items, cur, False, last))
        if gap is not None:
            out.append(gap)
        elif lost:
            out.append(Gap(0, 0, 0))
        return out

    def abort(self) -> bool:
        """The pull failed: drop what is held; True when a push was dropped (pull again;
        the key is where the pull's last stored page left it)."""
        self.pulling = False
        had = bool(self._held) or self._lost
        self._drop()
        self._lost = False
        return had

    def _drop(self) -> None:
        if self._held:
            self._lost = True
        self._held = []
        self._size = 0
