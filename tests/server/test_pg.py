"""The server on PostgreSQL: the messaging suite again, a clear refusal to start when
the engine is unreachable, and sends answered with an error (never an ack) while it is
down."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.engines import PostgresServer, free_port
from tests.server.test_messaging import *  # noqa: F403  (the same tests, on PostgreSQL)
from tests.server.wire import Device
from wxnet._compat import wait_for
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMError, MMRet
from wxnet.server.app import Server, start_server
from wxnet.server.config import ServerConfig, StoreConfig
from wxnet.sync.engine import EngineConfig

# Not run again here: SQLite-specific (it writes into the SQLite file behind the
# server's back), or not about the store (login limits, long-link framing).
for _name in (
    "test_key_newer_than_the_cached_head_is_not_invalid",
    "test_login_errors",
    "test_login_rate_limited",
    "test_notifies_coalesce_and_reach_every_identified_link",
    "test_noop_answered_with_same_seq",
):
    globals().pop(_name)


@pytest.fixture
def config(tmp_path: Path, pg_dsn: str) -> ServerConfig:
    """Every test of this module runs its server on a fresh PostgreSQL schema."""
    return ServerConfig(
        host="127.0.0.1",
        long_port=0,
        http_port=0,
        data=tmp_path / "var",
        store=StoreConfig(kind="postgres", dsn=pg_dsn),
        sync=EngineConfig(contacts="open"),  # consent: tests/server/test_consent.py
    )


async def test_unreachable_postgres_refuses_to_start(config: ServerConfig) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    cfg = dataclasses.replace(config, store=StoreConfig(kind="postgres", dsn=dead, timeout=2))
    with pytest.raises(MMError) as ei:
        await start_server(cfg)
    assert "cannot connect to PostgreSQL" in ei.value.message


def test_serve_says_why_it_cannot_start(tmp_path: Path) -> None:
    conf = tmp_path / "wxnet.toml"
    dsn = f"postgresql://wx:secret@127.0.0.1:{free_port()}/wx"
    conf.write_text(f'[store]\nkind = "postgres"\ndsn = "{dsn}"\ntimeout = 2.0\n')
    res = subprocess.run(
        [sys.executable, "-m", "wxnet", "serve", "--config", str(conf), "--data",
         str(tmp_path / "var"), "--long-port", "0", "--http-port", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode != 0
    assert "cannot start: the store is unavailable (cannot connect to PostgreSQL" in res.stderr
    assert "Traceback" not in res.stderr and "secret" not in res.stderr


@pytest.fixture
def own_pg() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test alone (it is stopped and started again)."""
    srv = PostgresServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.close()


async def alice_and_bob(own_pg: PostgresServer, tmp_path: Path) -> tuple[Server, Device, Device]:
    """A server on a fresh database of ``own_pg`` (store timeout 3 s), and alice and bob
    logged in on it as contacts."""
    cfg = ServerConfig(
        host="127.0.0.1",
        long_port=0,
        http_port=0,
        data=tmp_path / "var",
        store=StoreConfig(kind="postgres", dsn=own_pg.new_database(), timeout=3),
        sync=EngineConfig(contacts="open"),
    )
    srv = await start_server(cfg)
    try:
        for name in ("alice", "bob"):
            await srv.engine.add_user(name, "secret1")
        a = await Device.login(srv.long_port, "alice")
        b = await Device.login(srv.long_port, "bob")
        r = await a.call("verifyuser", pb.AddContactRequest(user_name="bob"), pb.AddContactResponse)
        assert r.base.ret == 0
    except BaseException:
        await srv.close()
        raise
    return srv, a, b


async def test_sends_fail_cleanly_while_postgres_is_down(
    own_pg: PostgresServer, tmp_path: Path
) -> None:
    srv, a, b = await alice_and_bob(own_pg, tmp_path)
    try:
        assert (await a.send("bob", "before", "c1")).msg_id
        await asyncio.to_thread(own_pg.stop, "immediate")
        down = await a.call(
            "newsendmsg",
            pb.SendMsgRequest(
                list=[pb.MicroMsg(to_user="bob", content="down", msg_type=1, client_msg_id="c2")]
            ),
            pb.SendMsgResponse,
        )
        assert down.base.ret == MMRet.ERR_SYS and "store is unavailable" in down.base.err_msg
        assert not any(x.msg_id for x in down.list)  # nothing reported as sent
        await asyncio.to_thread(own_pg.start)
        # the client's retry (same ClientMsgId) is stored once; the pool reconnects
        for _ in range(3):  # the pool's dead connections each fail once, then are replaced
            again = await a.call(
                "newsendmsg",
                pb.SendMsgRequest(
                    list=[
                        pb.MicroMsg(to_user="bob", content="down", msg_type=1, client_msg_id="c2")
                    ]
                ),
                pb.SendMsgResponse,
            )
            if again.base.ret == 0:
                break
            assert again.base.ret == MMRet.ERR_SYS
        assert again.base.ret == 0 and again.list[0].msg_id
        texts = [m.content for m in await b.messages()]
        assert texts == ["before", "down"]
        await a.close()
        await b.close()
    finally:
        await srv.close()


async def test_user_add_goes_to_the_configured_store(config: ServerConfig, tmp_path: Path) -> None:
    conf = tmp_path / "wxnet.toml"
    conf.write_text(f'[store]\nkind = "postgres"\ndsn = "{config.store.dsn}"\n')
    argv = [sys.executable, "-m", "wxnet", "user", "add", "dave", "--password", "secret1",
            "--config", str(conf), "--data", str(tmp_path / "var")]  # fmt: skip
    res = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    again = await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, timeout=60
    )
    assert again.returncode != 0 and "already exists" in again.stderr
    srv = await start_server(config)
    try:
        d = await Device.login(srv.long_port, "dave")
        await d.close()
    finally:
        await srv.close()


