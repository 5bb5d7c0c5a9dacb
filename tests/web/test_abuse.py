"""Attacks on a real ``wxnet serve`` process (issue 12, the web and media half): each test
makes the attack, shows it fails (a clear refusal, nothing held), and shows a normal
user on the same server keeps working meanwhile. Memory figures of the old attacks are
in docs/benchmarks.md; these tests assert behaviour, not times."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
import pytest_asyncio

from tests.web.conftest import CGI, WAIT, Mobile, WebClient, png_bytes
from tests.web.served import Served, client_from, served
from wxnet.proto import web as wp
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMRet

BOUNDARY = "wxnetabuse"


def ret(obj: dict[str, object]) -> int:
    base = obj["BaseResponse"]
    assert isinstance(base, dict)
    return int(base["Ret"])


def port_of(srv: Served) -> int:
    port = urlsplit(srv.base).port
    assert port is not None
    return port


async def raw(
    srv: Served, head: bytes, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection to the server that has sent ``head`` (and nothing more)."""
    r, w = await asyncio.open_connection("127.0.0.1", port_of(srv), local_addr=(source, 0))
    w.write(head)
    await w.drain()
    return r, w


async def read_response(r: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one HTTP/1.1 response."""
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), WAIT)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = b""
    if "content-length" in headers:
        body = await asyncio.wait_for(r.readexactly(int(headers["content-length"])), WAIT)
    return status, headers, body


def cookie_header(web: WebClient) -> str:
    return f"wxuin={web.uin}; wxsid={web.sid}"


async def barrier(srv: Served) -> None:
    """A round trip through the server's event loop on another connection: whatever
    was written before has been read by the server when this returns."""
    async with aiohttp.ClientSession() as h, h.get(srv.base + "/healthz") as r:
        assert r.status == 200


# One server for the module (each test attacks from addresses and accounts of its own);
# the disk-floor test starts its own.
pytestmark = pytest.mark.asyncio(loop_scope="module")
WEB = """
upload_timeout = 2.0
body_timeout = 2.0
uploads_per_account = 4
upload_bytes_per_account = 2000000
max_upload = 1500000
qr_max_pending = 60
qr_pending_per_address = 10
jslogin_burst = 10
jslogin_rate = 0.01
qrcode_burst = 5
qrcode_rate = 0.01
"""
SYNC = """
max_image_bytes = 8000000
uploads_per_account = 3
upload_bytes_per_account = 9000000
"""
_addresses = itertools.count(1)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def srv(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    users = ("alice", "bob", "carol", "dave")
    async with served(tmp_path_factory.mktemp("abuse"), web=WEB, sync=SYNC, users=users) as s:
        yield s


@pytest_asyncio.fixture(loop_scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """The normal user's client, from an address of its own."""
    async with client_from(f"127.0.3.{next(_addresses)}") as h:
        yield h


async def limited(srv: Served, limit: str) -> float:
    return (await srv.metrics()).get(f'wxnet_web_limited_total{{limit="{limit}"}}', 0.0)


def temp_parts(srv: Served) -> list[Path]:
    """Spooled parts of requests still arriving (none once they are answered)."""
    return list((srv.data / "web-spool").glob("in-*"))


async def users(srv: Served, http: aiohttp.ClientSession) -> tuple[Mobile, Mobile, WebClient]:
    """alice's phone (bob and carol are contacts), bob's phone, alice's web client."""
    alice = await Mobile(http, srv.base, "alice").login()
    await alice.add("bob")
    await alice.add("carol")
    bob = await Mobile(http, srv.base, "bob").login()
    web = await WebClient(http, srv.base).login(alice)
    return alice, bob, web


def upload_form(
    web: WebClient, data: bytes, media: int, total: int | None = None
) -> aiohttp.FormData:
    total = len(data) if total is None else total
    form = aiohttp.FormData()
    form.add_field("name", "x.png")
    form.add_field("size", str(total))
    chunks = (total + (512 << 10) - 1) // (512 << 10)
    if chunks > 1:
        form.add_field("chunks", str(chunks))
        form.add_field("chunk", "0")
    form.add_field(
        "uploadmediarequest",
        json.dumps({"BaseRequest": web.br(), "ClientMediaId": media, "TotalLen": total}),
    )
    form.add_field("filename", data, filename="x.png", content_type="application/octet-stream")
    return form


async def upload_chunk(
    http: aiohttp.ClientSession, web: WebClient, data: bytes, media: int, total: int | None = None
) -> dict[str, object]:
    form = upload_form(web, data, media, total)
    async with http.post(f"{web.base}{CGI}/webwxuploadmedia?f=json", data=form) as r:
        assert r.status == 200, await r.text()
        out: dict[str, object] = json.loads(await r.text())
        return out


async def send_image_from_web(
    http: aiohttp.ClientSession, web: WebClient, bob: Mobile, img: bytes, media: int
) -> None:
    """The normal user: upload an image on the web, send it, bob's phone gets it."""
    up = await upload_chunk(http, web, img, media)
    assert ret(up) == 0, up
    msg = {"Type": 3, "MediaId": up["MediaId"], "ToUserName": wp.web_user_name("bob")}
    out = await web.post("/webwxsendmsgimg", {"Msg": msg})
    assert ret(out) == 0, out
    got = await bob.wait_msg(lambda m: m.msg_type == 3 and m.msg_id == int(str(out["MsgID"])))
    assert got.media_len == len(img)


# --------------------------------------------------------------------- uploads
async def test_upload_without_session_is_answered_before_its_body(
    srv: Served, http: aiohttp.ClientSession
) -> None:
    _, bob, web = await users(srv, http)
    no_session, timeouts = (
        await limited(srv, "upload_no_session"),
        await limited(srv, "upload_timeout"),
    )
    # 100 strangers start multipart uploads (half chunked) and never send the body:
    # each is answered at once, from the headers alone (no session), and nothing of
    # its body is read or held.
    conns = []
    for i in range(100):
        length = "Transfer-Encoding: chunked" if i % 2 else "Content-Length: 500000"
        head = (
            f"POST {CGI}/webwxuploadmedia?f=json HTTP/1.1\r\nHost: x\r\n{length}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
        ).encode()
        conns.append(await raw(srv, head, "127.0.0.3"))
    for r, _ in conns:
        status, _, body = await read_response(r)
        assert status == 200 and ret(json.loads(body)) == wp.RET_SESSION_REJECTED
    # a logged-in client that stalls its body is cut off at upload_timeout
    stalled = (
        f"POST {CGI}/webwxuploadmedia?f=json HTTP/1.1\r\nHost: x\r\n"
        f"Cookie: {cookie_header(web)}\r\nContent-Length: 400000\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="filename"; '
        'filename="x"\r\n\r\n'
    ).encode() + b"z" * 1000
    r, w = await raw(srv, stalled)
    status, _, body = await read_response(r)
    assert ret(json.loads(body)) == -1 and b"in time" in body
    # a chunked body over the chunk cap is refused while it streams
    head = (
        f"POST {CGI}/webwxuploadmedia?f=json HTTP/1.1\r\nHost: x\r\n"
        f"Cookie: {cookie_header(web)}\r\nTransfer-Encoding: chunked\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
    ).encode()
    part = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="filename"; filename="x"\r\n\r\n'
    ).encode()
    r2, w2 = await raw(srv, head + b"%x\r\n%s\r\n" % (len(part), part))
    for _ in range(20):  # 20 x 64 KiB > 576 KiB, sent without waiting for an answer
        w2.write(b"10000\r\n" + b"y" * 0x10000 + b"\r\n")
    await w2.drain()
    status, _, body = await read_response(r2)
    assert ret(json.loads(body)) == MMRet.ERR_TOO_LARGE
    # meanwhile the normal user uploads and sends an image
    await send_image_from_web(http, web, bob, png_bytes(), 1)
    assert await limited(srv, "upload_no_session") == no_session + 100
    assert await limited(srv, "upload_timeout") == timeouts + 1
    for _, wr in [*conns, (r, w), (r2, w2)]:
        wr.close()
    assert temp_parts(srv) == []  # the refused parts were deleted
    assert srv.tracebacks() == []


