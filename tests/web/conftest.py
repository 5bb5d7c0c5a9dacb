"""A real server in process, mobile users on the short link, and a small web client."""

from __future__ import annotations

import asyncio
import io
import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from google.protobuf.message import Message

from wxnet.proto import web as wp
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.enums import Selector
from wxnet.proto.syncdriver import Page, SyncCall, SyncDriver, drive
from wxnet.server.app import Server, start_server
from wxnet.server.config import ServerConfig
from wxnet.server.web.api import WEB_API_KEY, WebApi
from wxnet.sync.engine import EngineConfig, profile_item
from wxnet.sync.pg_store import PostgresStore
from wxnet.sync.sqlite_store import SQLiteStore
from wxnet.sync.store import Store

R = TypeVar("R", bound=Message)
CGI = "/cgi-bin/mmwebwx-bin"
#: Bound on every wait for a real event in these tests (they normally take milliseconds).
WAIT = 20.0


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: int = 300) -> bytes:
    from PIL import Image

    img = Image.new("RGB", (size, size), color)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def web_config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(
        host="127.0.0.1",
        long_port=0,
        http_port=0,
        data=tmp_path / "var",
        sync=EngineConfig(durability="NORMAL", contacts="open"),  # consent: test_consent
        synccheck_max_wait=10.0,
    )


@pytest.fixture
async def server(web_config: ServerConfig) -> AsyncIterator[Server]:
    """alice, bob and carol; alice has bob and carol as contacts and a group with both."""
    srv = await start_server(web_config)
    for name in ("alice", "bob", "carol"):
        await srv.engine.add_user(name, "secret1", name.title())
    try:
        yield srv
    finally:
        await srv.close()


def base_url(server: Server) -> str:
    return f"http://127.0.0.1:{server.http_port}"


def web_api(server: Server) -> WebApi:
    return server.app[WEB_API_KEY]


