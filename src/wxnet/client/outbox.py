"""The outbox as a pure state machine (S16, S23): which message to try now, which to
retry when, which has failed. No I/O and no clock: time comes in as ``now``, and the
asyncio adapter (:mod:`wxnet.client.delivery`) re-arms one timer from :meth:`get_timer`.

Each message the machine tracks is in one :class:`DeliveryState`::

    submit -> READY --start--> IN_FLIGHT --succeeded--> SENT
                ^                  |
                |                  +--failed: retry--> BACKOFF --timer--> READY
                |                  +--failed: give up--> FAILED
                +------submit (resend) from SENT or FAILED

The transitions are a table; any other (state, input) pair raises
:class:`OutboxStateError` and changes nothing. Exactly once: a message has at most one
attempt in flight, a submit of a message already tracked and not finished is a no-op
(a resumed outbox and a new link cannot start a second copy), and every attempt of a
message reuses its ClientMsgId, so the server's dedup makes a repeat harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from wxnet.client.sending import SendDecision, SendRetryPolicy, Verdict
from wxnet.proto.errors import LocalProtocolError

__all__ = ["Attempt", "DeliveryState", "OutboxMachine", "OutboxStateError"]


class DeliveryState(Enum):
    READY = "ready"
    IN_FLIGHT = "in_flight"
    BACKOFF = "backoff"
    SENT = "sent"
    FAILED = "failed"


class _Input(Enum):
    SUBMIT = "submit"
    START = "start"
    SUCCEEDED = "succeeded"
    RETRY = "retry"
    GIVE_UP = "give_up"
    TIMER = "timer"


S, I = DeliveryState, _Input  # noqa: E741 - the table below reads better short
_TRANSITIONS: dict[tuple[DeliveryState | None, _Input], DeliveryState] = {
    (None, I.SUBMIT): S.READY,
    (S.SENT, I.SUBMIT): S.READY,
    (S.FAILED, I.SUBMIT): S.READY,
    (S.READY, I.START): S.IN_FLIGHT,
    (S.IN_FLIGHT, I.SUCCEEDED): S.SENT,
    (S.IN_FLIGHT, I.RETRY): S.BACKOFF,
    (S.IN_FLIGHT, I.GIVE_UP): S.FAILED,
    (S.BACKOFF, I.TIMER): S.READY,
}
#: States in which a submit changes nothing (the message is already on its way).
_BUSY = frozenset({S.READY, S.IN_FLIGHT, S.BACKOFF})


class OutboxStateError(LocalProtocolError):
    """An input that the message's state does not allow (a bug in the caller, as an
    illegal send is for a connection)."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """Send ``client_msg_id`` now; ``number`` counts attempts since it was submitted."""

    client_msg_id: str
    number: int


@dataclass(slots=True)
class _Entry:
    state: DeliveryState
    attempts: int = 0
    retry_at: float = 0.0
    order: int = 0


class OutboxMachine:
    """Tracks messages by ClientMsgId. Feed it :meth:`submit`, then loop: take
    :meth:`start_ready`, report each attempt with :meth:`succeeded` or :meth:`failed`,
    and call :meth:`handle_timer` at :meth:`get_timer`."""

    def __init__(self, policy: SendRetryPolicy) -> None:
        self.policy = policy
        self._entries: dict[str, _Entry] = {}
        self._order = 0

    def _step(self, cid: str, inp: _Input) -> _Entry:
        entry = self._entries.get(cid)
        state = entry.state if entry is not None else None
        new = _TRANSITIONS.get((state, inp))
        if new is None:
            raise OutboxStateError(f"{cid}: {inp.value} is not allowed in state {state}")
        if entry is None:
            entry = self._entries[cid] = _Entry(new)
        entry.state = new
        return entry

    def state(self, cid: str) -> DeliveryState | None:
        entry = self._entries.get(cid)
        return entry.state if entry is not None else None

    def submit(self, cid: str) -> bool:
        """Queue ``cid`` for sending. Returns False (and changes nothing) when it is
        already ready, in flight or waiting to retry. A sent or failed message starts
        over with a fresh attempt count (``resend``)."""
        if self.state(cid) in _BUSY:
            return False
        entry = self._step(cid, I.SUBMIT)
        entry.attempts = 0
        self._order += 1
        entry.order = self._order
        return True

    def start_ready(self) -> list[Attempt]:
        """Every READY message goes IN_FLIGHT, oldest submit first."""
        ready = sorted((e.order, cid) for cid, e in self._entries.items() if e.state is S.READY)
        out = []
        for _order, cid in ready:
            entry = self._step(cid, I.START)
            entry.attempts += 1
            out.append(Attempt(cid, entry.attempts))
        return out

    def succeeded(self, cid: str) -> None:
        self._step(cid, I.SUCCEEDED)

    def failed(
        self, cid: str, now: float, code: int | None = None, reason: str = ""
    ) -> SendDecision:
        """The attempt in flight failed (``code``: the MM result if the server refused).
        Returns the policy's decision: RETRY (at ``decision.at``) or FAIL."""
        entry = self._entries.get(cid)
        if entry is None or entry.state is not S.IN_FLIGHT:
            raise OutboxStateError(f"{cid}: no attempt in flight")
        decision = self.policy.after_failure(entry.attempts, now, code=code, reason=reason)
        if decision.verdict is Verdict.FAIL:
            self._step(cid, I.GIVE_UP)
        else:
            self._step(cid, I.RETRY).retry_at = decision.at
        return decision

    def get_timer(self) -> float | None:
        """When the next retry is due, or None if nothing waits."""
        due = [e.retry_at for e in self._entries.values() if e.state is S.BACKOFF]
        return min(due) if due else None

    def handle_timer(self, now: float) -> list[str]:
        """Retries due by ``now`` become READY; returns their ClientMsgIds."""
        due = [
            cid for cid, e in self._entries.items() if e.state is S.BACKOFF and e.retry_at <= now
        ]
        for cid in due:
            self._step(cid, I.TIMER)
        return due

    def forget(self, cid: str) -> None:
        """Stop tracking ``cid`` (finished, or the caller gave it up)."""
        self._entries.pop(cid, None)

    def pending(self) -> list[str]:
        """Messages not finished (ready, in flight or waiting to retry)."""
        return [cid for cid, e in self._entries.items() if e.state in _BUSY]