async def test_web_upload_quotas_spool_to_disk(srv: Served, http: aiohttp.ClientSession) -> None:
    _, bob, web = await users(srv, http)
    before = (await srv.metrics())["wxnet_web_spool_bytes"]
    refused = await limited(srv, "upload_quota")
    # carol's account starts uploads and never finishes them: the first chunks go to
    # disk, not memory, until her account's quota is reached
    async with client_from("127.0.0.4") as h:
        carol = await Mobile(h, srv.base, "carol").login()
        cweb = await WebClient(h, srv.base).login(carol)
        chunk = os.urandom(512 << 10)
        outs = [await upload_chunk(h, cweb, chunk, m, total=1_400_000) for m in range(6)]
    rets = [ret(o) for o in outs]
    assert rets[:3] == [0, 0, 0]  # 3 x 512 KiB < 2,000,000 bytes
    assert rets[3:] == [MMRet.ERR_BUSY] * 3  # the bytes quota
    assert all("quota" in str(o["BaseResponse"]) for o in outs[3:])
    assert (await srv.metrics())["wxnet_web_spool_bytes"] - before == 3 * len(chunk)
    assert await limited(srv, "upload_quota") == refused + 3
    assert temp_parts(srv) == []
    # alice is not affected by carol's quota
    await send_image_from_web(http, web, bob, png_bytes(), 1)
    assert srv.tracebacks() == []


