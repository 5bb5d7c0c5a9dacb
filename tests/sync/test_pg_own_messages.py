"""S17 on PostgreSQL across processes: logins of a new device racing sends of another.

``wx_commit`` answers S17 (another device with a live session?) under the account's
lock, which ``wx_add_session`` takes exclusively; here two stores on one database (two
processes' pools) send on one and log in on the other, and a new device's newinit plus
newsync from its key must hold every message the account sent and received, each once.
The ordering test holds a send inside ``wx_commit`` after its question was answered
(a recipient's heads row locked by a third connection) and logs in meanwhile: without
the lock the login would return, and its newinit run, before the send's entry in the
sent log existed.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.engines import PostgresServer
from tests.sync.test_engine import PW_HASH, Clock, text
from tests.sync.test_own_messages import _login, _sync
from wxnet.proto.synckey import KEY_MSG
from wxnet.sync.engine import Engine, EngineConfig, profile_item
from wxnet.sync.pg_store import PostgresStore


async def _engine(dsn: str, data: Path, clock: Clock) -> Engine:
    cfg = EngineConfig(contacts="open", sync_window_items=4, init_recent_messages=1000)
    store = PostgresStore(dsn, profile_item=profile_item, min_size=1, max_size=4)
    e = Engine(data, cfg, clock=clock, store=store)
    await e.start()
    return e


async def _close(*engines: Engine) -> None:
    for e in engines:
        await e.aclose()
        e.close()


@pytest.fixture
async def two_engines(pg_dsn: str, tmp_path: Path) -> AsyncIterator[tuple[Engine, Engine]]:
    """Two engines (two processes' stores) on one database, with alice and bob."""
    clock = Clock()
    a = await _engine(pg_dsn, tmp_path / "a", clock)
    b = await _engine(pg_dsn, tmp_path / "b", clock)
    for name in ("alice", "bob"):
        await a.store.create_account(name, PW_HASH, name, a.now())
    try:
        yield a, b
    finally:
        await _close(a, b)


async def _waiting(conn: asyncpg.Connection, what: str) -> int:
    """Backends waiting for a lock: on a row ("row": a transaction's) or an advisory one."""
    sql = {
        "row": "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype IN"
        " ('transactionid', 'tuple')",
        "advisory": "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype='advisory'",
    }[what]
    return int(await conn.fetchval(sql))


@pytest.mark.parametrize("login_first", [False, True])
async def test_a_login_is_ordered_against_a_send_in_flight(
    two_engines: tuple[Engine, Engine], pg_dsn: str, login_first: bool
) -> None:
    sender, other = two_engines  # alice sends through one process, logs in through the other
    alice, bob = await sender.lookup("alice"), await sender.lookup("bob")
    assert alice is not None and bob is not None
    phone = await _login(sender, alice, "phone")
    await sender.add_contact(phone.sess, "bob")
    head0 = await sender.store.head(alice, KEY_MSG, fresh=True)
    hold = await asyncpg.connect(pg_dsn)
    try:
        if login_first:
            pad = await _login(other, alice, "pad")
            (res,) = await sender.send(phone.sess, [text("bob", "after", "c1")])
            assert await sender.store.head(alice, KEY_MSG, fresh=True) == head0 + 1  # logged
        else:
            tx = hold.transaction()
            await tx.start()
            await hold.execute("SELECT 1 FROM heads WHERE uin=$1 FOR UPDATE", bob)
            sending = asyncio.ensure_future(
                sender.send(phone.sess, [text("bob", "in flight", "c1")])
            )
            for _ in range(500):  # bounded: each turn is a round trip to PostgreSQL
                if await _waiting(hold, "row"):
                    break
            assert await _waiting(hold, "row"), "the send never reached wx_commit's heads"
            logging_in = asyncio.ensure_future(_login(other, alice, "pad"))
            for _ in range(500):
                if logging_in.done() or await _waiting(hold, "advisory"):
                    break
            # the login waits for the send's transaction (the account's lock) ...
            waited = not logging_in.done() and await _waiting(hold, "advisory") == 1
            await tx.rollback()  # ... which commits now, its entry in the sent log
            (res,) = await sending
            pad = await logging_in
            assert await sender.store.head(alice, KEY_MSG, fresh=True) == head0  # not logged
        phone.own.add(res.msg_id)
        for dev, eng in ((phone, sender), (pad, other)):
            await _sync(eng, dev)
            dev.check({res.msg_id})  # the pad has it, from its newinit or its newsync
        assert login_first or waited
    finally:
        await hold.close()


async def test_logins_racing_a_stream_of_sends_miss_and_repeat_nothing(
    two_engines: tuple[Engine, Engine],
) -> None:
    """alice's phone sends without pause through one process while new devices of hers
    log in through the other, one after another (each newinit right after its login);
    bob sends to her too. Every device ends with every message once."""
    sender, other = two_engines
    alice, bob_uin = await sender.lookup("alice"), await sender.lookup("bob")
    assert alice is not None and bob_uin is not None
    phone = await _login(sender, alice, "phone")
    bob = await sender.create_session(bob_uin, "bob-phone", "phone")
    await sender.add_contact(phone.sess, "bob")
    sent: list[int] = []
    stop = asyncio.Event()

    async def stream() -> None:
        n = 0
        while not stop.is_set():
            batch = [sender.send(phone.sess, [text("bob", "hi", f"a{n}-{i}")]) for i in range(3)]
            batch.append(sender.send(bob, [text("alice", "yo", f"b{n}")]))
            for i, (res,) in enumerate(await asyncio.gather(*batch)):
                assert res.ret == 0 and res.msg_id
                if i < 3:
                    phone.own.add(res.msg_id)
                sent.append(res.msg_id)
            n += 1

    task = asyncio.ensure_future(stream())
    devices = []
    try:
        for i in range(6):
            devices.append(await _login(other, alice, f"dev{i}"))
    finally:
        stop.set()
        await task
    assert len(sent) > 4
    for dev, eng in ((phone, sender), *((d, other) for d in devices)):
        await _sync(eng, dev)
        dev.check(set(sent))


# ---------------------------------------------------------------------- the model

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("login"), st.integers(0, 1)),
        st.tuples(st.just("send"), st.integers(0, 7)),
        st.tuples(st.just("bob"), st.integers(0, 1)),
        st.tuples(st.just("sync"), st.integers(0, 7)),
        st.tuples(st.just("logout"), st.integers(0, 7)),
        st.tuples(st.just("race"), st.integers(0, 7), st.integers(1, 3)),
    ),
    max_size=12,
)


