"""webwxhistory: a conversation's earlier messages from the server's log, newest first,
paged, with unread counts on the first page and both caps (Count, log items read)."""

from __future__ import annotations

import dataclasses
import html
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.web.conftest import Mobile, WebClient, base_url, web_api
from wxnet.proto import web as wp
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.enums import CmdId
from wxnet.server.app import Server
from wxnet.server.config import ServerConfig
from wxnet.server.web.history import HistoryScan

BOB, CAROL = wp.web_user_name("bob"), wp.web_user_name("carol")


async def history(web: WebClient, **body: Any) -> dict[str, Any]:
    return await web.post("/webwxhistory", body)


def texts(reply: dict[str, Any]) -> list[str]:
    return [m["Content"] for m in reply["MsgList"]]


async def test_history_newest_first_paged_with_unread(
    server: Server, alice: Mobile, bob: Mobile, http: aiohttp.ClientSession
) -> None:
    carol = await Mobile(http, base_url(server), "carol").login()
    for i in range(3):
        await bob.send("alice", f"b{i}")
    await alice.send("bob", "a0")  # alice replied: b0..b2 count as read
    await bob.send("alice", "b3")
    await carol.send("alice", "c0")
    await bob.send("alice", "b4")
    await carol.send("alice", "c1")
    web = await WebClient(http, base_url(server)).login(alice)

    everything = await history(web, Count=50)
    assert everything["BaseResponse"]["Ret"] == 0, everything
    assert texts(everything) == ["c1", "b4", "c0", "b3", "a0", "b2", "b1", "b0"]
    assert everything["Next"] == 0  # the log's start
    unread = {u["UserName"]: u["Count"] for u in everything["UnreadList"]}
    assert unread == {BOB: 2, CAROL: 2}
    first = everything["MsgList"][0]
    assert first["FromUserName"] == CAROL and first["ToUserName"] == web.me
    assert first["MsgType"] == 1 and first["CreateTime"] > 0

    # bob's conversation, two at a time, following Next
    got: list[str] = []
    before = 0
    pages = 0
    while True:
        page = await history(web, UserName=BOB, Count=2, Before=before)
        assert page["BaseResponse"]["Ret"] == 0, page
        assert page["Count"] == len(page["MsgList"]) <= 2
        if before:
            assert page["UnreadList"] == []  # only the first page counts unread
        got += texts(page)
        pages += 1
        before = page["Next"]
        if not before:
            break
    assert got == ["b4", "b3", "a0", "b2", "b1", "b0"]
    assert pages == 3

    # a message sent after login shows up on the first page, not twice
    await bob.send("alice", "b5")
    page = await history(web, UserName=BOB, Count=2)
    assert texts(page) == ["b5", "b4"]

    # marking the chat read (statusnotify Code 1, as the page does on opening it)
    out = await web.post(
        "/webwxstatusnotify", {"Code": 1, "FromUserName": web.me, "ToUserName": BOB}
    )
    assert out["BaseResponse"]["Ret"] == 0
    page = await history(web, Count=50)
    assert {u["UserName"]: u["Count"] for u in page["UnreadList"]} == {CAROL: 2}


async def test_history_shows_a_recall(
    server: Server, alice: Mobile, bob: Mobile, http: aiohttp.ClientSession
) -> None:
    msg_id = await bob.send("alice", "oops")
    resp = await bob.call("revokemsg", pb.RevokeMsgRequest(msg_id=msg_id), pb.RevokeMsgResponse)
    assert resp.base.ret == 0, resp.base.err_msg
    web = await WebClient(http, base_url(server)).login(alice)
    page = await history(web, UserName=BOB)
    kinds = [m["MsgType"] for m in page["MsgList"]]
    assert kinds == [10002, 1]
    notice, original = page["MsgList"]
    assert original["MsgId"] == str(msg_id)
    # the recalled MsgId: in <msgid> (Web WeChat's form), or as the notice's own MsgId
    xml = html.unescape(notice["Content"])
    assert f"<msgid>{msg_id}</msgid>" in xml or str(msg_id) == notice["MsgId"]
    assert page["UnreadList"] == []  # a recalled message is not waiting to be read