# ------------------------------------------------------------------ /jslogin
async def test_jslogin_flood_cannot_lock_out_a_browser(
    srv: Served, http: aiohttp.ClientSession
) -> None:
    alice = await Mobile(http, srv.base, "alice").login()
    rate, qrrate = await limited(srv, "jslogin_rate"), await limited(srv, "qrcode_rate")
    evicted = await limited(srv, "qr_evicted")

    async def jslogin(h: aiohttp.ClientSession) -> tuple[int, str]:
        async with h.get(srv.base + "/jslogin?appid=x&fun=new") as r:
            text = await r.text()
            code, uuid = wp.parse_qrlogin(text) if r.status == 200 else (r.status, "")
            return code, uuid

    # one address: its burst, then 429
    async with client_from("127.0.1.1") as h:
        codes = [(await jslogin(h))[0] for _ in range(15)]
    assert codes == [200] * 10 + [429] * 5
    # /qrcode: new renders are rate-limited per address; a cached image costs nothing
    async with client_from("127.0.2.1") as h:
        mine = [(await jslogin(h))[1] for _ in range(8)]
        statuses = []
        for u in mine:
            async with h.get(f"{srv.base}/qrcode/{u}") as r:
                statuses.append(r.status)
        assert statuses == [200] * 5 + [429] * 3
        for _ in range(20):
            async with h.get(f"{srv.base}/qrcode/{mine[0]}") as r:
                assert r.status == 200
    # many addresses fill the global cap many times over
    attackers: list[str] = []
    for a in range(2, 14):
        async with client_from(f"127.0.1.{a}") as h:
            for _ in range(10):
                code, uuid = await jslogin(h)
                assert code == 200
                attackers.append(uuid)
    # a browser still gets a code, and the flood that follows evicts only the
    # attackers' own logins (they hold the most)
    code, uuid = await jslogin(http)
    assert code == 200
    for a in range(14, 20):
        async with client_from(f"127.0.1.{a}") as h:
            for _ in range(10):
                assert (await jslogin(h))[0] == 200
    async with http.get(f"{srv.base}/qrcode/{uuid}") as r:
        assert r.status == 200 and (await r.read()).startswith(b"\x89PNG")
    assert await alice.scan(uuid) == 0
    async with http.get(f"{srv.base}{CGI}/login?uuid={uuid}&tip=0") as r:
        assert wp.parse_login_poll(await r.text()).code == 200
    assert await limited(srv, "jslogin_rate") == rate + 5
    assert await limited(srv, "qrcode_rate") == qrrate + 3
    assert await limited(srv, "qr_evicted") >= evicted + 70
    assert (await srv.metrics())["wxnet_qr_pending"] <= 70  # 60 waiting, used ones
    assert srv.tracebacks() == []


