"""The short link (HTTP), newgetdns, health and metrics; a client that cannot reach the
long link works fully over HTTP (S12)."""

from __future__ import annotations

import asyncio
import io
import os
import xml.etree.ElementTree as ET

import aiohttp

from tests.server.wire import ShortClient, http_session
from wxnet import __version__
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.newgetdns import parse_newgetdns
from wxnet.proto.synckey import SyncKey
from wxnet.server.app import Server, start_server
from wxnet.server.config import ServerConfig
from wxnet.sync.schema import SCHEMA_VERSION


def url(server: Server) -> str:
    return f"http://127.0.0.1:{server.http_port}"


async def login(sc: ShortClient, user: str, device: str) -> pb.BaseRequest:
    r = await sc.call(
        "manualauth",
        pb.ManualAuthRequest(
            base=pb.BaseRequest(device_id=device), user_name=user, password="secret1"
        ),
        pb.ManualAuthResponse,
    )
    assert r.base.ret == 0, r.base.err_msg
    return pb.BaseRequest(session_key=r.session_key, uin=r.uin, device_id=device)


async def test_everything_over_http_with_long_poll(server: Server) -> None:
    async with http_session() as http:
        sc = ShortClient(url(server), http)
        a = await login(sc, "alice", "a-http")
        b = await login(sc, "bob", "b-http")
        add = await sc.call(
            "verifyuser", pb.AddContactRequest(base=a, user_name="bob"), pb.AddContactResponse
        )
        assert add.base.ret == 0
        sync = await sc.call("newsync", pb.NewSyncRequest(base=b), pb.NewSyncResponse)
        key = sync.key_buf
        # bob long-polls; alice's send wakes him up before the timeout
        poll = asyncio.ensure_future(
            sc.call(
                "newsynccheck",
                pb.SyncCheckRequest(base=b, key_buf=key, timeout_ms=20000),
                pb.SyncCheckResponse,
            )
        )
        await asyncio.sleep(0)
        sent = await sc.call(
            "newsendmsg",
            pb.SendMsgRequest(
                base=a,
                list=[
                    pb.MicroMsg(to_user="bob", content="over http", msg_type=1, client_msg_id="h1")
                ],
            ),
            pb.SendMsgResponse,
        )
        assert sent.list[0].ret == 0
        woke = await asyncio.wait_for(poll, 10)
        assert woke.selector & 2
        got = await sc.call("newsync", pb.NewSyncRequest(base=b, key_buf=key), pb.NewSyncResponse)
        assert [i.add_msg.content for i in got.cmd_list] == ["over http"]
        # nothing new: the poll returns 0 at its (short) timeout
        idle = await sc.call(
            "newsynccheck",
            pb.SyncCheckRequest(base=b, key_buf=got.key_buf, timeout_ms=50),
            pb.SyncCheckResponse,
        )
        assert idle.base.ret == 0 and idle.selector == 0
        contacts = await sc.call("getcontact", pb.GetContactRequest(base=b), pb.GetContactResponse)
        assert [c.user_name for c in contacts.contacts] == ["alice"]
        out = await sc.call("logout", pb.LogoutRequest(base=b), pb.LogoutResponse)
        assert out.base.ret == 0
        after = await sc.call("getprofile", pb.GetProfileRequest(base=b), pb.GetProfileResponse)
        assert after.base.ret == -13


async def test_http_errors(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        base = url(server)
        async with http.post(f"{base}/cgi-bin/micromsg-bin/nosuch", data=b"") as r:
            assert r.status == 404 and "unknown CGI" in await r.text()
        async with http.post(f"{base}/cgi-bin/micromsg-bin/newsync", data=b"\xff\xff\xff") as r:
            assert r.status == 400 and "NewSyncRequest" in await r.text()
        async with http.post(f"{base}/cgi-bin/micromsg-bin/identify", data=b"") as r:
            assert r.status == 404
        big = b"\0" * (server.config.max_request_bytes + 1)
        async with http.post(f"{base}/cgi-bin/micromsg-bin/newsync", data=io.BytesIO(big)) as r:
            assert r.status == 413
        async with http.get(f"{base}/healthz") as r:
            assert r.status == 200
            assert await r.json() == {
                "status": "ok",
                "version": __version__,
                "schema": SCHEMA_VERSION,
                "pid": os.getpid(),  # the process that answered (in-process server here)
            }


async def test_newgetdns_advertises_where_we_listen(server: Server) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{url(server)}/cgi-bin/micromsg-bin/newgetdns?uin=0&clientversion=1&scene=0&net=1"
        ) as r,
    ):
        assert r.status == 200 and r.content_type == "text/xml"
        body = await r.read()
    root = ET.fromstring(body)
    assert root.tag == "dns" and root.findtext("retcode") == "0"
    doc = parse_newgetdns(body)
    by_name = {d.name: d for d in doc.domains}
    assert by_name["long.wxnet.local"].ports == (server.long_port,)
    assert by_name["short.wxnet.local"].ports == (server.http_port,)
    assert by_name["long.wxnet.local"].ips == ("127.0.0.1",)
    assert doc.client_ip == "127.0.0.1"


async def test_metrics_count_requests_and_links(server: Server) -> None:
    async with http_session() as http:
        sc = ShortClient(url(server), http)
        await login(sc, "alice", "m")
        async with http.get(f"{url(server)}/metrics") as r:
            text = await r.text()
    assert 'wxnet_requests_total{cgi="manualauth"} 1' in text
    assert "wxnet_long_links 0" in text
    assert "wxnet_sync_seconds_bucket" in text


async def test_synccheck_with_bad_key(server: Server) -> None:
    async with http_session() as http:
        sc = ShortClient(url(server), http)
        b = await login(sc, "bob", "x")
        r = await sc.call(
            "newsynccheck",
            pb.SyncCheckRequest(base=b, key_buf=SyncKey(((2, 99),)).to_bytes()),
            pb.SyncCheckResponse,
        )
        assert r.base.ret == -1001


async def test_close_answers_pending_long_polls_at_once(config: ServerConfig) -> None:
    """A clean stop must not wait out a 25 s long poll."""
    srv = await start_server(config)
    await srv.engine.add_user("dora", "secret1")
    async with http_session() as http:
        sc = ShortClient(url(srv), http)
        d = await login(sc, "dora", "d")
        key = (await sc.call("newsync", pb.NewSyncRequest(base=d), pb.NewSyncResponse)).key_buf
        poll = asyncio.ensure_future(
            sc.call(
                "newsynccheck",
                pb.SyncCheckRequest(base=d, key_buf=key, timeout_ms=25000),
                pb.SyncCheckResponse,
                timeout=60,
            )
        )
        while srv.notifier.total_waiters == 0:  # bounded by the test's own timeout
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await srv.close()
        assert loop.time() - t0 < 10
        r = await asyncio.wait_for(poll, 10)
        assert r.selector == 0
