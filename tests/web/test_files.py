"""Files and videos on the web API against the real server: a phone's file and video
in webwxsync (the shapes Web WeChat used), webwxgetmedia / webwxgetvideo downloads with
Range (first bytes, suffix, open-ended, unsatisfiable and malformed: 416), and the web's
own sends (upload, then webwxsendappmsg / webwxsendvideomsg) reaching a phone."""

from __future__ import annotations

import html
import io
import json
import random
import urllib.parse

import aiohttp
from PIL import Image

from tests.web.conftest import CGI, Mobile, WebClient, base_url, png_bytes
from wxnet.proto import mediaxml
from wxnet.proto import web as wp
from wxnet.proto.errors import MMRet
from wxnet.server.app import Server


async def upload(
    http: aiohttp.ClientSession, w: WebClient, data: bytes, name: str, mediatype: str, cmid: int
) -> str:
    """One webwxuploadmedia request in 512 KiB chunks, as wechat4u sends it."""
    chunk = 512 * 1024
    chunks = (len(data) + chunk - 1) // chunk
    reply: dict[str, object] = {}
    for i in range(chunks):
        form = aiohttp.FormData()
        form.add_field("name", name)
        form.add_field("size", str(len(data)))
        if chunks > 1:
            form.add_field("chunks", str(chunks))
            form.add_field("chunk", str(i))
        form.add_field("mediatype", mediatype)
        req = {"UploadType": 2, "BaseRequest": w.br(), "ClientMediaId": cmid, "TotalLen": len(data)}
        form.add_field("uploadmediarequest", json.dumps(req))
        form.add_field("filename", data[i * chunk : (i + 1) * chunk], filename=name)
        async with http.post(f"{w.base}{CGI}/webwxuploadmedia?f=json", data=form) as r:
            reply = json.loads(await r.text())
        assert reply["BaseResponse"] == {"Ret": 0, "ErrMsg": ""}, reply
    media_id = reply["MediaId"]
    assert isinstance(media_id, str)
    return media_id


async def test_phone_file_and_video_in_sync_and_downloads(
    server: Server, alice: Mobile, bob: Mobile, http: aiohttp.ClientSession
) -> None:
    w = await WebClient(http, base_url(server)).login(alice)
    doc = random.Random(1).randbytes(150_000)
    file_id = await bob.send_file("alice", "notes & plans.txt", doc)
    m = await w.wait_msg(lambda m: m["MsgType"] == 49)
    assert m["MsgId"] == str(file_id) and m["AppMsgType"] == 6
    assert m["FileName"] == "notes & plans.txt" and m["FileSize"] == str(len(doc))
    assert m["MediaId"] == f"@wxfile_{file_id}" and wp.is_token(m["MediaId"])
    assert m["FromUserName"] == wp.web_user_name("bob")
    info = mediaxml.parse_file(html.unescape(m["Content"]))
    assert info == mediaxml.FileInfo("notes & plans.txt", len(doc), m["MediaId"], 6)

    q = urllib.parse.urlencode(
        {"sender": m["FromUserName"], "mediaid": m["MediaId"], "filename": m["FileName"]}
    )
    async with http.get(f"{w.base}{CGI}/webwxgetmedia?{q}") as r:
        assert r.status == 200 and await r.read() == doc
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert "filename*=UTF-8''notes%20%26%20plans.txt" in r.headers["Content-Disposition"]
    async with http.get(f"{w.base}{CGI}/webwxgetmedia?mediaid=@wxfile_1") as r:
        assert r.status == 404
    async with http.get(f"{w.base}{CGI}/webwxgetmedia?mediaid=nonsense") as r:
        assert r.status == 400

    video = random.Random(2).randbytes(200_000)
    video_id = await bob.send_video("alice", video)
    v = await w.wait_msg(lambda m: m["MsgType"] == 43)
    assert v["MsgId"] == str(video_id) and v["PlayLength"] == 3
    assert v["FileSize"] == str(len(video))
    url = f"{w.base}{CGI}/webwxgetvideo?msgid={video_id}&skey={w.skey}"
    n = len(video)
    for rng, status, body, content_range in (
        ("bytes=0-", 206, video, f"bytes 0-{n - 1}/{n}"),  # what itchat and wechat4u send
        ("bytes=0-99", 206, video[:100], f"bytes 0-99/{n}"),
        ("bytes=-100", 206, video[-100:], f"bytes {n - 100}-{n - 1}/{n}"),
        ("bytes=1000-", 206, video[1000:], f"bytes 1000-{n - 1}/{n}"),
        (None, 200, video, None),
    ):
        headers = {"Range": rng} if rng else {}
        async with http.get(url, headers=headers) as r:
            assert r.status == status, rng
            assert await r.read() == body
            assert r.headers.get("Content-Range") == content_range
            assert r.headers["Content-Type"] == "video/mp4"
            assert r.headers["Accept-Ranges"] == "bytes"
    old = "Thu, 01 Jan 1970 00:00:00 GMT"  # the file changed since: If-Range gets it whole
    async with http.get(url, headers={"Range": "bytes=0-9", "If-Range": old}) as r:
        assert r.status == 200 and await r.read() == video
    for bad in (f"bytes={n}-", f"bytes={n + 10}-{n + 20}", "bytes=abc", "bytes=5-2"):
        async with http.get(url, headers={"Range": bad}) as r:
            assert r.status == 416, bad
            assert r.headers.get("Content-Range") == f"bytes */{n}"
    async with http.get(f"{w.base}{CGI}/webwxgetmsgimg?MsgID={video_id}&type=slave") as r:
        assert r.status == 200  # the video's thumbnail: the server's placeholder
        with Image.open(io.BytesIO(await r.read())) as img:
            assert img.size == (96, 64)
    async with http.get(f"{w.base}{CGI}/webwxgetvideo?msgid={file_id}") as r:
        assert r.status == 404  # a file is not a video

    # carol's web session sees neither (not her chat)
    carol = await Mobile(http, base_url(server), "carol").login()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        wc = await WebClient(other, base_url(server)).login(carol)
        async with other.get(f"{wc.base}{CGI}/webwxgetvideo?msgid={video_id}") as r:
            assert r.status == 404
        async with other.get(f"{wc.base}{CGI}/webwxgetmedia?{q}") as r:
            assert r.status == 404


