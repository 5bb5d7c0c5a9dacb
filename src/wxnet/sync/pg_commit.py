"""One call of ``wx_commit`` (``sync/pg_schema.py``) from the Python side: the queued
write jobs of a group, the arrays the call takes, and the changes its answer means.

Nothing here does I/O: :class:`wxnet.sync.pg_base.PostgresBase` runs the group commit
with these (and ``_appending_tx`` its one-off transactions).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from wxnet.proto.synckey import SELECTOR_BITS
from wxnet.sync.store import Append, Changes, NewMessage

__all__ = ["COMMIT_SQL", "CommitArgs", "Job", "changes"]

COMMIT_SQL = "SELECT * FROM wx_commit($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16)"


@dataclass(slots=True)
class Job:
    """One queued log write: messages of one sender, or plain appends. ``device``: the
    sending device, for S17 (``Store.store_messages``); empty: every recipient's log."""

    future: asyncio.Future[Any]
    sender: int = 0
    msgs: Sequence[NewMessage] = ()
    now: int = 0
    appends: Sequence[Append] = ()
    ids: list[int] = field(default_factory=list)
    device: str = ""


class CommitArgs:
    """The arguments of one ``wx_commit`` call, built job by job."""

    def __init__(self) -> None:
        self.m: list[list[Any]] = [[] for _ in range(7)]
        self.i_key: list[int] = []
        self.i_body: list[bytes] = []
        self.i_msg: list[int] = []
        self.f_item: list[int] = []
        self.f_uin: list[int] = []
        self.f_q: list[int] = []
        self.q: list[list[Any]] = [[], [], []]  # S17 questions: uin, device, now
        self._asked: dict[tuple[int, str, int], int] = {}

    def message(self, mid: int, sender: int, m: NewMessage, now: int) -> int:
        for col, v in zip(
            self.m,
            (mid, sender, m.client_msg_id, m.to_user, m.msg_type, now, m.media),
            strict=True,
        ):
            col.append(v)
        return len(self.m[0])

    def question(self, uin: int, device: str, now: int) -> int:
        """The index (from 1) of the S17 question "has ``uin`` a live session, at
        ``now``, of a device other than ``device``?", asked once per call."""
        k = (uin, device, now)
        q = self._asked.get(k)
        if q is None:
            for col, v in zip(self.q, k, strict=True):
                col.append(v)
            q = self._asked[k] = len(self.q[0])
        return q

    def item(
        self, key: int, body: bytes, uins: Sequence[int], msg: int = 0, own: int = 0, q: int = 0
    ) -> None:
        """A log item for ``uins``; the entry of ``own`` (the sender) goes to its sent log
        instead when question ``q`` is answered no."""
        self.i_key.append(key)
        self.i_body.append(body)
        self.i_msg.append(msg)
        idx = len(self.i_key)
        for u in uins:
            self.f_item.append(idx)
            self.f_uin.append(u)
            self.f_q.append(q if q and u == own else 0)

    def args(self) -> tuple[Any, ...]:
        return (
            *self.m,
            self.i_key,
            self.i_body,
            self.i_msg,
            self.f_item,
            self.f_uin,
            self.f_q,
            *self.q,
        )


def changes(rows: Sequence[Any], arr: CommitArgs, dup: Sequence[bool] = ()) -> Changes:
    """The heads and news ``wx_commit`` returned, and the entries it appended: their seqs
    are not sent back (that would be one more row per entry to send and decode) but follow
    from the heads, since ``wx_commit`` numbers a log's new entries old head + 1, + 2, ...
    in fan-out order. ``dup[i]``: message ``i + 1`` of the call was a duplicate (its item
    was not stored). Rows of kind 2 answer the S17 questions (1: another device, so the
    message log; 0: the sent log)."""
    ch = Changes()
    heads = ch.heads
    other: dict[int, bool] = {}
    for r in rows:
        if r[0] == 1 and int(r[2]) in SELECTOR_BITS:  # not the sent log: no SyncKey key
            uin, key, seq = int(r[1]), int(r[2]), int(r[3])
            heads[(uin, key)] = seq
            ch.news[uin] = ch.news.get(uin, 0) | SELECTOR_BITS[key]
        elif r[0] == 2:
            other[int(r[1])] = bool(r[2])
    if not heads:
        return ch
    i_key, i_body, i_msg = arr.i_key, arr.i_body, arr.i_msg
    fan: list[tuple[int, int, bytes]] = []
    count: dict[tuple[int, int], int] = {}
    for item, uin, q in zip(arr.f_item, arr.f_uin, arr.f_q, strict=True):
        m = i_msg[item - 1]
        if (m and dup[m - 1]) or i_key[item - 1] not in SELECTOR_BITS or (q and not other[q]):
            continue  # a duplicate's, or the sent log's (no SyncKey key: not published)
        hk = (uin, i_key[item - 1])
        count[hk] = count.get(hk, 0) + 1
        fan.append((uin, hk[1], i_body[item - 1]))
    nxt = {hk: heads[hk] - n for hk, n in count.items()}  # the heads before this call
    entries = ch.entries
    for uin, key, body in fan:
        seq = nxt[(uin, key)] + 1
        nxt[(uin, key)] = seq
        entries.append((uin, key, seq, body))
    return ch
