"""Issue 14 over HTTP: unserved endpoints answer JSON; webwxinit on a live session resumes
from the session's committed key; webwxoplog's refusals."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from tests.web.conftest import CGI, WAIT, Mobile, WebClient, base_url
from wxnet.proto import web as wp
from wxnet.proto.errors import MMRet
from wxnet.server.app import Server


async def test_unserved_endpoints_answer_json(server: Server, alice: Mobile) -> None:
    base = base_url(server) + CGI
    async with aiohttp.ClientSession() as http:
        for method, path in (("POST", "/webwxnosuchthing"), ("GET", "/webwx/../x"), ("GET", "/")):
            async with http.request(method, base + path) as r:
                assert r.status == 404, path
                assert r.content_type == "application/json"
                out = json.loads(await r.text())
                assert out["BaseResponse"]["Ret"] == -1
                assert "not served" in out["BaseResponse"]["ErrMsg"]
        async with http.get(base + "/webwxinit") as r:  # a POST endpoint
            assert r.status == 405 and r.headers["Allow"] == "POST"
            out = json.loads(await r.text())
            assert out["BaseResponse"]["Ret"] == -1
            assert "takes POST, not GET" in out["BaseResponse"]["ErrMsg"]
        # a handler's own 404 stays (media downloads are not parsed as JSON)
        async with http.get(f"{base}/webwxgetmsgimg?msgid=1") as r:
            assert r.status == 401
        async with http.get(base_url(server) + "/nothing-here") as r:  # outside the API
            assert r.status == 404 and r.content_type == "text/plain"


async def test_second_init_resumes_from_the_committed_key(
    server: Server, alice: Mobile, bob: Mobile, http: aiohttp.ClientSession
) -> None:
    web = await WebClient(http, base_url(server)).login(alice)
    first_key = web.sync_key
    await bob.send("alice", "one")
    await web.wait_msg(lambda m: m["Content"] == "one")
    # the client polls with the key it got (that commits it); "two" lands after it
    poll = asyncio.ensure_future(web.synccheck())
    await bob.send("alice", "two")
    assert await asyncio.wait_for(poll, WAIT) == (0, 2)
    init = await web.post("/webwxinit", {})  # wechat4u's restart(), its relogin
    assert init["BaseResponse"]["Ret"] == 0
    assert init["SyncKey"] != first_key
    web.sync_key = init["SyncKey"]
    out = await web.sync()
    assert [m["Content"] for m in out["AddMsgList"]] == ["two"]  # not skipped, not "one" again
    # the key of that reply is not presented yet: an init now offers "two" again (a reply
    # can be lost on the way); once presented (a sync or a poll), never again
    web.sync_key = (await web.post("/webwxinit", {}))["SyncKey"]
    assert [m["Content"] for m in (await web.sync())["AddMsgList"]] == ["two"]
    assert (await web.sync())["AddMsgList"] == []
    web.sync_key = (await web.post("/webwxinit", {}))["SyncKey"]
    assert (await web.sync())["AddMsgList"] == []


async def test_oplog_refusals(server: Server, alice: Mobile, http: aiohttp.ClientSession) -> None:
    web = await WebClient(http, base_url(server)).login(alice)
    bob, dave = wp.web_user_name("bob"), wp.web_user_name("dave")
    for body, ret in (
        ({"UserName": bob, "CmdId": 9}, -1),
        ({"UserName": bob, "CmdId": 3, "OP": 5}, -1),
        ({"UserName": bob, "CmdId": 2, "RemarkName": 7}, -1),
        ({"UserName": bob, "CmdId": 2, "RemarkName": "x" * 65}, int(MMRet.ERR_ARG)),
        ({"UserName": dave, "CmdId": 2, "RemarkName": "who"}, int(MMRet.ERR_NOT_FOUND)),
    ):
        out = await web.post("/webwxoplog", body)
        assert out["BaseResponse"]["Ret"] == ret, (body, out)
    assert (await web.post("/webwxoplog", {"UserName": bob, "CmdId": 3, "OP": 1}))["BaseResponse"][
        "Ret"
    ] == 0
    out = await web.post("/webwxbatchgetcontact", {"Count": 1, "List": [{"UserName": bob}]})
    assert out["ContactList"][0]["ContactFlag"] & 2048
