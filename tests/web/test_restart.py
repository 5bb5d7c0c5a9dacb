"""Web sessions are in the store: they survive a restart of the server (on SQLite as on
PostgreSQL), and itchat with ``hotReload=True`` resumes without a new QR code."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.web.clients import HARNESS, Harness, python_client, wechat4u_dir
from tests.web.conftest import Mobile, WebClient, base_url, web_api
from wxnet.proto import web as wp
from wxnet.server.app import Server, start_server
from wxnet.server.config import ServerConfig, StoreConfig
from wxnet.server.web.login import WebSessions
from wxnet.sync.store import WebSessionRow


class Restartable:
    """A server that can be stopped and started again on the same ports and store."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.server: Server | None = None

    async def start(self) -> Server:
        self.server = await start_server(self.config)
        self.config = dataclasses.replace(
            self.config, http_port=self.server.http_port, long_port=self.server.long_port
        )
        return self.server

    async def restart(self) -> Server:
        assert self.server is not None
        await self.server.close()
        return await self.start()

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def node(
    request: pytest.FixtureRequest, web_config: ServerConfig
) -> AsyncIterator[Restartable]:
    cfg = web_config
    if request.param == "postgres":
        dsn = request.getfixturevalue("pg_server").new_database()
        cfg = dataclasses.replace(cfg, store=StoreConfig(kind="postgres", dsn=dsn))
    r = Restartable(cfg)
    srv = await r.start()
    for name in ("alice", "bob", "carol"):
        await srv.engine.add_user(name, "secret1", name.title())
    try:
        yield r
    finally:
        await r.close()


async def phones(srv: Server, http: aiohttp.ClientSession) -> tuple[Mobile, Mobile]:
    alice = await Mobile(http, base_url(srv), "alice").login()
    await alice.add("bob")
    bob = await Mobile(http, base_url(srv), "bob").login()
    return alice, bob


async def test_web_session_survives_a_restart(node: Restartable) -> None:
    srv = node.server
    assert srv is not None
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        alice, bob = await phones(srv, http)
        web = await WebClient(http, base_url(srv)).login(alice)
        srv = await node.restart()
        assert not web_api(srv).sessions.of_account(alice.uin)  # nothing in memory yet
        await bob.send("alice", "after the restart")
        m = await web.wait_msg(lambda m: m["Content"] == "after the restart")
        assert m["FromUserName"] == wp.web_user_name("bob")
        # logout is durable too: after another restart the session stays dead
        async with http.get(f"{base_url(srv)}/cgi-bin/mmwebwx-bin/webwxlogout") as r:
            assert r.status == 200
        srv = await node.restart()
        out = await web.post("/webwxsync", {"SyncKey": web.sync_key, "rr": -1})
        assert out["BaseResponse"]["Ret"] == wp.RET_LOGIN_ELSEWHERE


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["itchat", "itchat-uos"])
async def test_itchat_hot_reload_resumes_after_a_restart(
    web_config: ServerConfig, tmp_path: Path, flavour: str
) -> None:
    node = Restartable(web_config)
    srv = await node.start()
    for name in ("alice", "bob"):
        await srv.engine.add_user(name, "secret1", name.title())
    py = await asyncio.to_thread(python_client, flavour)
    argv = [str(py), str(HARNESS / "itchat_harness.py"), base_url(srv), str(tmp_path), "hot"]
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            alice, bob = await phones(srv, http)
            first = await Harness.start(flavour, argv, tmp_path)
            try:
                qr = await first.expect("qr")
                assert await alice.scan(qr["uuid"]) == 0
                await first.expect("login")
                await first.expect("ready")
            finally:
                await first.close()  # killed: no logout, the login stays in itchat.pkl
            assert (tmp_path / "itchat.pkl").exists()
            srv = await node.restart()
            second = await Harness.start(flavour, argv, tmp_path)
            try:
                await second.expect("login")
                assert not [e for e in second.events if e.get("event") == "qr"]
                await bob.send("alice", "hello again")
                m = await second.expect("message", lambda e: e.get("text") == "hello again")
                assert m["from"] == wp.web_user_name("bob")
            finally:
                await second.close()
    finally:
        await node.close()


