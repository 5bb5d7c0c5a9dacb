"""PostgreSQL schema 2 -> 3 (S17 inside ``wx_commit``): a store made by the schema-2
DDL, with an account, a session and a message written by its ``wx_commit``, is brought
to schema 3 by ``wxnet store init --config`` and by a server's start, keeps its data and
sessions, applies S17 from then on, and refuses a schema-2 process's group commit."""

from __future__ import annotations

import asyncio
import io as io_
from pathlib import Path

import asyncpg
import pytest

from tests.sync.test_engine import PW_HASH, Clock, parse_cmd_item, text
from wxnet.cli.common import IO
from wxnet.cli.main import run
from wxnet.proto.synckey import KEY_MSG
from wxnet.sync.engine import Engine, EngineConfig, profile_item
from wxnet.sync.pg_schema import ID_BLOCK, SCHEMA_VERSION
from wxnet.sync.pg_store import PostgresStore
from wxnet.sync.sqlite_store import FIRST_MSG_ID
from wxnet.sync.store import session_key_hash

SCHEMA_2 = Path(__file__).parent.parent / "data" / "pg_schema_2.sql"
OLD_COMMIT = "SELECT * FROM wx_commit($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)"
T0 = 1_700_000_000


async def make_schema_2_store(dsn: str) -> tuple[int, int]:
    """A schema-2 store as a schema-2 wxnet left it: alice (with a phone session, key
    "old-phone") and bob, and one message of alice's to bob that its ``wx_commit`` wrote
    to both message logs (schema 2 did not apply S17). Returns (alice, bob)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(SCHEMA_2.read_text())
            await conn.execute("INSERT INTO meta VALUES ('schema_version', '2')")
            uins = []
            for name in ("alice", "bob"):  # as create_account did
                uin = await conn.fetchval(
                    "INSERT INTO accounts (user_name, nick_name, pw_hash, created)"
                    " VALUES ($1,$1,$2,$3) RETURNING uin",
                    name,
                    PW_HASH,
                    T0,
                )
                item = await conn.fetchval(
                    "INSERT INTO items (body) VALUES ($1) RETURNING id",
                    profile_item(uin, name, name),
                )
                await conn.execute("INSERT INTO sync_log VALUES ($1, 1, 1, $2)", uin, item)
                await conn.executemany(
                    "INSERT INTO heads VALUES ($1,$2,$3)",
                    [(uin, k, 1 if k == 1 else 0) for k in (1, 2, 3, 11)],
                )
                uins.append(int(uin))
            alice, bob = uins
            await conn.execute(
                "INSERT INTO contacts VALUES ($1,'bob',$3), ($2,'alice',$3)", alice, bob, T0
            )
            await conn.execute(
                "INSERT INTO sessions VALUES ($1,$2,'phone','phone','mobile',$3,$4)",
                session_key_hash("old-phone"),
                alice,
                T0,
                T0 + 86400,
            )
        body = b"placeholder"  # the log item: any body; newinit below reads it back
        block = await conn.fetchval("SELECT nextval('msg_id_blocks')")  # as a process did
        rows = await conn.fetch(
            OLD_COMMIT,
            [FIRST_MSG_ID + block * ID_BLOCK], [alice], ["old1"], ["bob"], [1], [T0], [None],
            [KEY_MSG], [body], [1], [1, 1], [alice, bob],
        )  # fmt: skip
        assert sorted((r[1], r[2], r[3]) for r in rows if r[0] == 1) == [
            (alice, KEY_MSG, 1),
            (bob, KEY_MSG, 1),
        ]
        return alice, bob
    finally:
        await conn.close()


def test_store_init_migrates_a_schema_2_store(pg_dsn: str, tmp_path: Path) -> None:
    asyncio.run(make_schema_2_store(pg_dsn))
    conf = tmp_path / "wxnet.toml"
    conf.write_text(f'[store]\nkind = "postgres"\ndsn = "{pg_dsn}"\n')

    def store(*args: str) -> tuple[int, str]:
        out, err = io_.StringIO(), io_.StringIO()
        rc = run(["store", *args, "--config", str(conf)], IO(out, err))
        return rc, out.getvalue() + err.getvalue()

    assert SCHEMA_VERSION == 3
    rc, out = store("version")
    assert rc == 0 and out.strip().endswith("schema 2 (this wxnet migrates it to 3)"), out
    rc, out = store("init")
    assert rc == 0 and out.strip().endswith("migrated from schema 2 to 3"), out
    rc, out = store("init")
    assert rc == 0 and out.strip().endswith("exists (schema 3)"), out
    rc, out = store("version")
    assert rc == 0 and out.strip().endswith("schema 3"), out


async def test_a_schema_2_store_serves_on_with_s17(pg_dsn: str, tmp_path: Path) -> None:
    alice, bob = await make_schema_2_store(pg_dsn)
    cfg = EngineConfig(contacts="open")
    clock = Clock()
    clock.now = T0 + 10
    store = PostgresStore(pg_dsn, profile_item=profile_item)
    e = Engine(tmp_path / "var", cfg, clock=clock, store=store)
    await e.start()
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert e.store.schema_version() == 3
        assert await conn.fetchval("SELECT v FROM meta WHERE k='schema_version'") == "3"
        # one wx_commit, the new one: a schema-2 process's group commit fails (no ack)
        nargs = await conn.fetch(
            "SELECT pronargs FROM pg_proc WHERE proname='wx_commit'"
            " AND pronamespace=current_schema()::regnamespace"
        )
        assert [r[0] for r in nargs] == [16]
        with pytest.raises(asyncpg.UndefinedFunctionError):
            await conn.fetch(OLD_COMMIT, [], [], [], [], [], [], [], [], [], [], [], [])

        phone = await e.session("old-phone", alice)  # the old session is still valid
        assert phone.device_id == "phone"
        (res,) = await e.send(phone, [text("bob", "after the upgrade", "new1")])
        assert res.ret == 0
        assert await e.store.head(alice, KEY_MSG, fresh=True) == 1  # S17: no new SyncKey
        assert await e.store.head(bob, KEY_MSG, fresh=True) == 2

        pad = await e.create_session(alice, "pad", "pad")
        init = await e.newinit(pad)
        got = [
            parse_cmd_item(k, s, b).add_msg.msg_id
            for k, s, b in init.items
            if k == KEY_MSG and parse_cmd_item(k, s, b).WhichOneof("body") == "add_msg"
        ]
        assert len(got) == 1 and got[0] == res.msg_id  # the new one, from the sent log
        assert [s for k, s, _ in init.items if k == KEY_MSG] == [1, 0]  # old entry, sent log
        history = await e.store.message_history(alice, 0, 10)
        assert [b for _, b in history][1] == b"placeholder"
        assert len(history) == 2
        (res2,) = await e.send(phone, [text("bob", "two devices", "new2")])
        assert await e.store.head(alice, KEY_MSG, fresh=True) == 2  # the pad needs it
        assert res2.msg_id > res.msg_id
    finally:
        await conn.close()
        await e.aclose()
        e.close()
