"""The web API against the real server: login by QR approval, sync, sends, media, logout."""

from __future__ import annotations

import asyncio
import dataclasses
import html
import json

import aiohttp

from tests.web.conftest import CGI, Mobile, WebClient, base_url, png_bytes, web_api
from wxnet.proto import web as wp
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMRet
from wxnet.server.app import Server


async def test_qr_login_life_cycle(
    server: Server, alice: Mobile, http: aiohttp.ClientSession
) -> None:
    base = base_url(server)
    async with http.post(base + "/jslogin?appid=wx782c26e4c19acffb&fun=new") as r:
        code, uuid = wp.parse_qrlogin(await r.text())
    assert code == 200 and wp.is_token(uuid) and len(uuid) >= 22  # >= 128 bits
    async with http.get(f"{base}/qrcode/{uuid}") as r:
        assert r.status == 200 and (await r.read()).startswith(b"\x89PNG")
    # Scanned from the phone: the pending poll returns 201 (once), then 200 on approval.
    poll = asyncio.ensure_future(http.get(f"{base}{CGI}/login?uuid={uuid}&tip=1"))
    await asyncio.sleep(0)
    assert await alice.scan(uuid, confirm=False) == 0
    r = await asyncio.wait_for(poll, 20)
    assert wp.parse_login_poll(await r.text()).code == 201
    poll = asyncio.ensure_future(http.get(f"{base}{CGI}/login?uuid={uuid}&tip=0"))
    assert await alice.scan(uuid, confirm=True) == 0
    r = await asyncio.wait_for(poll, 20)
    answer = wp.parse_login_poll(await r.text())
    assert answer.code == 200
    assert answer.redirect_uri.startswith(f"http://127.0.0.1:{server.http_port}{CGI}/")
    # Only the account that scanned can approve, and only once.
    bob = await Mobile(http, base, "bob").login()
    assert await bob.scan(uuid) != 0
    async with http.get(answer.redirect_uri, allow_redirects=False) as r:
        assert r.status == 301 and r.headers["Location"].startswith("http://127.0.0.1")
        t = wp.parse_login_ticket(await r.text())
        cookies = r.headers.getall("Set-Cookie")
    assert t.wxuin == alice.uin and len(t.wxsid) >= 22
    for name in ("wxuin", "wxsid", "webwx_data_ticket"):
        line = next(c for c in cookies if c.startswith(name + "="))
        assert "; " in line and "Domain" not in line  # wechat4u needs an attribute
    # The ticket is single use.
    async with http.get(answer.redirect_uri, allow_redirects=False) as r:
        assert "<ret>0</ret>" not in await r.text()


async def test_unknown_uuid_and_expiry(
    server: Server, alice: Mobile, http: aiohttp.ClientSession
) -> None:
    base = base_url(server)
    async with http.get(f"{base}{CGI}/login?uuid=nosuchuuid&tip=1") as r:
        assert wp.parse_login_poll(await r.text()).code == 400
    assert await alice.scan("nosuchuuid") != 0
    async with http.get(f"{base}/qrcode/nosuchuuid") as r:
        assert r.status == 404