@pytest.mark.slow
async def test_wechat4u_restart_resumes_after_a_restart(
    web_config: ServerConfig, tmp_path: Path
) -> None:
    """wechat4u's ``restart()`` (webwxinit again, as its recovery does) after the server
    restarted: no new QR code, and what was sent while it was down arrives exactly once."""
    node = Restartable(web_config)
    srv = await node.start()
    for name in ("alice", "bob"):
        await srv.engine.add_user(name, "secret1", name.title())
    d = await asyncio.to_thread(wechat4u_dir)
    argv = ["node", str(HARNESS / "wechat4u_harness.js"), base_url(srv)]
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            alice, bob = await phones(srv, http)
            bot = await Harness.start("wechat4u", argv, d, {"NODE_PATH": str(d / "node_modules")})
            try:
                qr = await bot.expect("qr")
                assert await alice.scan(qr["uuid"]) == 0
                await bot.expect("login")
                await bob.send("alice", "before")
                await bot.expect("message", lambda e: e.get("text") == "before")
                srv = await node.restart()
                await bob.send("alice", "between")
                await bot.expect("liberror")  # its poll failed: it retries in 2 s
                await bot.send(op="restart")
                await bot.expect("restarted")
                await bot.expect("login")  # restart() says so again
                await bob.send("alice", "after")
                await bot.expect("message", lambda e: e.get("text") == "after")
                assert not [e for e in bot.events if e.get("event") == "qr"]
                texts = [e.get("text") for e in bot.events if e.get("event") == "message"]
                # ("before" may come again if the server stopped before the client's next
                # poll presented the key after it: delivery is at least once)
                assert texts.count("between") == 1, bot.events
            finally:
                await bot.close()
    finally:
        await node.close()


class DictStore:
    """The three web-session methods of a Store, in a dict (for the pure WebSessions)."""

    def __init__(self) -> None:
        self.rows: dict[str, WebSessionRow] = {}

    async def save_web_session(self, row: WebSessionRow) -> None:
        self.rows[row.key] = row

    async def web_session(self, key: str) -> WebSessionRow | None:
        return self.rows.get(key)

    async def drop_web_sessions(self, before: float) -> int:
        gone = [k for k, r in self.rows.items() if r.expires < before]
        for k in gone:
            del self.rows[k]
        return len(gone)


async def test_sessions_evicted_for_room_are_saved_as_ended() -> None:
    store = DictStore()
    first = WebSessions(ttl=100, per_account=1, store=store)
    old = first.add(7, "alice", "Alice", "k1", 0.0)
    await first.save(old)
    new = first.add(7, "alice", "Alice", "k2", 1.0)  # ends the oldest to make room
    await first.save(new)
    other = WebSessions(ttl=100, per_account=1, store=store)  # another process
    assert (await other.lookup(7, new.wxsid, 2.0)) is not None
    gone = await other.lookup(7, old.wxsid, 2.0)
    assert gone is not None and not gone.alive
    assert await other.lookup(8, new.wxsid, 2.0) is None  # bound to its uin
    assert await other.sweep_store(500.0 + 3600) == 2  # past expiry and the grace


async def test_stored_rows_hold_no_key_of_the_session() -> None:
    store = DictStore()
    sessions = WebSessions(ttl=100, store=store)
    s = sessions.add(7, "alice", "Alice", "mobile-session-key-123", 0.0)
    await sessions.save(s)
    (row,) = store.rows.values()
    stored = repr(row)
    for secret in (s.wxsid, s.session_key, s.skey, s.pass_ticket, s.data_ticket):
        assert secret not in stored  # only the wxsid's hash and sealed values
    other = WebSessions(ttl=100, store=store)  # another process, handed the wxsid
    back = await other.lookup(7, s.wxsid, 1.0)
    assert back is not None
    assert (back.session_key, back.skey, back.pass_ticket, back.data_ticket) == (
        s.session_key,
        s.skey,
        s.pass_ticket,
        s.data_ticket,
    )


async def test_a_plain_row_of_an_older_wxnet_is_sealed_when_used() -> None:
    store = DictStore()
    wxsid = "w" * 22
    key = hashlib.sha256(wxsid.encode()).hexdigest()
    store.rows[key] = WebSessionRow(key, 7, "alice", "Alice", "plain-sk", "@crypt_x", "p", "d",
                                    100.0, True)  # fmt: skip
    s = await WebSessions(ttl=100, store=store).lookup(7, wxsid, 1.0)
    assert s is not None and s.session_key == "plain-sk" and s.skey == "@crypt_x"
    assert "plain-sk" not in repr(store.rows[key])
    again = await WebSessions(ttl=100, store=store).lookup(7, wxsid, 1.0)
    assert again is not None and again.session_key == "plain-sk"