async def test_postgres_restart_under_load_exactly_once(
    own_pg: PostgresServer, tmp_path: Path
) -> None:
    """Four senders while PostgreSQL stops and starts again: every send is acked or
    answered ERR_SYS; after the restart the unacked ones are sent again (same
    ClientMsgId); the recipient gets every message exactly once, acked ids unchanged."""
    srv, a, b = await alice_and_bob(own_pg, tmp_path)
    try:
        acked: dict[str, int] = {}
        failed: set[str] = set()
        stop = asyncio.Event()

        async def send(cid: str) -> bool:
            out = await a.call(
                "newsendmsg",
                pb.SendMsgRequest(
                    list=[pb.MicroMsg(to_user="bob", content=cid, msg_type=1, client_msg_id=cid)]
                ),
                pb.SendMsgResponse,
            )
            if out.base.ret == 0 and out.list[0].ret == 0:
                assert acked.get(cid, out.list[0].msg_id) == out.list[0].msg_id
                acked[cid] = out.list[0].msg_id
                failed.discard(cid)
                return True
            assert out.base.ret == MMRet.ERR_SYS, out.base.err_msg
            assert not any(x.msg_id for x in out.list)
            failed.add(cid)
            return False

        async def sender(w: int) -> None:
            i = 0
            while not stop.is_set():
                await send(f"w{w}-{i}")
                i += 1

        async def until(pred: Callable[[], bool]) -> None:
            async def poll() -> None:
                while not pred():
                    await asyncio.sleep(0.01)  # the senders' progress, checked (as test_durability)

            await wait_for(poll(), 60)

        workers = [asyncio.ensure_future(sender(w)) for w in range(4)]
        await until(lambda: len(acked) >= 100)
        await asyncio.to_thread(own_pg.stop, "immediate")
        await until(lambda: len(failed) >= 4)
        await asyncio.to_thread(own_pg.start)
        n = len(acked)
        await until(lambda: len(acked) >= n + 100)
        stop.set()
        await asyncio.gather(*workers)
        for cid in sorted(failed):  # the client's retries
            for _ in range(5):
                if await send(cid):
                    break
        assert not failed
        got = [m.content for m in await b.messages()]
        assert sorted(got) == sorted(acked) and len(got) == len(set(got))  # exactly once
        await a.close()
        await b.close()
    finally:
        await srv.close()


async def test_log_tail_of_one_process_never_hides_another_process_s_entries(pg_dsn: str) -> None:
    """Two stores on one database (two processes): each answers newsyncs from its log
    tail only when the tail reaches the head PostgreSQL has; the entries it publishes
    carry the seqs PostgreSQL gave them (duplicates skipped), and a read always returns
    what a store with no tail at all returns."""
    from wxnet.sync.engine import profile_item
    from wxnet.sync.pg_store import PostgresStore
    from wxnet.sync.store import Append, Changes, NewMessage

    def msg(cid: str, rcpts: list[int]) -> NewMessage:
        return NewMessage(cid, "bob", 1, None, rcpts, lambda mid, ct: f"{cid}:{mid}".encode())

    seen: list[Changes] = []
    a = PostgresStore(dsn=pg_dsn, profile_item=profile_item)
    b = PostgresStore(dsn=pg_dsn, profile_item=profile_item)
    plain = PostgresStore(dsn=pg_dsn, profile_item=profile_item, tail_items=0)
    await a.start(seen.append)
    await b.start(lambda _ch: None)
    await plain.start(lambda _ch: None)
    try:
        alice = await a.create_account("alice", "x", "Alice", 1)
        bob = await a.create_account("bob", "x", "Bob", 1)
        both = [alice, bob]

        async def read(st: PostgresStore, after: int) -> list[tuple[int, int, bytes]]:
            await st.head(bob, 2, fresh=True)  # as newsync does first
            items, _ = await st.read_log(bob, [(2, after)], 100, 1 << 20)
            return items

        # one group: two messages and a duplicate of the first, then a retry of it
        await asyncio.gather(
            a.store_messages(alice, [msg("c1", both), msg("c2", both)], 2),
            a.store_messages(alice, [msg("c1", both)], 2),
        )
        await a.store_messages(alice, [msg("c1", both), msg("c3", both)], 3)
        await a.append([Append([bob], 2, b"appended")])
        entries = [e for ch in seen for e in ch.entries if e[0] == bob]
        truth = await read(plain, 0)
        assert [(k, s, body) for _, k, s, body in entries] == truth
        assert [body.split(b":")[0] for _, _, body in truth] == [b"c1", b"c2", b"c3", b"appended"]
        hits = a.tail.hits
        assert await read(a, 1) == truth[1:] and a.tail.hits == hits + 1  # from the tail
        # the other process appends: the tail no longer reaches the head, PostgreSQL answers
        await b.store_messages(alice, [msg("b1", both)], 4)
        misses = a.tail.misses
        assert await read(a, 1) == (await read(plain, 1)) and a.tail.misses == misses + 1
        assert (await read(a, 1))[-1][2].startswith(b"b1:")
        # and after this process writes again, still nothing is skipped
        await a.store_messages(alice, [msg("c4", both)], 5)
        for after in range(6):
            assert await read(a, after) == await read(plain, after)
    finally:
        for st in (a, b, plain):
            await st.aclose()