@dataclass
class Mobile:
    """A mobile-protocol device on the short link (the phone of the seed)."""

    http: aiohttp.ClientSession
    base: str
    user: str
    uin: int = 0
    session_key: str = ""
    key: bytes = b""
    seen: list[pb.AddMsg] = field(default_factory=list)
    items: list[pb.CmdItem] = field(default_factory=list)

    async def call(self, name: str, req: Message, resp_type: type[R]) -> R:
        if req.DESCRIPTOR.fields_by_name.get("base") is not None:
            req.base.session_key = self.session_key  # type: ignore[attr-defined]
            req.base.uin = self.uin  # type: ignore[attr-defined]
        async with self.http.post(
            f"{self.base}/cgi-bin/micromsg-bin/{name}", data=req.SerializeToString()
        ) as r:
            assert r.status == 200, await r.text()
            resp = resp_type()
            resp.ParseFromString(await r.read())
            return resp

    async def login(self) -> Mobile:
        req = pb.ManualAuthRequest(
            base=pb.BaseRequest(device_id=f"phone-{self.user}"),
            user_name=self.user,
            password="secret1",
            device_name="phone",
        )
        async with self.http.post(
            f"{self.base}/cgi-bin/micromsg-bin/manualauth", data=req.SerializeToString()
        ) as r:
            resp = pb.ManualAuthResponse()
            resp.ParseFromString(await r.read())
        assert resp.base.ret == 0, resp.base.err_msg
        self.uin, self.session_key = resp.uin, resp.session_key
        driver = SyncDriver(b"", commit=False)  # the snapshot; newsync commits later
        async for _event in drive(driver, self.sync_call):
            pass
        self.key = driver.key
        return self

    async def sync_call(self, call: SyncCall) -> Message:
        return await self.call(call.cgi.name, call.request, call.cgi.response)

    async def add(self, name: str) -> None:
        resp = await self.call(
            "verifyuser", pb.AddContactRequest(user_name=name), pb.AddContactResponse
        )
        assert resp.base.ret == 0, resp.base.err_msg

    async def room(self, topic: str, members: list[str]) -> str:
        resp = await self.call(
            "createchatroom",
            pb.CreateChatRoomRequest(topic=topic, members=members),
            pb.CreateChatRoomResponse,
        )
        assert resp.base.ret == 0, resp.base.err_msg
        return resp.chatroom.user_name

    async def send(self, to: str, text: str) -> int:
        m = pb.MicroMsg(to_user=to, content=text, msg_type=1, client_msg_id=secrets.token_hex(8))
        resp = await self.call("newsendmsg", pb.SendMsgRequest(list=[m]), pb.SendMsgResponse)
        assert resp.base.ret == 0 and resp.list[0].ret == 0, resp
        return resp.list[0].msg_id

    async def send_image(self, to: str, data: bytes) -> int:
        cid = secrets.token_hex(8)
        resp = pb.UploadMsgImgResponse()
        for pos in range(0, len(data), 60_000):
            req = pb.UploadMsgImgRequest(
                client_img_id=cid,
                to_user=to,
                total_len=len(data),
                start_pos=pos,
                data=data[pos : pos + 60_000],
            )
            resp = await self.call("uploadmsgimg", req, pb.UploadMsgImgResponse)
            assert resp.base.ret == 0, resp.base.err_msg
        assert resp.msg_id
        return resp.msg_id

    async def send_file(self, to: str, name: str, data: bytes) -> int:
        """A file over ``uploadappattach`` in 60 000-byte chunks; its MsgId."""
        cid, resp = secrets.token_hex(8), pb.UploadMediaResponse()
        for pos in range(0, len(data), 60_000):
            req = pb.UploadAppAttachRequest(
                client_msg_id=cid,
                to_user=to,
                total_len=len(data),
                start_pos=pos,
                data=data[pos : pos + 60_000],
                file_name=name,
            )
            resp = await self.call("uploadappattach", req, pb.UploadMediaResponse)
            assert resp.base.ret == 0, resp.base.err_msg
        assert resp.msg_id
        return resp.msg_id

    async def send_video(self, to: str, data: bytes, thumb: bytes = b"") -> int:
        cid, resp = secrets.token_hex(8), pb.UploadMediaResponse()
        for pos in range(0, len(data), 60_000):
            req = pb.UploadVideoRequest(
                client_msg_id=cid,
                to_user=to,
                total_len=len(data),
                start_pos=pos,
                data=data[pos : pos + 60_000],
                thumb=thumb if pos == 0 else b"",
                play_length=3,
            )
            resp = await self.call("uploadvideo", req, pb.UploadMediaResponse)
            assert resp.base.ret == 0, resp.base.err_msg
        assert resp.msg_id
        return resp.msg_id

    async def download(self, cgi: str, msg_id: int, thumb: bool = False) -> bytes:
        """A file (``downloadappattach``) or video (``downloadvideo``), chunk by chunk."""
        out = b""
        while True:
            req = pb.DownloadMediaRequest(msg_id=msg_id, start_pos=len(out), thumb=thumb)
            resp = await self.call(cgi, req, pb.DownloadMediaResponse)
            assert resp.base.ret == 0, resp.base.err_msg
            out += resp.data
            if len(out) >= resp.total_len or not resp.data:
                return out

    async def scan(self, uuid: str, confirm: bool = True) -> int:
        resp = await self.call(
            "scanqrcode", pb.ScanQrRequest(uuid=uuid, confirm=confirm), pb.ScanQrResponse
        )
        return resp.base.ret

    async def wait_msg(self, pred: Callable[[pb.AddMsg], bool]) -> pb.AddMsg:
        """Sync (long-polling with newsynccheck) until a message matching ``pred`` arrives."""
        item = await self.wait_item(
            lambda it: it.WhichOneof("body") == "add_msg" and pred(it.add_msg)
        )
        return item.add_msg

    async def wait_item(self, pred: Callable[[pb.CmdItem], bool]) -> pb.CmdItem:
        """Sync (long-polling with newsynccheck) until a sync item matching ``pred``
        arrives (or has arrived)."""
        for it in self.items:
            if pred(it):
                return it

        async def loop() -> pb.CmdItem:
            while True:
                driver = SyncDriver(self.key, selector=Selector.ALL, commit=False)
                found = None
                async for event in drive(driver, self.sync_call):
                    if not isinstance(event, Page):
                        continue
                    for item in event.items:
                        self.items.append(item)
                        if item.WhichOneof("body") == "add_msg":
                            self.seen.append(item.add_msg)
                        if found is None and pred(item):
                            found = item
                self.key = driver.key
                if found is not None:
                    return found
                if not driver.more:
                    await self.call(
                        "newsynccheck",
                        pb.SyncCheckRequest(key_buf=self.key, timeout_ms=5000),
                        pb.SyncCheckResponse,
                    )

        return await asyncio.wait_for(loop(), WAIT)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        yield s