# ------------------------------------------------------------------ downloads
def noise_png(side: int) -> bytes:
    """An incompressible PNG of about 3 * side**2 bytes."""
    import io

    from PIL import Image

    img = Image.frombytes("RGB", (side, side), os.urandom(3 * side * side))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


async def test_undrained_downloads_hold_no_copies(srv: Served, http: aiohttp.ClientSession) -> None:
    alice, bob, web = await users(srv, http)
    img = noise_png(1500)  # 6.75 MB
    msg_id = await bob.send_image("alice", img)
    before = srv.rss()
    # 30 readers ask for the image and read only the response head
    conns = []
    for _ in range(30):
        head = (
            f"GET {CGI}/webwxgetmsgimg?MsgID={msg_id}&type=big HTTP/1.1\r\nHost: x\r\n"
            f"Cookie: {cookie_header(web)}\r\n\r\n"
        ).encode()
        conns.append(await raw(srv, head, "127.0.0.5"))
    for reader, _ in conns:
        status, headers, _ = await asyncio.wait_for(read_head(reader), WAIT)
        assert status == 200 and headers["content-length"] == str(len(img))
    grown = srv.rss() - before
    # building the file in memory held 30 x 6.75 MB (and more, buffered): > 200 MB
    assert grown < 50 << 20, grown
    # the normal user downloads the image whole meanwhile, web and thumbnail
    async with http.get(f"{srv.base}{CGI}/webwxgetmsgimg?msgid={msg_id}") as r:
        assert r.status == 200 and r.content_type == "image/png"
        assert await r.read() == img
    async with http.get(f"{srv.base}{CGI}/webwxgetmsgimg?msgid={msg_id}&type=slave") as r:
        assert r.status == 200 and (await r.read()).startswith(b"\xff\xd8")
    # the mobile CGI answers one bounded chunk, whatever length is asked for
    resp = await alice.call(
        "getmsgimg",
        pb.DownloadMsgImgRequest(msg_id=msg_id, start_pos=0, data_len=len(img)),
        pb.DownloadMsgImgResponse,
    )
    assert resp.base.ret == 0 and len(resp.data) == 64 * 1024
    for _, w in conns:
        w.close()
    assert srv.tracebacks() == []


async def read_head(r: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await r.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        k.strip().lower(): v.strip()
        for k, _, v in (line.partition(":") for line in lines[1:] if ":" in line)
    }
    return int(lines[0].split()[1]), headers, b""


