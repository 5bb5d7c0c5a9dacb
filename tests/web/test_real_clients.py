"""Unmodified itchat 1.3.10, itchat-uos 1.4.1 and wechat4u 0.7.14 against the server:
QR login approved from a phone, contacts and chatrooms, receive text / image / group
message from a mobile user, send text and an image back, log out; files and videos both
ways."""

from __future__ import annotations

import asyncio
import html
import random
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.web.clients import HARNESS, Harness, python_client, wechat4u_dir
from tests.web.conftest import Mobile, base_url, png_bytes, web_api
from wxnet.proto import web as wp
from wxnet.proto import wxnet_pb2 as pb
from wxnet.server.app import Server

pytestmark = pytest.mark.slow


@pytest.fixture(params=["itchat", "itchat-uos", "wechat4u"])
async def client(
    request: pytest.FixtureRequest, server: Server, tmp_path: Path
) -> AsyncIterator[Harness]:
    name: str = request.param
    base = base_url(server)
    if name == "wechat4u":
        d = await asyncio.to_thread(wechat4u_dir)
        argv = ["node", str(HARNESS / "wechat4u_harness.js"), base]
        h = await Harness.start(name, argv, d, {"NODE_PATH": str(d / "node_modules")})
    else:
        py = await asyncio.to_thread(python_client, name)
        argv = [str(py), str(HARNESS / "itchat_harness.py"), base, str(tmp_path)]
        h = await Harness.start(name, argv, tmp_path)
    try:
        yield h
    finally:
        await h.close()


async def test_real_client(
    client: Harness, server: Server, alice: Mobile, bob: Mobile, tmp_path: Path
) -> None:
    room = await alice.room("team", ["bob", "carol"])
    qr = await client.expect("qr")
    assert await alice.scan(qr["uuid"]) == 0
    await client.expect("login")
    assert len(web_api(server).sessions.of_account(alice.uin)) == 1

    await client.send(op="contacts")
    contacts = await client.expect("contacts")
    assert {"Bob", "Carol"} <= set(contacts["friends"])
    assert "team" in {r["nick"] for r in contacts["rooms"]}

    bob_web = wp.web_user_name("bob")
    await bob.send("alice", "hello from the phone & more")
    m = await client.expect("message", lambda e: e["from"] == bob_web and not e["group"])
    assert "hello from the phone" in m["text"]

    img = png_bytes((30, 60, 200))
    await bob.send_image("alice", img)
    m = await client.expect("message", lambda e: "size" in e)
    assert m["size"] == len(img) and m["head"] == img[:4].hex()

    await bob.send(room, "group hello")
    m = await client.expect("message", lambda e: e["group"] and "group hello" in e["text"])
    assert m["from"] == wp.web_chatroom_name(room)
    if client.name.startswith("itchat"):
        assert m["actual"] == "Bob" and m["text"] == "group hello"  # prefix parsed

    await client.send(op="send", to="Bob", text="reply from " + client.name)
    assert (await client.expect("sent"))["ret"] == 0
    got = await bob.wait_msg(lambda x: x.content == "reply from " + client.name)
    assert got.from_user == "alice"

    path = tmp_path / "out.png"
    data = png_bytes((250, 200, 0), 400)
    path.write_bytes(data)
    await client.send(op="image", to="Bob", path=str(path))
    assert (await client.expect("sent"))["ret"] == 0
    got = await bob.wait_msg(lambda x: x.msg_type == 3 and x.from_user == "alice")
    assert got.media_len == len(data)

    await client.send(op="logout")
    await client.expect("loggedout")
    assert not web_api(server).sessions.of_account(alice.uin)


def revoked_id(content: str) -> str:
    """The ``<msgid>`` of a revoke notice's XML, as anti-revoke bots read it."""
    m = re.search(r"<msgid>(\d+)</msgid>", html.unescape(content))
    assert m, content
    return m.group(1)