@pytest.fixture
async def alice(server: Server, http: aiohttp.ClientSession) -> Mobile:
    """alice's phone, with bob and carol as contacts."""
    a = await Mobile(http, base_url(server), "alice").login()
    await a.add("bob")
    await a.add("carol")
    return a


@pytest.fixture
async def bob(server: Server, alice: Mobile, http: aiohttp.ClientSession) -> Mobile:
    return await Mobile(http, base_url(server), "bob").login()


@dataclass
class WebClient:
    """A minimal Web WeChat client speaking the API as wechat4u does (JSON, cookies)."""

    http: aiohttp.ClientSession
    base: str
    uin: int = 0
    sid: str = ""
    skey: str = ""
    pass_ticket: str = ""
    me: str = ""
    sync_key: dict[str, Any] = field(default_factory=dict)

    def br(self) -> dict[str, Any]:
        return {"Uin": self.uin, "Sid": self.sid, "Skey": self.skey, "DeviceID": "e123"}

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps({"BaseRequest": self.br(), **body}).encode()
        async with self.http.post(self.base + CGI + path, data=data) as r:
            assert r.status == 200
            obj: dict[str, Any] = json.loads(await r.text())
            return obj

    async def get_text(self, path: str) -> str:
        async with self.http.get(self.base + path) as r:
            return await r.text()

    async def login(self, phone: Mobile) -> WebClient:
        code, uuid = wp.parse_qrlogin(await self.get_text("/jslogin?appid=x&fun=new"))
        assert code == 200
        assert await phone.scan(uuid) == 0
        poll = wp.parse_login_poll(await self.get_text(f"{CGI}/login?uuid={uuid}&tip=0"))
        assert poll.code == 200
        async with self.http.get(poll.redirect_uri, allow_redirects=False) as r:
            assert r.status == 301
            t = wp.parse_login_ticket(await r.text())
        self.uin, self.sid, self.skey, self.pass_ticket = t.wxuin, t.wxsid, t.skey, t.pass_ticket
        init = await self.post("/webwxinit", {})
        assert init["BaseResponse"]["Ret"] == 0, init
        self.me = init["User"]["UserName"]
        self.sync_key = init["SyncKey"]
        return self

    async def synccheck(self) -> tuple[int, int]:
        q = wp.parse_web_synckey(self.sync_key).to_query()
        text = await self.get_text(f"{CGI}/synccheck?uin={self.uin}&sid={self.sid}&synckey={q}&r=1")
        return wp.parse_synccheck(text)

    async def sync(self) -> dict[str, Any]:
        out = await self.post("/webwxsync", {"SyncKey": self.sync_key, "rr": -1})
        if out["BaseResponse"]["Ret"] == 0:
            self.sync_key = out["SyncCheckKey"]
        return out

    async def wait_msg(self, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        async def loop() -> dict[str, Any]:
            while True:
                retcode, selector = await self.synccheck()
                assert retcode == 0
                if selector:
                    out = await self.sync()
                    for m in out["AddMsgList"]:
                        if pred(m):
                            found: dict[str, Any] = m
                            return found

        return await asyncio.wait_for(loop(), WAIT)


@pytest.fixture(params=["sqlite", "postgres"])
async def web_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A real store of each kind, empty (what the web side keeps: QR logins, uploads)."""
    st: Store
    if request.param == "sqlite":
        st = SQLiteStore(tmp_path / "wxnet.db", "NORMAL", profile_item=profile_item)
    else:
        st = PostgresStore(
            request.getfixturevalue("pg_server").new_database(), profile_item=profile_item
        )
    await st.start(lambda _ch: None)
    try:
        yield st
    finally:
        await st.aclose()