# ---------------------------------------------------------------------- CSRF
async def test_cross_site_requests_are_refused(srv: Served, http: aiohttp.ClientSession) -> None:
    alice, bob, web = await users(srv, http)
    bob_web = wp.web_user_name("bob")
    attack = {"ToUserName": bob_web, "Content": "csrf", "Type": 1, "ClientMsgId": "c1"}
    body = json.dumps({"BaseRequest": {"Uin": 0, "Sid": ""}, "Msg": attack})
    url = f"{srv.base}{CGI}/webwxsendmsg"
    # the attacks of the issue, with the victim's cookies (as an old browser would
    # attach them): a text/plain form, a form from another Referer, a foreign Origin
    for headers in (
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded", "Referer": "http://evil/"},
        {"Content-Type": "application/json", "Origin": "http://evil.example"},
        {"Content-Type": "text/plain", "Origin": "null"},
    ):
        async with http.post(url, data=body, headers=headers) as r:
            assert r.status == 403, headers
    # an <img> GET does not log out (fetch metadata says cross-site, no skey)
    logout = f"{srv.base}{CGI}/webwxlogout?redirect=1&type=1"
    async with http.get(logout, headers={"Sec-Fetch-Site": "cross-site"}) as r:
        assert r.status == 403
    out = await web.post("/webwxsync", {"SyncKey": web.sync_key})
    assert ret(out) == 0  # still logged in
    # cookies are SameSite=Strict, the page forbids framing and foreign code
    async with http.get(f"{srv.base}/") as r:
        csp = r.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
        assert r.headers["X-Frame-Options"] == "DENY"
    async with client_from("127.0.0.6") as other:
        async with other.get(f"{srv.base}/jslogin?appid=x&fun=new") as r:
            _, uuid = wp.parse_qrlogin(await r.text())
        assert await alice.scan(uuid) == 0
        async with other.get(f"{srv.base}{CGI}/login?uuid={uuid}") as r:
            poll = wp.parse_login_poll(await r.text())
        async with other.get(poll.redirect_uri, allow_redirects=False) as r:
            for c in r.headers.getall("Set-Cookie"):
                assert "SameSite=Strict" in c, c
    # the normal user: same-origin POSTs, clients without Origin, POST logout
    msg = {**attack, "Content": "legit", "ClientMsgId": "c2"}
    legit = json.dumps({"BaseRequest": web.br(), "Msg": msg}).encode()
    async with http.post(url, data=legit, headers={"Origin": srv.base}) as r:
        assert r.status == 200 and ret(json.loads(await r.text())) == 0
    await bob.wait_msg(lambda m: m.content == "legit")
    assert all(m.content != "csrf" for m in bob.seen)  # it would have come first
    async with http.post(logout, headers={"Origin": srv.base}) as r:
        assert r.status == 200
    assert ret(await web.post("/webwxsync", {"SyncKey": web.sync_key})) == wp.RET_LOGIN_ELSEWHERE
    assert srv.tracebacks() == []


# ------------------------------------------------------------ split JSON bodies
def with_client_id(cid: str) -> Callable[[pb.AddMsg], bool]:
    return lambda m: m.client_msg_id == cid


