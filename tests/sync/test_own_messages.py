"""S17: "sending a message may not create a new SyncKey for the sender".

The sender's own entry goes to its message log only while another device of the account
has a live session (S31); otherwise to the sent log, which newinit reads, so that a
device that logs in later still gets what the account sent. Checked on both stores (the
store question), and on the engine with hypothesis: any interleaving of logins, sends
and syncs leaves every device with every message exactly once (its own copies from the
send's reply, the rest from newinit and newsync), including a device that logs in while
a send is in the writer's queue.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sync.conftest import Published
from tests.sync.test_engine import Clock, make_engine, parse_cmd_item, text
from tests.sync.test_store_contract import T0, new_msg, two
from wxnet.proto.synckey import KEY_MSG, SyncKey
from wxnet.sync.engine import Engine, Session
from wxnet.sync.sqlite_store import SQLiteStore
from wxnet.sync.store import KEY_SENT, SessionRow, Store


async def test_the_senders_entry_only_for_another_live_device(
    store: Store, published: Published
) -> None:
    """Both stores decide it where the message is written: SQLite in its writer,
    PostgreSQL inside ``wx_commit``."""
    a, b = await two(store)
    await store.create_session(SessionRow("s1", a, "alice", "phone", "P", "mobile", T0 + 99), T0)
    assert not await store.has_other_device(a, "phone", T0)
    await store.store_messages(a, [new_msg("c1", "bob", [a, b])], T0, "phone")
    assert await store.head(a, KEY_MSG, fresh=True) == 0  # no new SyncKey for alice
    assert await store.head(b, KEY_MSG, fresh=True) == 1
    m1 = await store.message_by_client_id(a, "c1")
    assert m1 is not None
    assert await store.recent_messages(a, 0, 10) == [(KEY_MSG, 0, f"c1:{m1.msg_id}:{T0}".encode())]

    await store.create_session(SessionRow("s2", a, "alice", "pad", "P", "mobile", T0 + 99), T0)
    assert await store.has_other_device(a, "phone", T0)
    assert not await store.has_other_device(a, "phone", T0 + 100)  # the pad's expired
    await store.store_messages(a, [new_msg("c2", "bob", [a, b])], T0, "phone")
    assert await store.head(a, KEY_MSG, fresh=True) == 1  # the pad needs it
    await store.store_messages(a, [new_msg("c3", "bob", [a, b])], T0 + 100, "phone")
    assert await store.head(a, KEY_MSG, fresh=True) == 1  # nobody needs it any more
    await store.store_messages(a, [new_msg("c4", "bob", [a, b])], T0)  # no device: logged
    head = await store.head(a, KEY_MSG, fresh=True)
    assert head == 2
    got = await store.recent_messages(a, head, 10)
    assert [(k, s, bytes(body).split(b":")[0]) for k, s, body in got] == [
        (KEY_MSG, seq, cid)
        for seq, cid in zip((0, 1, 0, 2), (b"c1", b"c2", b"c3", b"c4"), strict=True)
    ]
    assert [x[2][:2] for x in await store.recent_messages(a, head, 2)] == [b"c3", b"c4"]
    assert [x[2][:2] for x in await store.recent_messages(a, 1, 10)] == [b"c1", b"c2", b"c3"]
    # webwxhistory's read: both logs, newest first
    assert [b[:2] for _, b in await store.message_history(a, 0, 10)] == [b"c4", b"c3", b"c2", b"c1"]
    # the sent log is no SyncKey key: never published (no notify, no push, no head)
    assert all(k != KEY_SENT for ch in published.changes for _, k in ch.heads)
    assert all(k != KEY_SENT for ch in published.changes for _, k, _, _ in ch.entries)
    # sends of one account from several devices queued together: each its own answer,
    # and a plain recipient's entry is never moved by them
    outs = await asyncio.gather(
        *(
            store.store_messages(a, [new_msg(f"g{i}", "bob", [a, b])], T0 + 100, dev)
            for i, dev in enumerate(("phone", "pad", "phone", ""))
        )
    )
    assert all(not dup for o in outs for _, _, dup in o)
    assert await store.head(a, KEY_MSG, fresh=True) == 3  # the one with no device
    assert await store.head(b, KEY_MSG, fresh=True) == 8


async def test_a_duplicate_in_one_group_is_reported_as_such(store: Store) -> None:
    """Sends batched into one group: a repeated ClientMsgId inside the group, and one
    seen before, answer with the original message."""
    a, b = await two(store)
    [(first, _, _)] = await store.store_messages(a, [new_msg("c0", "bob", [a, b])], T0)
    outs = await asyncio.gather(
        *(
            store.store_messages(a, [new_msg(cid, "bob", [a, b])], T0 + 1)
            for cid in ("c1", "c1", "c0", "c2")
        )
    )
    (m1, t1, d1), (m1b, t1b, d1b), (m0, t0, d0), (m2, _, d2) = (o[0] for o in outs)
    assert (d1, d1b, d0, d2) == (False, True, True, False)
    assert (m1b, t1b) == (m1, t1) and (m0, t0) == (first, T0) and len({m1, m2, first}) == 3
    assert await store.head(b, KEY_MSG, fresh=True) == 3  # c0, c1, c2 once each


# ---------------------------------------------------------------------- the engine model


@dataclass
class Device:
    sess: Session
    key: SyncKey
    #: msg_id -> how many times the server delivered it (newinit + newsync)
    served: dict[int, int] = field(default_factory=dict)
    own: set[int] = field(default_factory=set)  # copies kept from the send's reply

    def take(self, items: list[tuple[int, int, bytes]]) -> None:
        for k, s, body in items:
            item = parse_cmd_item(k, s, body)
            if item.WhichOneof("body") == "add_msg":
                mid = item.add_msg.msg_id
                self.served[mid] = self.served.get(mid, 0) + 1

    def shown(self) -> set[int]:
        return self.own | set(self.served)

    def check(self, sent: set[int]) -> None:
        assert all(n == 1 for n in self.served.values()), self.served  # never twice
        assert self.shown() == sent  # never missing


async def _login(e: Engine, uin: int, name: str) -> Device:
    """A new device's login and then (as a client does) its newinit."""
    sess = await e.create_session(uin, name, name)
    res = await e.newinit(sess)
    dev = Device(sess, res.key)
    dev.take(res.items)
    return dev


