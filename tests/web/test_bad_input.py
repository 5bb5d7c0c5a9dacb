"""Bad input gets the web protocol's error forms: BaseResponse Ret codes, synccheck
retcode 1101/1102, 4xx for media; never a 500, never another account's data."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator

import aiohttp

from tests.web.conftest import CGI, Mobile, WebClient, base_url, png_bytes
from tests.web.test_api import upload
from wxnet.proto import web as wp
from wxnet.proto.errors import MMRet
from wxnet.server.app import Server

JSON_ENDPOINTS = (
    "webwxinit",
    "webwxstatusnotify",
    "webwxbatchgetcontact",
    "webwxsync",
    "webwxsendmsg",
    "webwxsendmsgimg",
    "webwxsendemoticon",
    "webwxrevokemsg",
    "webwxcreatechatroom",
    "webwxupdatechatroom",
    "webwxverifyuser",
)


async def post_raw(http: aiohttp.ClientSession, url: str, data: bytes) -> dict[str, object]:
    async with http.post(url, data=io.BytesIO(data)) as r:
        assert r.status == 200, await r.text()
        obj: dict[str, object] = json.loads(await r.text())
        return obj


def ret(obj: dict[str, object]) -> int:
    base = obj["BaseResponse"]
    assert isinstance(base, dict)
    return int(base["Ret"])


async def test_no_or_wrong_session(server: Server, alice: Mobile, bob: Mobile) -> None:
    # separate cookie jars: alice's web client, and a stranger with none
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as h1:
        w = await WebClient(h1, base_url(server)).login(alice)
        async with aiohttp.ClientSession() as stranger:
            base = base_url(server) + CGI
            for ep in JSON_ENDPOINTS:
                out = await post_raw(stranger, f"{base}/{ep}", b"{}")
                assert ret(out) == wp.RET_SESSION_REJECTED, ep
                # alice's wxsid presented with bob's uin is not a session
                body = {"BaseRequest": {"Uin": bob.uin, "Sid": w.sid, "Skey": "", "DeviceID": ""}}
                out = await post_raw(stranger, f"{base}/{ep}", json.dumps(body).encode())
                assert ret(out) == wp.RET_LOGIN_ELSEWHERE, ep
            async with stranger.get(f"{base}/synccheck?uin={alice.uin}&sid=guess") as r:
                assert wp.parse_synccheck(await r.text()) == (wp.RET_LOGIN_ELSEWHERE, 0)
            async with stranger.get(f"{base}/synccheck") as r:
                assert wp.parse_synccheck(await r.text()) == (wp.RET_SESSION_REJECTED, 0)
            async with stranger.get(f"{base}/webwxgetcontact?seq=0") as r:
                assert ret(json.loads(await r.text())) == wp.RET_SESSION_REJECTED
            async with stranger.get(f"{base}/webwxgetmsgimg?msgid=1") as r:
                assert r.status == 401
            async with stranger.post(f"{base}/webwxlogout") as r:
                assert r.status == 200
        # itchat-uos style: junk Skey/DeviceID, empty BaseRequest Sid -> cookies decide
        body = {"BaseRequest": {"Uin": "", "Sid": "", "Skey": "", "DeviceID": "x"}}
        out = await post_raw(h1, f"{base_url(server)}{CGI}/webwxinit", json.dumps(body).encode())
        assert ret(out) == 0


async def test_malformed_bodies(server: Server, alice: Mobile, http: aiohttp.ClientSession) -> None:
    w = await WebClient(http, base_url(server)).login(alice)
    base = base_url(server) + CGI
    br = w.br()

    def with_br(extra: str) -> bytes:
        return json.dumps({"BaseRequest": br, **json.loads(extra)}).encode()

    junk = [
        b"",
        b"{",
        b"[]",
        b"\xff\xfe",
        b"null",
        b'{"BaseRequest": 5}',
        b'{"BaseRequest": {"Uin": [1], "Sid": {}}}',
        with_br('{"Msg": 7, "List": {}, "SyncKey": "x", "MemberList": 3}'),
        with_br('{"Msg": {"ToUserName": "@zz", "Content": 5}}'),
        with_br('{"Msg": {"ToUserName": "@@00", "MediaId": []}}'),
        with_br('{"SvrMsgId": "abc", "ChatRoomName": 1}'),
        with_br('{"VerifyUserList": [1, null]}'),
        b"{" * 1000,
    ]
    for ep in JSON_ENDPOINTS:
        for data in junk:
            out = await post_raw(http, f"{base}/{ep}", data)
            assert isinstance(out["BaseResponse"], dict), (ep, data)
    big = b'{"x": "' + b"a" * (wp.MAX_JSON_BODY + 10) + b'"}'
    assert ret(await post_raw(http, f"{base}/webwxsendmsg", big)) != 0
    # the session still works afterwards
    assert ret(await w.post("/webwxinit", {})) == 0


async def test_bad_synckeys(server: Server, alice: Mobile, http: aiohttp.ClientSession) -> None:
    w = await WebClient(http, base_url(server)).login(alice)
    base = base_url(server) + CGI
    for key in ("1_x", "garbage", "1_1|1_2", "2_99999999999"):
        url = f"{base}/synccheck?uin={w.uin}&sid={w.sid}&synckey={key}"
        async with http.get(url) as r:
            assert r.status == 200
            retcode, _ = wp.parse_synccheck(await r.text())
            assert retcode == wp.RET_SESSION_REJECTED, key
    bad_keys: list[object] = [{"Count": 1, "List": [{"Key": "a", "Val": 1}]}, "1_1", {"List": 1}]
    for bad in bad_keys:
        out = await w.post("/webwxsync", {"SyncKey": bad})
        assert ret(out) != 0, bad
    beyond = {"Count": 1, "List": [{"Key": 2, "Val": 10**12}]}
    assert ret(await w.post("/webwxsync", {"SyncKey": beyond})) != 0
    assert ret(await w.post("/webwxsync", {"SyncKey": w.sync_key})) == 0


async def test_uploads_bounded(server: Server, alice: Mobile, http: aiohttp.ClientSession) -> None:
    w = await WebClient(http, base_url(server)).login(alice)
    base = base_url(server) + CGI
    # declared size over the limit
    form = aiohttp.FormData()
    form.add_field("size", str(1 << 40))
    form.add_field("uploadmediarequest", json.dumps({"BaseRequest": w.br(), "TotalLen": 1 << 40}))
    form.add_field("filename", b"x", filename="x")
    async with http.post(f"{base}/webwxuploadmedia?f=json", data=form) as r:
        assert ret(json.loads(await r.text())) == MMRet.ERR_TOO_LARGE
    # a chunk larger than allowed
    form = aiohttp.FormData()
    form.add_field("uploadmediarequest", json.dumps({"BaseRequest": w.br(), "TotalLen": 2 << 20}))
    form.add_field("filename", io.BytesIO(b"x" * (2 << 20)), filename="x")
    async with http.post(f"{base}/webwxuploadmedia?f=json", data=form) as r:
        assert r.status in (200, 413)
        if r.status == 200:
            assert ret(json.loads(await r.text())) == MMRet.ERR_TOO_LARGE
    # the same without a Content-Length (chunked): refused while reading, not buffered
    boundary = "wxnetboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="filename"; filename="x"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()

    async def body() -> AsyncIterator[bytes]:
        yield head
        for _ in range(64):
            yield b"y" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    async with http.post(f"{base}/webwxuploadmedia?f=json", data=body(), headers=headers) as r:
        assert ret(json.loads(await r.text())) == MMRet.ERR_TOO_LARGE
    # not multipart, junk multipart
    async with http.post(f"{base}/webwxuploadmedia?f=json", data=b"{}") as r:
        assert ret(json.loads(await r.text())) != 0
    # a MediaId that is not ours
    msg = {"Type": 3, "MediaId": "@crypt_nope", "ToUserName": wp.web_user_name("bob")}
    assert ret(await w.post("/webwxsendmsgimg", {"Msg": msg})) == MMRet.ERR_NOT_FOUND


async def test_no_other_accounts_data(
    server: Server, alice: Mobile, bob: Mobile, http: aiohttp.ClientSession
) -> None:
    carol = await Mobile(http, base_url(server), "carol").login()
    img = png_bytes()
    msg_id = await bob.send_image("alice", img)  # between bob and alice only
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as h:
        wc = await WebClient(h, base_url(server)).login(carol)
        async with h.get(f"{wc.base}{CGI}/webwxgetmsgimg?msgid={msg_id}") as r:
            assert r.status == 404
        out = await wc.post(
            "/webwxbatchgetcontact", {"Count": 1, "List": [{"UserName": wp.web_user_name("bob")}]}
        )
        assert out["ContactList"] == []  # not carol's contact
        # carol's media id namespace is her own
        media = await upload(h, wc, img, chunk=len(img))
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as h2:
        wa = await WebClient(h2, base_url(server)).login(alice)
        msg = {"Type": 3, "MediaId": media, "ToUserName": wp.web_user_name("bob")}
        assert ret(await wa.post("/webwxsendmsgimg", {"Msg": msg})) == MMRet.ERR_NOT_FOUND
