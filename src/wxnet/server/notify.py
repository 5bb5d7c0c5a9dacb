"""In-process notifier: who to tell when an account's sync logs grow (S18, S31).

Long links register per account and get ``notify(selector, items)``: ``items`` are the
entries the commit appended to the account's logs when the store reported them
(:meth:`Notifier.stage`), for a link that takes push with data (cmd 122), else None.
Long polls (short-link newsynccheck, web synccheck) wait on a per-account event. All on
the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from wxnet._compat import wait_for
from wxnet.proto.errors import MMError, MMRet

__all__ = ["Bus", "Notifier", "Subscriber"]


#: (key, seq, stored body) of one appended log entry
Item = tuple[int, int, bytes]


class Subscriber(Protocol):
    def notify(self, selector: int, items: Sequence[Item] | None = None) -> None: ...


class Bus(Protocol):
    """The other processes (``server/bus.py``): told of our news, told what we hold."""

    def hold(self, uin: int) -> None: ...
    def release(self, uin: int) -> None: ...
    def publish(self, news: dict[int, int]) -> None: ...


class Notifier:
    """Args:
    max_polls_per_session: a new long poll of a session that already holds this many
        answers the oldest one at once (with no news), as a reconnecting client wants.
    max_polls_per_account: more pending polls than this for one account are refused
        (``ERR_FREQ_LIMITED``), whatever their sessions.
    """

    def __init__(self, max_polls_per_session: int = 2, max_polls_per_account: int = 20) -> None:
        # uin -> its link, or a tuple of them when it has several: one link (the usual
        # case) is the dict's value itself (a tuple of one would cost 48 bytes per idle
        # link, a set 216); a notify walks a tuple with no copy, since adding or
        # removing a link puts a new value in place
        self._links: dict[int, Subscriber | tuple[Subscriber, ...]] = {}
        #: links registered, over all accounts
        self.total_links = 0
        self._waiters: dict[int, set[asyncio.Future[int]]] = {}
        self._by_session: dict[str, list[asyncio.Future[int]]] = {}
        self.max_polls_per_session = max_polls_per_session
        self.max_polls_per_account = max_polls_per_account
        #: polls cut short by the per-session cap / refused by the per-account cap
        self.polls_limited = {"session": 0, "account": 0}
        self.listeners: list[Callable[[dict[int, int]], None]] = []
        #: called with news that came over the bus (another process committed it)
        self.remote_listeners: list[Callable[[dict[int, int]], None]] = []
        self.bus: Bus | None = None
        self.closed = False
        self._staged: dict[int, list[Item]] = {}

    def close(self) -> None:
        """Shutting down: every pending long poll returns now (with no news), and later
        ones return at once, so a clean stop never waits out a 25 s poll."""
        self.closed = True
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_result(0)
        self._waiters.clear()

    def add(self, uin: int, sub: Subscriber) -> None:
        subs = self.subscribers(uin)
        if sub not in subs:
            self._links[uin] = (*subs, sub) if subs else sub
            self.total_links += 1
            if self.bus is not None:
                self.bus.hold(uin)

    def remove(self, uin: int, sub: Subscriber) -> None:
        subs = self.subscribers(uin)
        if sub in subs:
            rest = tuple(s for s in subs if s is not sub)
            if len(rest) > 1:
                self._links[uin] = rest
            elif rest:
                self._links[uin] = rest[0]
            else:
                del self._links[uin]
            self.total_links -= 1
            if self.bus is not None:
                self.bus.release(uin)

    def subscribers(self, uin: int) -> tuple[Subscriber, ...]:
        subs = self._links.get(uin)
        if subs is None:
            return ()
        return subs if isinstance(subs, tuple) else (subs,)

    def links(self, uin: int) -> int:
        return len(self.subscribers(uin))

    def every_link(self) -> list[Subscriber]:
        """Every registered link, over all accounts (a copy: the caller may close them)."""
        out: list[Subscriber] = []
        for subs in self._links.values():
            if isinstance(subs, tuple):
                out += subs
            else:
                out.append(subs)
        return out

    @property
    def total_waiters(self) -> int:
        return sum(len(s) for s in self._waiters.values())

    def stage(self, entries: Sequence[tuple[int, int, int, bytes]]) -> None:
        """Called by the engine just before :meth:`publish` with what the commit
        appended, (uin, key, seq, body) in seq order per log: the next publish hands
        each account's entries to its links."""
        staged = self._staged
        for uin, key, seq, body in entries:
            got = staged.get(uin)
            if got is None:
                staged[uin] = [(key, seq, body)]
            else:
                got.append((key, seq, body))

    def publish(self, news: dict[int, int]) -> None:
        """Called by the engine after a commit: ``{uin: selector bits}``."""
        try:
            self._wake(news)
        finally:
            self._staged.clear()
        if self.bus is not None:
            self.bus.publish(news)
        for listener in self.listeners:
            listener(news)

    def deliver(self, news: dict[int, int]) -> None:
        """News committed by another process (from the bus): wake who waits here."""
        for listener in self.remote_listeners:
            listener(news)
        self._wake(news)

    def _wake(self, news: dict[int, int]) -> None:
        staged = self._staged
        links = self._links
        polls = self._waiters
        for uin, sel in news.items():
            subs = links.get(uin)
            if subs is not None:
                items = staged.get(uin)
                if isinstance(subs, tuple):
                    for sub in subs:
                        sub.notify(sel, items)
                else:
                    subs.notify(sel, items)
            if polls:  # long polls are rare beside long links: no lookup per account
                waiters = polls.pop(uin, None)
                if waiters:
                    for fut in waiters:
                        if not fut.done():
                            fut.set_result(sel)

    async def wait(self, uin: int, timeout: float, session: str = "") -> int:
        """Wait until ``uin``'s logs grow (returns the selector bits) or ``timeout``
        passes (returns 0). Callers check for news *before* waiting.

        Raises:
            MMError: ERR_FREQ_LIMITED when the account already has
                ``max_polls_per_account`` polls pending.
        """
        if self.closed:
            return 0
        if len(self._waiters.get(uin, ())) >= self.max_polls_per_account:
            self.polls_limited["account"] += 1
            raise MMError(
                MMRet.ERR_FREQ_LIMITED,
                f"at most {self.max_polls_per_account} pending long polls per account",
            )
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        mine = self._by_session.setdefault(session, []) if session else None
        if mine is not None:
            while len(mine) >= self.max_polls_per_session:
                self.polls_limited["session"] += 1
                old = mine.pop(0)
                self._waiters.get(uin, set()).discard(old)  # no longer counts
                if not old.done():
                    old.set_result(0)
            mine.append(fut)
        self._waiters.setdefault(uin, set()).add(fut)
        if self.bus is not None:
            self.bus.hold(uin)
        try:
            return await wait_for(fut, timeout)
        except TimeoutError:
            return 0
        finally:
            if self.bus is not None:
                self.bus.release(uin)
            ws = self._waiters.get(uin)
            if ws is not None:
                ws.discard(fut)
                if not ws:
                    del self._waiters[uin]
            if mine is not None:
                if fut in mine:
                    mine.remove(fut)
                if not mine and self._by_session.get(session) is mine:
                    del self._by_session[session]