async def test_receive_send_and_media(
    server: Server, alice: Mobile, bob: Mobile, http: aiohttp.ClientSession
) -> None:
    w = await WebClient(http, base_url(server)).login(alice)
    bob_web = wp.web_user_name("bob")
    # contacts
    async with http.get(f"{base_url(server)}{CGI}/webwxgetcontact?seq=0&skey=") as r:
        contacts = json.loads(await r.text())
    assert {c["UserName"] for c in contacts["MemberList"]} >= {bob_web, wp.web_user_name("carol")}
    # text from bob's phone -> web (escaped, once)
    await bob.send("alice", "hi <web>\nline 2")
    m = await w.wait_msg(lambda m: m["MsgType"] == 1)
    assert m["FromUserName"] == bob_web and m["ToUserName"] == w.me
    assert m["Content"] == "hi &lt;web&gt;<br/>line 2"
    assert m["MsgId"] == str(m["NewMsgId"])
    # image from bob -> web, downloadable
    img = png_bytes()
    await bob.send_image("alice", img)
    m = await w.wait_msg(lambda m: m["MsgType"] == 3)
    async with http.get(f"{base_url(server)}{CGI}/webwxgetmsgimg?msgid={m['NewMsgId']}&skey=") as r:
        assert r.status == 200 and await r.read() == img
    async with http.get(
        f"{base_url(server)}{CGI}/webwxgetmsgimg?MsgID={m['MsgId']}&type=slave"
    ) as r:
        assert r.status == 200 and (await r.read())[:2] == b"\xff\xd8"  # JPEG thumbnail
    # web -> bob's phone; a repeat with the same ClientMsgId is the same message
    msg = {"Type": 1, "Content": "hello bob", "FromUserName": w.me, "ToUserName": bob_web}
    msg |= {"LocalID": 1234567890123, "ClientMsgId": 1234567890123}
    first = await w.post("/webwxsendmsg", {"Msg": msg, "Scene": 0})
    again = await w.post("/webwxsendmsg", {"Msg": msg, "Scene": 0})
    assert first["BaseResponse"]["Ret"] == 0 and first["MsgID"] == again["MsgID"]
    got = await bob.wait_msg(lambda m: m.content == "hello bob")
    assert got.from_user == "alice" and str(got.msg_id) == first["MsgID"]
    # the phone sees it as its own message too; the web session that sent it does not
    mine = await alice.wait_msg(lambda m: m.content == "hello bob")
    assert mine.msg_id == got.msg_id
    # web -> bob: an image in two chunks
    data = png_bytes((10, 200, 10), 600)
    media_id = await upload(http, w, data, chunk=len(data) // 2 + 1)
    sent = await w.post(
        "/webwxsendmsgimg",
        {
            "Msg": {
                "Type": 3,
                "MediaId": media_id,
                "FromUserName": w.me,
                "ToUserName": bob_web,
                "LocalID": 55,
                "ClientMsgId": 55,
            },
            "Scene": 0,
        },
    )
    assert sent["BaseResponse"]["Ret"] == 0, sent
    got = await bob.wait_msg(lambda m: m.msg_type == 3 and m.from_user == "alice")
    assert str(got.msg_id) == sent["MsgID"] and got.media_len == len(data)


async def upload(http: aiohttp.ClientSession, w: WebClient, data: bytes, chunk: int) -> str:
    chunks = (len(data) + chunk - 1) // chunk
    reply: dict[str, object] = {}
    for i in range(chunks):
        form = aiohttp.FormData()
        form.add_field("id", "WU_FILE_0")
        form.add_field("name", "x.png")
        form.add_field("size", str(len(data)))
        if chunks > 1:
            form.add_field("chunks", str(chunks))
            form.add_field("chunk", str(i))
        form.add_field("mediatype", "pic")
        form.add_field(
            "uploadmediarequest",
            json.dumps(
                {
                    "UploadType": 2,
                    "BaseRequest": w.br(),
                    "ClientMediaId": 77,
                    "TotalLen": len(data),
                    "StartPos": 0,
                    "DataLen": len(data),
                    "MediaType": 4,
                }
            ),
        )
        form.add_field(
            "filename",
            data[i * chunk : (i + 1) * chunk],
            filename="x.png",
            content_type="application/octet-stream",
        )
        async with http.post(f"{w.base}{CGI}/webwxuploadmedia?f=json", data=form) as r:
            reply = json.loads(await r.text())
        assert reply["BaseResponse"] == {"Ret": 0, "ErrMsg": ""}, reply
    media_id = reply["MediaId"]
    assert isinstance(media_id, str) and wp.is_token(media_id)
    return media_id


async def test_group_messages(
    server: Server, alice: Mobile, bob: Mobile, http: aiohttp.ClientSession
) -> None:
    room = await alice.room("team", ["bob", "carol"])
    w = await WebClient(http, base_url(server)).login(alice)
    room_web = wp.web_chatroom_name(room)
    await bob.send(room, "hello group & all")
    m = await w.wait_msg(lambda m: m["MsgType"] == 1 and m["FromUserName"] == room_web)
    assert m["ToUserName"] == w.me
    assert m["Content"] == wp.web_user_name("bob") + ":<br/>hello group &amp; all"
    out = await w.post(
        "/webwxbatchgetcontact",
        {"Count": 1, "List": [{"UserName": room_web, "EncryChatRoomId": ""}]},
    )
    (c,) = out["ContactList"]
    assert c["MemberCount"] == 3 and c["Sex"] == 0
    assert {x["UserName"] for x in c["MemberList"]} >= {wp.web_user_name("bob"), w.me}
    # web -> group reaches bob
    msg = {
        "Type": 1,
        "Content": "from web",
        "FromUserName": w.me,
        "ToUserName": room_web,
        "LocalID": 9,
        "ClientMsgId": 9,
    }
    assert (await w.post("/webwxsendmsg", {"Msg": msg}))["BaseResponse"]["Ret"] == 0
    got = await bob.wait_msg(lambda m: m.content == "from web")
    assert got.to_user == room


async def test_logout_ends_the_session(
    server: Server, alice: Mobile, http: aiohttp.ClientSession
) -> None:
    w = await WebClient(http, base_url(server)).login(alice)
    async with http.get(f"{w.base}{CGI}/webwxlogout?redirect=1&type=1&skey={w.skey}") as r:
        assert r.status == 200 and await r.text() == ""
    assert (await w.synccheck())[0] == wp.RET_LOGIN_ELSEWHERE
    for path in ("/webwxinit", "/webwxsync"):
        out = await w.post(path, {"SyncKey": w.sync_key})
        assert out["BaseResponse"]["Ret"] == wp.RET_LOGIN_ELSEWHERE
    assert not web_api(server).sessions.of_account(alice.uin)


async def test_chatrooms_revoke_and_filehelper(
    server: Server, alice: Mobile, bob: Mobile, http: aiohttp.ClientSession
) -> None:
    w = await WebClient(http, base_url(server)).login(alice)
    bob_web, carol_web = wp.web_user_name("bob"), wp.web_user_name("carol")
    out = await w.post(
        "/webwxcreatechatroom",
        {"MemberCount": 1, "MemberList": [{"UserName": bob_web}], "Topic": "web room"},
    )
    assert out["BaseResponse"]["Ret"] == 0, out
    room_web = out["ChatRoomName"]
    assert room_web.startswith("@@") and out["MemberCount"] == 2
    room = wp.decode_web_name(room_web)[0]
    for fun, body in (
        ("modtopic", {"NewTopic": "renamed"}),
        ("addmember", {"AddMemberList": carol_web}),
        ("delmember", {"DelMemberList": carol_web}),
    ):
        r = await w.post(f"/webwxupdatechatroom?fun={fun}", {"ChatRoomName": room_web, **body})
        assert r["BaseResponse"]["Ret"] == 0, (fun, r)
    got = await w.post("/webwxbatchgetcontact", {"Count": 1, "List": [{"UserName": room_web}]})
    (c,) = got["ContactList"]
    assert c["NickName"] == "renamed" and c["MemberCount"] == 2
    # the room change reached the web as ModContact (selector 2 = "call webwxsync")
    m = {"Type": 1, "Content": "to revoke", "ToUserName": room_web, "LocalID": 1, "ClientMsgId": 1}
    sent = await w.post("/webwxsendmsg", {"Msg": m})
    seen = await bob.wait_msg(lambda x: x.content == "to revoke")
    assert seen.to_user == room
    r = await w.post(
        "/webwxrevokemsg", {"ClientMsgId": "1", "SvrMsgId": sent["MsgID"], "ToUserName": room_web}
    )
    assert r["BaseResponse"]["Ret"] == 0, r
    # filehelper is the account itself: the phone gets the note
    note = {"Type": 1, "Content": "note to self", "ToUserName": "filehelper", "LocalID": 2}
    assert (await w.post("/webwxsendmsg", {"Msg": note}))["BaseResponse"]["Ret"] == 0
    got_note = await alice.wait_msg(lambda x: x.content == "note to self")
    assert got_note.to_user == "alice"
    # a bad fun or a non-room name
    r = await w.post("/webwxupdatechatroom?fun=nope", {"ChatRoomName": room_web})
    assert r["BaseResponse"]["Ret"] != 0
    r = await w.post("/webwxupdatechatroom?fun=modtopic", {"ChatRoomName": bob_web})
    assert r["BaseResponse"]["Ret"] != 0


async def test_revoke_reaches_the_web(
    server: Server, alice: Mobile, bob: Mobile, http: aiohttp.ClientSession
) -> None:
    w = await WebClient(http, base_url(server)).login(alice)
    msg_id = await bob.send("alice", "oops")
    await w.wait_msg(lambda m: m["Content"] == "oops")
    resp = await bob.call("revokemsg", pb.RevokeMsgRequest(msg_id=msg_id), pb.RevokeMsgResponse)
    assert resp.base.ret == 0, resp.base.err_msg
    m = await w.wait_msg(lambda m: m["MsgType"] == 10002)
    assert m["FromUserName"] == wp.web_user_name("bob")
    assert m["MsgId"] != str(msg_id) and m["NewMsgId"] == int(m["MsgId"])  # its own id
    xml = html.unescape(m["Content"])  # escaped, as every XML payload (research 5.4)
    assert "&lt;" in m["Content"]
    assert f"<session>{wp.web_user_name('bob')}</session>" in xml
    assert f"<msgid>{msg_id}</msgid>" in xml
    assert '<replacemsg><![CDATA["Bob" 撤回了一条消息]]></replacemsg>' in xml


async def test_friend_requests_reach_the_web_and_are_accepted_there(
    server: Server, alice: Mobile, http: aiohttp.ClientSession
) -> None:
    """contacts = "request": dave's request shows on alice's web page as a VERIFYMSG from
    fmessage; webwxverifyuser Opcode 3 accepts it, then dave's messages get through."""
    server.engine.config = dataclasses.replace(server.engine.config, contacts="request")
    await server.engine.add_user("dave", "secret1", "Dave")
    dave = await Mobile(http, base_url(server), "dave").login()
    w = await WebClient(http, base_url(server)).login(alice)
    req = pb.AddContactRequest(user_name="alice", opcode=2, verify_content="hi, dave")
    sent = await dave.call("verifyuser", req, pb.AddContactResponse)
    assert sent.base.ret == 0 and sent.pending
    m = await w.wait_msg(lambda m: m["MsgType"] == 37)
    assert m["FromUserName"] == "fmessage" and m["Content"] == "hi, dave"
    info = m["RecommendInfo"]
    assert info["UserName"] == wp.web_user_name("dave") and info["Content"] == "hi, dave"
    early = pb.MicroMsg(to_user="alice", content="x", msg_type=1, client_msg_id="early")
    r = await dave.call("newsendmsg", pb.SendMsgRequest(list=[early]), pb.SendMsgResponse)
    assert r.list[0].ret == MMRet.ERR_NOT_FRIEND
    out = await w.post(
        "/webwxverifyuser",
        {
            "Opcode": 3,
            "VerifyUserListSize": 1,
            "VerifyUserList": [{"Value": info["UserName"], "VerifyUserTicket": info["Ticket"]}],
            "VerifyContent": "",
        },
    )
    assert out["BaseResponse"]["Ret"] == 0, out
    await dave.send("alice", "now we talk")
    got = await w.wait_msg(lambda m: m["Content"] == "now we talk")
    assert got["FromUserName"] == wp.web_user_name("dave")