async def test_web_sends_file_and_video_to_a_phone(
    server: Server, alice: Mobile, bob: Mobile, http: aiohttp.ClientSession
) -> None:
    w = await WebClient(http, base_url(server)).login(alice)
    bob_web = wp.web_user_name("bob")
    doc = random.Random(3).randbytes(700_000)  # two upload chunks
    media_id = await upload(http, w, doc, "big.bin", "doc", 1)
    content = (  # itchat's send_file, byte for byte (single quotes, no <msg>)
        "<appmsg appid='wxeb7ec651dd0aefa9' sdkver=''><title>big.bin</title><des></des>"
        "<action></action><type>6</type><content></content><url></url><lowurl></lowurl>"
        f"<appattach><totallen>{len(doc)}</totallen><attachid>{media_id}</attachid>"
        "<fileext>bin</fileext></appattach><extinfo></extinfo></appmsg>"
    )
    msg = {"Type": 6, "Content": content, "FromUserName": w.me, "ToUserName": bob_web}
    sent = await w.post("/webwxsendappmsg?fun=async&f=json", {"Msg": {**msg, "LocalID": 5}})
    assert sent["BaseResponse"]["Ret"] == 0, sent
    got = await bob.wait_msg(lambda m: m.msg_type == 49)
    assert str(got.msg_id) == sent["MsgID"] and sent["LocalID"] == "5"
    assert got.file_name == "big.bin" and got.media_len == len(doc) and got.app_msg_type == 6
    assert await bob.download("downloadappattach", got.msg_id) == doc
    # the same again (itchat retries): one message, from dedup
    again = await w.post("/webwxsendappmsg?fun=async&f=json", {"Msg": {**msg, "LocalID": 5}})
    assert again["MsgID"] == sent["MsgID"]

    video = random.Random(4).randbytes(90_000)
    vid = await upload(http, w, video, "clip.mp4", "video", 2)
    vmsg = {"Type": 43, "MediaId": vid, "FromUserName": w.me, "ToUserName": bob_web}
    sent = await w.post(
        f"/webwxsendvideomsg?fun=async&f=json&pass_ticket={w.pass_ticket}", {"Msg": vmsg}
    )
    assert sent["BaseResponse"]["Ret"] == 0, sent
    got = await bob.wait_msg(lambda m: m.msg_type == 43)
    assert got.media_len == len(video) and got.img_buf  # the placeholder thumbnail
    assert await bob.download("downloadvideo", got.msg_id) == video

    # refusals are BaseResponse answers, never a 404
    for path, m in (
        ("/webwxsendappmsg", {**msg, "Content": content.replace(media_id, "@nope")}),
        ("/webwxsendappmsg", {**msg, "Content": "not xml at all"}),
        ("/webwxsendappmsg", {**msg, "Content": content.replace("<type>6", "<type>5")}),
        ("/webwxsendvideomsg", {**vmsg, "MediaId": "@nope"}),
    ):
        out = await w.post(path, {"Msg": m})
        assert out["BaseResponse"]["Ret"] != 0, (path, out)
    out = await w.post("/webwxsendvideomsg", {"Msg": {**vmsg, "MediaId": "@nope"}})
    assert out["BaseResponse"]["Ret"] == MMRet.ERR_NOT_FOUND
    png = png_bytes()
    assert png  # an image upload sent as a file is a file
    pid = await upload(http, w, png, "p.png", "pic", 3)
    c2 = content.replace(media_id, pid).replace(str(len(doc)), str(len(png)))
    out = await w.post("/webwxsendappmsg", {"Msg": {**msg, "Content": c2, "LocalID": 6}})
    assert out["BaseResponse"]["Ret"] == 0, out
