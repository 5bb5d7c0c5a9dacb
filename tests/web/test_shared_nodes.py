"""The web side on two nodes that share one PostgreSQL and one Redis (in one test
process): a QR login made on node A is polled on node B (the scan, on A, wakes B's held
poll over the bus) and redeemed on A; a synccheck held on B wakes when a message is
stored through A; a chunked upload sends its chunks to both nodes; the per-address rate
limit and the failed-login throttle count both nodes together, and the limit falls back
to per-node counting (counted) while Redis is away."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.engines import RedisServer
from tests.web.conftest import CGI, WAIT, Mobile, WebClient, base_url, png_bytes
from wxnet.proto import web as wp
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMRet
from wxnet.server.app import Server, start_server
from wxnet.server.config import BusConfig, ServerConfig, StoreConfig
from wxnet.server.web.config import WebConfig
from wxnet.sync.engine import EngineConfig

BURST = 6  # /jslogin's burst per address in these tests


@pytest.fixture
async def nodes(tmp_path: Path, pg_dsn: str, redis: RedisServer) -> AsyncIterator[list[Server]]:
    out: list[Server] = []
    try:
        for _ in range(2):
            cfg = ServerConfig(
                host="127.0.0.1",
                long_port=0,
                http_port=0,
                data=tmp_path / "shared",  # media and the web spool: both nodes see it
                store=StoreConfig(kind="postgres", dsn=pg_dsn),
                bus=BusConfig(kind="redis", url=redis.url, shards=16),
                sync=EngineConfig(contacts="open", login_backoff_base=60.0),
                synccheck_max_wait=10.0,
                web=WebConfig(jslogin_burst=BURST, jslogin_rate=0.001, login_recheck=60.0),
            )
            out.append(await start_server(cfg))
        for user in ("alice", "bob"):
            await out[0].engine.add_user(user, "secret1", user.title())
        yield out
    finally:
        for srv in out:
            await srv.close()


async def get_text(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as r:
        return await r.text()


async def web_login_across(
    http: aiohttp.ClientSession, a: Server, b: Server, phone: Mobile
) -> WebClient:
    """jslogin on A, the poll held on B woken by the scan (through A), confirmed, the
    ticket redeemed on A: a web client of ``phone``'s account, on node B."""
    code, uuid = wp.parse_qrlogin(await get_text(http, f"{base_url(a)}/jslogin?appid=x&fun=new"))
    assert code == 200
    poll = f"{base_url(b)}{CGI}/login?uuid={uuid}&tip=1"
    first = asyncio.create_task(get_text(http, poll))
    assert await phone.scan(uuid, confirm=False) == 0  # the phone is on node A
    assert wp.parse_login_poll(await asyncio.wait_for(first, WAIT)).code == 201
    held = asyncio.create_task(get_text(http, poll))
    assert await phone.scan(uuid) == 0
    answer = wp.parse_login_poll(await asyncio.wait_for(held, WAIT))
    assert answer.code == 200
    redirect = answer.redirect_uri.replace(base_url(b), base_url(a))  # redeemed on A
    async with http.get(redirect, allow_redirects=False) as r:
        assert r.status == 301
        t = wp.parse_login_ticket(await r.text())
    async with http.get(redirect, allow_redirects=False) as r:
        assert "1203" in await r.text()  # the ticket is spent, on every node
    web = WebClient(http, base_url(b), t.wxuin, t.wxsid, t.skey, t.pass_ticket)
    init = await web.post("/webwxinit", {})
    assert init["BaseResponse"]["Ret"] == 0, init
    web.me, web.sync_key = init["User"]["UserName"], init["SyncKey"]
    return web


async def test_qr_login_on_a_polled_on_b_and_synccheck_across(nodes: list[Server]) -> None:
    a, b = nodes
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        alice = await Mobile(http, base_url(a), "alice").login()
        await alice.add("bob")
        bob = await Mobile(http, base_url(a), "bob").login()
        web = await web_login_across(http, a, b, alice)
        # a synccheck held on node B wakes when bob's message is stored through node A
        q = wp.parse_web_synckey(web.sync_key).to_query()
        check = asyncio.create_task(
            web.get_text(f"{CGI}/synccheck?uin={web.uin}&sid={web.sid}&synckey={q}&r=1")
        )
        bus_b = b.bus
        assert bus_b is not None
        await asyncio.wait_for(bus_b.until_subscribed(web.uin), WAIT)  # B holds alice
        await bob.send("alice", "through node A")
        retcode, selector = wp.parse_synccheck(await asyncio.wait_for(check, WAIT))
        assert retcode == 0 and selector != 0
        out = await web.sync()
        assert [m["Content"] for m in out["AddMsgList"]] == ["through node A"]


