"""``wxnet store migrate --from DIR --to DSN`` and ``wxnet store init --config`` on a
real SQLite store (users, contacts, a remark and pin, a group, texts, an image, a revoke, a partial
upload, sessions, a web session) and a real PostgreSQL: interrupted and resumed, verified
by counts and by a sync of every account, then served from PostgreSQL with the same
data directory."""

from __future__ import annotations

import asyncio
import dataclasses
import io as io_
from pathlib import Path

import pytest

from tests.server.test_media import chunk, png
from tests.server.test_messaging import befriend
from tests.server.wire import Device
from wxnet.cli.common import IO
from wxnet.cli.main import run
from wxnet.proto import wxnet_pb2 as pb
from wxnet.server.app import start_server
from wxnet.server.config import ServerConfig, StoreConfig
from wxnet.sync.engine import Engine
from wxnet.sync.migrate import MigrateError, Progress, migrate, verify
from wxnet.sync.pg_schema import SCHEMA_VERSION
from wxnet.sync.store import WebSessionRow


async def fill(config: ServerConfig) -> dict[str, int]:
    """A store with something in every table; returns ids to look for after the move."""
    srv = await start_server(config)
    try:
        for name in ("alice", "bob", "carol"):
            await srv.engine.add_user(name, "secret1", name.title())
        a = await Device.login(srv.long_port, "alice")
        b = await Device.login(srv.long_port, "bob")
        c = await Device.login(srv.long_port, "carol")
        await befriend(a, "bob")
        await befriend(a, "carol")
        for i in range(5):
            assert (await a.send("bob", f"text {i}", f"t{i}")).msg_id
        gone = await a.send("bob", "oops", "r1")
        rv = await a.call(
            "revokemsg", pb.RevokeMsgRequest(msg_id=gone.msg_id), pb.RevokeMsgResponse
        )
        assert rv.base.ret == 0, rv.base.err_msg
        room = await a.call(
            "createchatroom",
            pb.CreateChatRoomRequest(topic="team", members=["bob", "carol"]),
            pb.CreateChatRoomResponse,
        )
        assert room.base.ret == 0, room.base.err_msg
        await c.sync()
        assert (await c.send(room.chatroom.user_name, "group hello", "g1")).msg_id
        data = png(120, 90)  # one chunk (at most 64 KiB)
        img = await a.call(
            "uploadmsgimg", chunk("bob", "img-1", data, 0, len(data)), pb.UploadMsgImgResponse
        )
        assert img.base.ret == 0 and img.msg_id
        half = await a.call(  # an unfinished upload: its row and ranges move too
            "uploadmsgimg", chunk("bob", "img-2", data, 0, 1000), pb.UploadMsgImgResponse
        )
        assert half.base.ret == 0 and half.msg_id == 0
        await b.sync()  # bob's device commits a key (devices table)
        await srv.engine.store.set_contact_mark(a.acc.uin, "bob", "Bobby", True, 1, [])
        await srv.engine.store.save_web_session(
            WebSessionRow("k" * 64, a.acc.uin, "alice", "Alice", "sk", "sk2", "pt", "dt", 9e9, True)
        )
        for d in (a, b, c):
            await d.close()
        return {"image": img.msg_id, "image_len": len(data), "last": img.msg_id}
    finally:
        await srv.close()


async def test_migrate_resumes_verifies_and_serves(
    config: ServerConfig, pg_dsn: str, tmp_path: Path
) -> None:
    ids = await fill(config)
    source = Path(config.data) / "wxnet.db"
    seen: list[Progress] = []

    def interrupt(p: Progress) -> None:
        seen.append(p)
        if p.table == "items" and not p.done:
            raise KeyboardInterrupt  # Ctrl-C in the middle of a table

    with pytest.raises(KeyboardInterrupt):
        await migrate(source, pg_dsn, batch=3, on_progress=interrupt)
    assert any(p.table == "messages" and p.done for p in seen)
    out_, err_ = io_.StringIO(), io_.StringIO()
    argv = ["store", "migrate", "--from", str(config.data), "--to", pg_dsn, "--batch", "3"]
    assert await asyncio.to_thread(run, argv, IO(out_, err_)) == 0, err_.getvalue()
    out, err = out_.getvalue(), err_.getvalue()
    assert "verified: every table has the same rows" in out
    assert "all 3 accounts" in out
    assert "sync_log      [##############################]" in err  # the progress bar
    assert await verify(source, pg_dsn) == []  # resumed: nothing copied twice

    pg = dataclasses.replace(config, store=StoreConfig(kind="postgres", dsn=pg_dsn))
    srv = await start_server(pg)  # the same data directory: its media files
    try:
        b = await Device.login(srv.long_port, "bob")
        got = await b.messages()
        assert [m.content for m in got if m.msg_type == 1][:5] == [f"text {i}" for i in range(5)]
        assert ids["image"] in [m.msg_id for m in got if m.msg_type == 3]
        r = await b.call(
            "getmsgimg",
            pb.DownloadMsgImgRequest(msg_id=ids["image"], start_pos=0, data_len=1 << 20),
            pb.DownloadMsgImgResponse,
        )
        assert r.base.ret == 0 and len(r.data) == ids["image_len"]
        a = await Device.login(srv.long_port, "alice")
        new = await a.send("bob", "after the move", "n1")
        assert new.msg_id > ids["last"]  # the id sequences moved past the copied ids
        assert [m.content for m in await b.messages()] == ["after the move"]
        again = await a.send("bob", "text 0", "t0")  # dedup survived the move
        assert again.msg_id != new.msg_id and await b.messages() == []
        assert (await srv.engine.store.web_session("k" * 64)) is not None
        assert len(await srv.engine.store.uploads_of(a.acc.uin)) == 1
        assert await srv.engine.store.contact_marks(a.acc.uin) == {"bob": ("Bobby", True)}
        await a.close()
        await b.close()
    finally:
        await srv.close()
    # the server wrote to PostgreSQL since: verify sees the stores differ
    problems = await verify(source, pg_dsn)
    assert any(p.startswith("messages: ") for p in problems), problems
    assert any("its log differs" in p for p in problems), problems
    other = config.data.parent / "other"  # another store cannot go into this target
    engine = Engine(other, config.sync)
    await engine.start()
    await engine.add_user("dave", "secret1")
    await engine.aclose()
    with pytest.raises(MigrateError, match="holds a migration from"):
        await migrate(other / "wxnet.db", pg_dsn)


def test_store_init_and_version_for_postgres(pg_dsn: str, tmp_path: Path) -> None:
    conf = tmp_path / "wxnet.toml"
    conf.write_text(f'[store]\nkind = "postgres"\ndsn = "{pg_dsn}"\n')

    def store(*args: str) -> tuple[int, str, str]:
        out, err = io_.StringIO(), io_.StringIO()
        rc = run(["store", *args, "--config", str(conf)], IO(out, err))
        return rc, out.getvalue(), err.getvalue()

    rc, _, err = store("version")
    assert rc == 1 and "no store in" in err
    rc, out, _ = store("init")
    assert rc == 0 and "created store postgresql://" in out
    rc, out, _ = store("init")
    assert rc == 0 and f"exists (schema {SCHEMA_VERSION})" in out
    rc, out, _ = store("version")
    assert rc == 0 and out.strip().endswith(f"schema {SCHEMA_VERSION}")