async def test_json_body_in_pieces(srv: Served, http: aiohttp.ClientSession) -> None:
    _, bob, web = await users(srv, http)
    for i in range(3):
        text = f"long {i} " + "x" * 15_000  # a 20 KB body: content and padding
        body = json.dumps(
            {
                "BaseRequest": web.br(),
                "Msg": {
                    "ToUserName": wp.web_user_name("bob"),
                    "Content": text,
                    "Type": 1,
                    "ClientMsgId": f"split{i}",
                    "Pad": "p" * 5000,
                },
            }
        ).encode()
        head = (
            f"POST {CGI}/webwxsendmsg HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        r, w = await raw(srv, head + body[:7000])
        await barrier(srv)  # the server has read the first piece
        w.write(body[7000:14000])
        await w.drain()
        await barrier(srv)
        w.write(body[14000:])
        status, _, out = await read_response(r)
        assert status == 200 and ret(json.loads(out)) == 0, out
        w.close()
        got = await bob.wait_msg(with_client_id(f"split{i}"))
        assert got.from_user == "alice" and got.content == text
    # a body that stops coming is answered at body_timeout
    r, w = await raw(srv, head + body[:100])
    status, _, out = await read_response(r)
    assert ret(json.loads(out)) == -1 and b"in time" in out
    w.close()
    assert srv.tracebacks() == []


# ------------------------------------------------------------- oversized values
async def test_oversized_values(srv: Served, http: aiohttp.ClientSession) -> None:
    _, bob, web = await users(srv, http)
    for q in (f"msgid={2**63}", f"MsgID={10**30}", "msgid=-1", "msgid=1e5", f"msgid={2**64}"):
        for ep in ("webwxgetmsgimg", "webwxgetvoice"):
            async with http.get(f"{srv.base}{CGI}/{ep}?{q}") as r:
                assert r.status == 400, (ep, q)
    deep = "[" * 1000 + "]" * 1000
    deeper = "[" * 100_000 + "]" * 100_000
    huge: list[tuple[str, dict[str, object]]] = [
        ("webwxrevokemsg", {"SvrMsgId": str(10**30), "ClientMsgId": "x"}),
        ("webwxrevokemsg", {"SvrMsgId": 2**63, "ClientMsgId": 10**30}),
        ("webwxrevokemsg", {"SvrMsgId": 2**64 + 5, "ClientMsgId": "y"}),
        (
            "webwxsendmsg",
            {
                "Msg": {
                    "ToUserName": "@" + "0" * 5000,
                    "Content": "x",
                    "ClientMsgId": 10**30,
                    "Type": 10**30,
                }
            },
        ),
        ("webwxsync", {"SyncKey": {"Count": 10**30, "List": [{"Key": 1, "Val": 10**30}]}}),
        ("webwxsync", {"SyncKey": {"Count": 1, "List": [{"Key": 2**63, "Val": 1}]}}),
        ("webwxsendmsgimg", {"Msg": {"ToUserName": "filehelper", "MediaId": 10**30}}),
        ("webwxcreatechatroom", {"MemberList": [{"UserName": 10**30}], "Topic": 10**30}),
    ]
    for ep, payload in huge:
        out = await web.post("/" + ep, payload)
        assert ret(out) != 0, (ep, out)
    for raw_body in (deep, deeper, '{"a":' * 5000 + "1" + "}" * 5000):
        for ep in ("webwxsendmsg", "webwxsync", "webwxinit"):
            data = raw_body.encode()
            async with http.post(f"{srv.base}{CGI}/{ep}", data=data) as r:
                assert r.status == 200
                assert ret(json.loads(await r.text())) == -1
    await bob.send("alice", "still fine")
    await web.wait_msg(lambda m: m["Content"] == "still fine")
    assert srv.tracebacks() == []


# ------------------------------------------------------------ mobile uploads
async def start_image(who: Mobile, total: int) -> pb.UploadMsgImgResponse:
    """The first bytes of an image to oneself, never finished."""
    req = pb.UploadMsgImgRequest(
        client_img_id=secrets.token_hex(8),
        to_user=who.user,
        total_len=total,
        start_pos=0,
        data=b"\x89PNG" + b"\0" * 500,
    )
    return await who.call("uploadmsgimg", req, pb.UploadMsgImgResponse)


async def test_mobile_upload_quotas(srv: Served, http: aiohttp.ClientSession) -> None:
    _, bob, _ = await users(srv, http)
    dave = await Mobile(http, srv.base, "dave").login()
    metrics = await srv.metrics()
    # dave starts uploads he never finishes: the declared bytes, then the count
    rets = [(await start_image(dave, 4_000_000)).base for _ in range(3)]
    assert [b.ret for b in rets] == [0, 0, MMRet.ERR_BUSY]
    assert "at most 9000000" in rets[2].err_msg
    rets = [(await start_image(dave, 1000)).base for _ in range(2)]
    assert [b.ret for b in rets] == [0, MMRet.ERR_BUSY]
    assert "unfinished uploads" in rets[1].err_msg
    # bob is not affected
    await bob.send_image("alice", png_bytes())
    after = await srv.metrics()
    for reason in ("bytes", "count"):
        name = f'wxnet_upload_refused_total{{reason="{reason}"}}'
        assert after[name] == metrics.get(name, 0) + 1
    assert srv.tracebacks() == []


async def test_disk_floor_keeps_text_flowing(tmp_path: Path) -> None:
    """Below the free-space floor no upload grows, and text still goes through."""
    sync = f"min_free_disk_bytes = {1 << 60}"
    async with served(tmp_path, sync=sync, users=("alice", "bob")) as srv:
        async with client_from("127.0.4.1") as http:
            alice = await Mobile(http, srv.base, "alice").login()
            await alice.add("bob")
            bob = await Mobile(http, srv.base, "bob").login()
            resp = await start_image(bob, 1000)
            assert resp.base.ret == MMRet.ERR_BUSY and "disk" in resp.base.err_msg
            web = await WebClient(http, srv.base).login(alice)
            out = await upload_chunk(http, web, png_bytes(), 1)
            assert ret(out) == MMRet.ERR_BUSY and "disk" in str(out["BaseResponse"])
            await bob.send("alice", "text still works")
            await alice.wait_msg(lambda m: m.content == "text still works")
            metrics = await srv.metrics()
            assert metrics['wxnet_upload_refused_total{reason="disk"}'] == 1
        assert srv.tracebacks() == []