async def test_chunks_of_one_upload_on_two_nodes(nodes: list[Server]) -> None:
    a, b = nodes
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        alice = await Mobile(http, base_url(a), "alice").login()
        await alice.add("bob")
        bob = await Mobile(http, base_url(a), "bob").login()
        web = await web_login_across(http, a, b, alice)
        img = png_bytes(size=600) + os.urandom(700_000)  # two chunks of 512 KiB at most
        chunk = 512 << 10
        parts = [img[:chunk], img[chunk:]]
        media = ""
        for i, (node, part) in enumerate(zip((a, b), parts, strict=True)):
            form = aiohttp.FormData()
            form.add_field("name", "x.png")
            form.add_field("size", str(len(img)))
            form.add_field("chunks", "2")
            form.add_field("chunk", str(i))
            form.add_field(
                "uploadmediarequest",
                json.dumps({"BaseRequest": web.br(), "ClientMediaId": 7, "TotalLen": len(img)}),
            )
            form.add_field("filename", part, filename="x.png", content_type="image/png")
            async with http.post(f"{base_url(node)}{CGI}/webwxuploadmedia?f=json", data=form) as r:
                out = json.loads(await r.text())
            assert out["BaseResponse"]["Ret"] == 0, out
            assert media in ("", out["MediaId"])  # one upload, whichever node took it
            media = out["MediaId"]
        sender = dataclasses.replace(web, base=base_url(a))  # sent through node A
        msg = {"Type": 3, "MediaId": media, "ToUserName": wp.web_user_name("bob")}
        out = await sender.post("/webwxsendmsgimg", {"Msg": msg})
        assert out["BaseResponse"]["Ret"] == 0, out
        got = await bob.wait_msg(lambda m: m.msg_type == 3)
        assert got.media_len == len(img)


async def test_rate_limit_counts_both_nodes_and_falls_back_without_redis(
    nodes: list[Server], redis: RedisServer
) -> None:
    a, b = nodes

    async def jslogin(srv: Server) -> int:
        conn = aiohttp.TCPConnector(local_addr=("127.0.6.1", 0))
        async with (
            aiohttp.ClientSession(connector=conn) as h,
            h.get(f"{base_url(srv)}/jslogin?appid=x&fun=new") as r,
        ):
            return r.status

    codes = [await jslogin(a if i % 2 else b) for i in range(BURST + 2)]
    assert codes == [200] * BURST + [429] * 2  # one bucket for both nodes, not one each
    assert await jslogin(a) == 429 and await jslogin(b) == 429
    await asyncio.to_thread(redis.stop)
    # Redis is away: each node counts on its own (fails open to the per-process
    # buckets, never to no limit), and says so in its metrics
    assert [await jslogin(a) for _ in range(BURST + 1)] == [200] * BURST + [429]
    counters = a.shared_counters
    assert counters is not None and counters.fallbacks["jslogin"] == BURST + 1


async def test_failed_logins_count_on_both_nodes(nodes: list[Server]) -> None:
    """Five wrong passwords for one account from one address, spread over both nodes:
    the sixth attempt is throttled on either (each node alone saw at most three)."""
    async with aiohttp.ClientSession() as http:

        async def manualauth(srv: Server, password: str) -> int:
            req = pb.ManualAuthRequest(
                base=pb.BaseRequest(device_id="phone-alice"), user_name="alice",
                password=password, device_name="phone",
            )  # fmt: skip
            url = f"{base_url(srv)}/cgi-bin/micromsg-bin/manualauth"
            async with http.post(url, data=req.SerializeToString()) as r:
                return int(pb.ManualAuthResponse.FromString(await r.read()).base.ret)

        rets = [await manualauth(nodes[i % 2], "wrong-password") for i in range(5)]
        assert rets == [MMRet.ERR_PASSWORD] * 5
        assert await manualauth(nodes[1], "secret1") == MMRet.ERR_FREQ_LIMITED
        assert await manualauth(nodes[0], "secret1") == MMRet.ERR_FREQ_LIMITED