async def test_revoke_notice(client: Harness, alice: Mobile, bob: Mobile) -> None:
    """Each client reads the notice its own way (itchat: a NOTE whose Text is the
    replacemsg; wechat4u: a ``message`` of MsgType 10002); ``<msgid>`` names the recalled
    message's MsgId, the notice has a MsgId of its own."""
    qr = await client.expect("qr")
    assert await alice.scan(qr["uuid"]) == 0
    await client.expect("login")
    itchat = client.name.startswith("itchat")
    msg_id = await bob.send("alice", "oops")
    m = await client.expect("message", lambda e: e["text"] == "oops")
    assert m["id"] == str(msg_id)
    resp = await bob.call("revokemsg", pb.RevokeMsgRequest(msg_id=msg_id), pb.RevokeMsgResponse)
    assert resp.base.ret == 0, resp.base.err_msg
    if itchat:
        note = await client.expect("message", lambda e: e["type"] == "Note")
        assert note["text"] == '"Bob" 撤回了一条消息'
        content = note["content"]
    else:
        note = await client.expect("message", lambda e: e["type"] == 10002)
        content = note["text"]
        assert '<replacemsg><![CDATA["Bob" 撤回了一条消息]]></replacemsg>' in content
    assert revoked_id(content) == str(msg_id) and note["id"] != str(msg_id)
    assert f"<session>{wp.web_user_name('bob')}</session>" in html.unescape(content)

    # the bot recalls its own message: the phone sees the nick, the bot "you"
    await client.send(op="send", to="Bob", text="mine")
    sent = await client.expect("sent")
    got = await bob.wait_msg(lambda x: x.content == "mine")
    assert str(got.msg_id) == sent["id"]
    await client.send(op="revoke", to="Bob", id=sent["id"])
    assert (await client.expect("revoked"))["ret"] == 0
    item = await bob.wait_item(
        lambda it: it.WhichOneof("body") == "revoke" and it.revoke.msg_id == got.msg_id
    )
    assert item.revoke.replace_text == '"Alice" 撤回了一条消息'
    if itchat:
        own = await client.expect("message", lambda e: e["type"] == "Note")
        assert own["text"] == "你撤回了一条消息"
    else:
        own = await client.expect("message", lambda e: e["type"] == 10002)
        assert "你撤回了一条消息" in own["text"]


@pytest.mark.parametrize("client", ["itchat"], indirect=True)
async def test_oplog_remark_and_pin(client: Harness, alice: Mobile, bob: Mobile) -> None:
    """itchat's set_alias and set_pinned (webwxoplog): stored, sent to the phone as the
    contact again, and in the address book the next time it is fetched."""
    qr = await client.expect("qr")
    assert await alice.scan(qr["uuid"]) == 0
    await client.expect("login")

    def bob_item(pred: Callable[[pb.Contact], bool]) -> Callable[[pb.CmdItem], bool]:
        return lambda it: (
            it.WhichOneof("body") == "contact"
            and it.contact.user_name == "bob"
            and pred(it.contact)
        )

    await client.send(op="alias", to="Bob", name="Bobby")
    assert (await client.expect("oplog"))["ret"] == 0
    got = await alice.wait_item(bob_item(lambda c: c.remark_name == "Bobby"))
    assert not got.contact.pinned
    await client.send(op="pin", to="Bob", pinned=True)
    assert (await client.expect("oplog"))["ret"] == 0
    got = await alice.wait_item(bob_item(lambda c: c.pinned))
    assert got.contact.remark_name == "Bobby"  # the remark stays
    await client.send(op="contacts")
    assert (await client.expect("contacts"))["remarks"]["Bob"] == "Bobby"


async def test_real_client_files_and_videos(
    client: Harness, alice: Mobile, bob: Mobile, tmp_path: Path
) -> None:
    """send_file and send_video (itchat) / sendMsg with a file (wechat4u) received by a
    phone; a phone's file and video received by the client and downloaded by it."""
    qr = await client.expect("qr")
    assert await alice.scan(qr["uuid"]) == 0
    await client.expect("login")
    await client.send(op="contacts")
    await client.expect("contacts")

    doc = random.Random(1).randbytes(600_000)  # two upload chunks of 512 KiB
    (tmp_path / "report.pdf").write_bytes(doc)
    await client.send(op="file", to="Bob", path=str(tmp_path / "report.pdf"))
    assert (await client.expect("sent"))["ret"] == 0
    got = await bob.wait_msg(lambda x: x.msg_type == 49 and x.from_user == "alice")
    assert got.file_name == "report.pdf" and got.media_len == len(doc)
    assert await bob.download("downloadappattach", got.msg_id) == doc

    video = random.Random(2).randbytes(50_000)
    (tmp_path / "clip.mp4").write_bytes(video)
    await client.send(op="video", to="Bob", path=str(tmp_path / "clip.mp4"))
    assert (await client.expect("sent"))["ret"] == 0
    got = await bob.wait_msg(lambda x: x.msg_type == 43 and x.from_user == "alice")
    assert got.media_len == len(video) and got.img_buf
    assert await bob.download("downloadvideo", got.msg_id) == video

    theirs = random.Random(3).randbytes(70_000)
    await bob.send_file("alice", "from phone.zip", theirs)
    m = await client.expect("message", lambda e: e.get("name") == "from phone.zip")
    assert m["size"] == len(theirs) and m["head"] == theirs[:4].hex(), m
    clip = random.Random(4).randbytes(80_000)
    await bob.send_video("alice", clip)
    m = await client.expect("message", lambda e: e.get("size") == len(clip))
    assert m["head"] == clip[:4].hex()