@settings(max_examples=12, deadline=None)
@given(ops=OPS)
async def test_every_device_sees_every_message_exactly_once_on_two_processes(
    pg_server: PostgresServer, ops: list[tuple[object, ...]]
) -> None:
    """The S17 model of ``test_own_messages.py`` on two processes of one database: each
    device lives on one of them; a race is a login on the other process at the same
    time as sends (their order is PostgreSQL's); alice's message log holds exactly the
    entries S17 asks for (a raced send: either way)."""
    dsn = pg_server.new_database()
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        engines = (
            await _engine(dsn, Path(tmp) / "a", clock),
            await _engine(dsn, Path(tmp) / "b", clock),
        )
        try:
            await _run_model(engines, ops)
        finally:
            await _close(*engines)


async def _run_model(engines: tuple[Engine, Engine], ops: list[tuple[object, ...]]) -> None:
    e0 = engines[0]
    a = await e0.store.create_account("alice", PW_HASH, "alice", e0.now())
    b = await e0.store.create_account("bob", PW_HASH, "bob", e0.now())
    bob = await e0.create_session(b, "bob-phone", "phone")
    await e0.add_contact(bob, "alice")
    devices = [(await _login(e0, a, "dev0"), e0)]
    live = [True]
    sent: list[int] = []
    logged = [0, 0]  # the least and the most entries alice's message log may hold
    head0 = await e0.store.head(a, KEY_MSG, fresh=True)

    cids = iter(range(1 << 30))

    async def send(i: int, tag: str) -> None:
        dev, eng = devices[i]
        (res,) = await eng.send(dev.sess, [text("bob", tag, f"c{next(cids)}")])
        assert res.ret == 0
        dev.own.add(res.msg_id)
        sent.append(res.msg_id)

    for op in ops:
        alive = [i for i, ok in enumerate(live) if ok]
        pick = alive[int(op[1]) % len(alive)] if alive else 0  # type: ignore[call-overload]
        if op[0] == "login":
            eng = engines[int(op[1])]  # type: ignore[call-overload]
            devices.append((await _login(eng, a, f"dev{len(devices)}"), eng))
            live.append(True)
        elif op[0] == "send":
            await send(pick, "hi")
            n = 1 if sum(live) > 1 else 0
            logged = [logged[0] + n, logged[1] + n]
        elif op[0] == "bob":
            eng = engines[int(op[1])]  # type: ignore[call-overload]
            (res,) = await eng.send(bob, [text("alice", "yo", f"b{next(cids)}")])
            sent.append(res.msg_id)
            logged = [logged[0] + 1, logged[1] + 1]
        elif op[0] == "sync":
            await _sync(devices[pick][1], devices[pick][0])
        elif op[0] == "logout" and len(alive) > 1:
            dev, eng = devices[pick]
            await eng.logout(dev.sess)
            live[pick] = False
        elif op[0] == "race":
            k = int(op[2])  # type: ignore[call-overload]
            before = 1 if sum(live) > 1 else 0  # the new device may or may not count
            far = engines[1] if devices[pick][1] is engines[0] else engines[0]
            name = f"dev{len(devices)}"
            logging_in = asyncio.ensure_future(_login(far, a, name))
            await asyncio.gather(*(send(pick, "race") for _ in range(k)), logging_in)
            devices.append((logging_in.result(), far))
            live.append(True)
            logged = [logged[0] + k * before, logged[1] + k]
    for (dev, eng), ok in zip(devices, live, strict=True):
        if ok:
            await _sync(eng, dev)
            dev.check(set(sent))
    grown = await e0.store.head(a, KEY_MSG, fresh=True) - head0
    assert logged[0] <= grown <= logged[1]  # S17