async def test_history_bad_requests(
    server: Server, alice: Mobile, http: aiohttp.ClientSession
) -> None:
    web = await WebClient(http, base_url(server)).login(alice)
    for body in (
        {"UserName": "bob"},
        {"UserName": "@zz"},
        {"UserName": 5},
        {"Count": "many"},
        {"Count": 0},
        {"Before": -1},
        {"Before": 1 << 63},
        {"Count": True},
    ):
        out = await history(web, **body)
        assert out["BaseResponse"]["Ret"] == -1, (body, out)
    out = await web.post("/webwxhistory", {})
    assert out["BaseResponse"]["Ret"] == 0 and out["MsgList"] == []
    web.sid = "nope"
    out = await history(web)
    assert out["BaseResponse"]["Ret"] == 1101


class TestCaps:
    @pytest.fixture
    def web_config(self, web_config: ServerConfig) -> ServerConfig:
        web = dataclasses.replace(web_config.web, history_max_count=3, history_max_scan=4)
        return dataclasses.replace(web_config, web=web)

    async def test_history_caps(
        self, server: Server, alice: Mobile, bob: Mobile, http: aiohttp.ClientSession
    ) -> None:
        carol = await Mobile(http, base_url(server), "carol").login()
        await bob.send("alice", "old")
        for i in range(6):
            await carol.send("alice", f"c{i}")
        web = await WebClient(http, base_url(server)).login(alice)
        limited = web_api(server).limited

        page = await history(web, Count=10)  # cut to history_max_count
        assert texts(page) == ["c5", "c4", "c3"]
        assert limited.get("history_count") == 1

        page = await history(web, UserName=BOB)  # 4 items read, none of bob's: go on
        assert page["MsgList"] == [] and page["Next"] > 0
        assert limited.get("history_scan") == 1
        page = await history(web, UserName=BOB, Before=page["Next"])
        assert texts(page) == ["old"] and page["Next"] == 0


def _add(seq: int, sender: str, to: str, text: str) -> tuple[int, bytes]:
    m = pb.AddMsg(msg_id=1000 + seq, from_user=sender, to_user=to, msg_type=1, content=text)
    return seq, pb.CmdItem(cmd_id=CmdId.ADD_MSG, add_msg=m).SerializeToString()


@settings(max_examples=60, deadline=None)
@given(
    senders=st.lists(st.sampled_from(["bob", "carol", "me"]), min_size=0, max_size=40),
    count=st.integers(1, 7),
    max_scan=st.integers(1, 9),
    peer=st.sampled_from(["", BOB]),
)
def test_pages_add_up_to_one_scan(senders: list[str], count: int, max_scan: int, peer: str) -> None:
    """Paging with any Count and scan cap yields exactly the conversation, newest first."""
    log = [_add(i + 1, s, "bob" if s == "me" else "me", f"m{i}") for i, s in enumerate(senders)]

    def read(before: int, n: int) -> list[tuple[int, bytes]]:
        below = [it for it in log if before == 0 or it[0] < before]
        return list(reversed(below))[:n]

    got: list[str] = []
    before = 0
    for _ in range(len(log) + 2):
        scan = HistoryScan("me", peer, count, max_scan, before)
        while n := scan.wanted():
            scan.feed(read(scan.cursor, n), n)
        page = scan.page()
        assert len(page.msgs) <= count
        got += [m["Content"] for m in page.msgs]
        before = page.next
        if not before:
            break
    assert not before
    want = [
        f"m{i}" for i, s in reversed(list(enumerate(senders))) if not peer or s in ("bob", "me")
    ]
    assert got == want