async def _sync(e: Engine, dev: Device) -> None:
    while True:
        res = await e.newsync(dev.sess, dev.key)
        dev.take(res.items)
        dev.key = res.key
        if not res.continue_flag:
            return


async def _queued_together(e: Engine, first: Awaitable[object], second: Awaitable[object]) -> None:
    """Run two writes so that they land in one group of the writer, ``first`` queued
    first: the writer is held until both are in its queue."""
    store = e.store
    assert isinstance(store, SQLiteStore)
    release, holding = threading.Event(), threading.Event()

    def hold(conn: object) -> None:
        holding.set()
        release.wait(10)

    store.db.write_nowait(hold)
    assert holding.wait(10)  # the writer runs it: its queue is empty now
    q = store.db._wq  # the writer's queue: what "queued" means here
    tasks = []
    for aw in (first, second):
        size = q.qsize()
        tasks.append(asyncio.ensure_future(aw))
        for _ in range(1000):  # a bounded number of loop turns, no timer
            if q.qsize() > size:
                break
            await asyncio.sleep(0)
        assert q.qsize() > size, "the write never reached the writer's queue"
    release.set()
    await asyncio.gather(*tasks)


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("login")),
        st.tuples(st.just("send"), st.integers(0, 7)),
        st.tuples(st.just("bob")),
        st.tuples(st.just("sync"), st.integers(0, 7)),
        st.tuples(st.just("logout"), st.integers(0, 7)),
        st.tuples(st.just("race"), st.integers(0, 7), st.booleans()),
    ),
    max_size=14,
)


@settings(max_examples=40, deadline=None)
@given(ops=OPS)
async def test_every_device_sees_every_message_exactly_once(ops: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        e = await make_engine(Path(tmp), Clock(), contacts="open", sync_window_items=4,
                              init_recent_messages=1000)  # fmt: skip
        try:
            await _run_model(e, ops)
        finally:
            e.close()


async def _run_model(e: Engine, ops: list[tuple[object, ...]]) -> None:
    a = await e.lookup("alice")
    b = await e.lookup("bob")
    assert a is not None and b is not None
    bob = await e.create_session(b, "bob-phone", "phone")
    await e.add_contact(bob, "alice")
    devices = [await _login(e, a, "dev0")]
    live = [True]
    sent: list[int] = []  # every message between alice and bob, by id
    logged = 0  # entries alice's message log must hold (S17)
    head0 = await e.store.head(a, KEY_MSG)
    n = 1

    async def send(i: int) -> None:
        nonlocal logged
        dev = devices[i]
        others = sum(live) - 1
        (res,) = await e.send(dev.sess, [text("bob", "hi", f"c{len(sent)}")])
        dev.own.add(res.msg_id)
        sent.append(res.msg_id)
        logged += 1 if others else 0

    for op in ops:
        alive = [i for i, ok in enumerate(live) if ok]
        if op[0] == "login":
            devices.append(await _login(e, a, f"dev{n}"))
            live.append(True)
            n += 1
        elif op[0] == "send" and alive:
            await send(alive[int(op[1]) % len(alive)])  # type: ignore[call-overload]
        elif op[0] == "bob":
            (res,) = await e.send(bob, [text("alice", "yo", f"b{len(sent)}")])
            sent.append(res.msg_id)
            logged += 1
        elif op[0] == "sync" and alive:
            await _sync(e, devices[alive[int(op[1]) % len(alive)]])  # type: ignore[call-overload]
        elif op[0] == "logout" and len(alive) > 1:
            i = alive[int(op[1]) % len(alive)]  # type: ignore[call-overload]
            await e.logout(devices[i].sess)
            live[i] = False
        elif op[0] == "race" and alive:
            # a device logs in while a send is in flight: both in one writer group, in
            # either order; the send counts the new device only if it was queued first
            dev = devices[alive[int(op[1]) % len(alive)]]  # type: ignore[call-overload]
            login_first = bool(op[2])
            others = sum(live) - 1 + (1 if login_first else 0)
            cid = f"c{len(sent)}"
            sending = e.send(dev.sess, [text("bob", "race", cid)])
            new = e.create_session(a, f"dev{n}", f"dev{n}")
            if login_first:
                await _queued_together(e, new, sending)
            else:
                await _queued_together(e, sending, new)
            msg = await e.store.message_by_client_id(a, cid)
            assert msg is not None
            dev.own.add(msg.msg_id)
            sent.append(msg.msg_id)
            logged += 1 if others else 0
            sess = next(s for s in e._sessions.values() if s.device_id == f"dev{n}")
            init = await e.newinit(sess)  # after its login returned, as a client does
            devices.append(Device(sess, init.key))
            devices[-1].take(init.items)
            live.append(True)
            n += 1
    for i, dev in enumerate(devices):
        if live[i]:
            await _sync(e, dev)
    assert await e.store.head(a, KEY_MSG, fresh=True) - head0 == logged  # S17
    for i, dev in enumerate(devices):
        if not live[i]:
            continue
        assert all(c == 1 for c in dev.served.values()), dev.served  # never twice
        assert dev.shown() == set(sent)  # every message, from the reply, newinit or newsync
