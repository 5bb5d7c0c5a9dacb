"""A small test client that speaks the wire protocol (long link and short link)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from google.protobuf.message import Message

from wxnet.client.basiclink import BasicLink
from wxnet.proto import commands as C
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.framing import Packet
from wxnet.proto.longlink import Event
from wxnet.proto.syncdriver import Page, SyncDriver
from wxnet.proto.synckey import SyncKey

M = TypeVar("M", bound=Message)
WAIT = 10.0  # bound on every wait for a real event


@dataclass
class Account:
    user_name: str
    uin: int = 0
    sid: str = ""
    device_id: str = ""
    key: SyncKey = field(default_factory=SyncKey)

    def base(self) -> pb.BaseRequest:
        return pb.BaseRequest(session_key=self.sid, uin=self.uin, device_id=self.device_id)


class LongClient:
    """One long link (a :class:`BasicLink`): request/reply by seq, notifies collected in a
    queue, the server's other packets (a protocol error) in ``other``."""

    def __init__(self, link: BasicLink) -> None:
        self.link = link
        self.notifies: asyncio.Queue[int] = asyncio.Queue()
        self.other: asyncio.Queue[Event] = asyncio.Queue()
        self.closed = link.closed
        link.on_notify = self.notifies.put_nowait
        link.on_event = self.other.put_nowait

    @classmethod
    async def connect(
        cls, port: int, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
    ) -> LongClient:
        return cls(await BasicLink.connect(host, port, timeout=WAIT, ssl=tls))

    def send_raw(self, data: bytes) -> None:
        self.link.send_raw(data)

    async def request(self, cmd: int, body: bytes, seq: int | None = None) -> Packet:
        """Any cmd (a CGI's on the connection's next seq, or a raw one on ``seq``)."""
        if cmd == C.CMD_NOOP:
            got = await self.link.noop(WAIT, None if seq in (None, C.SEQ_NOOP) else seq)
            return Packet(C.reply_cmd(cmd), got, b"")
        cgi = C.BY_CMD.get(cmd)
        if cgi is not None and seq is None:
            seq, fut = self.link.send(cgi, body)
        else:
            seq = seq if seq is not None else 0x7FFF0000 + cmd % 0xFFFF
            fut = self.link.request_raw(cmd, seq, body)
        return Packet(C.reply_cmd(cmd), seq, await self.link.wait_reply(seq, fut, WAIT))

    async def call(self, name: str, req: Message, resp_type: type[M]) -> M:
        """The reply, decoded; MM errors stay in ``base`` for the test to look at."""
        return await self.link.call(name, req, resp_type, WAIT, check=False)

    async def next_notify(self) -> int:
        return await asyncio.wait_for(self.notifies.get(), WAIT)

    async def close(self) -> None:
        await self.link.wait_closed(WAIT)


class ShortClient:
    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = session

    async def call(self, name: str, req: Message, resp_type: type[M], timeout: float = WAIT) -> M:
        async with self.http.post(
            f"{self.base_url}/cgi-bin/micromsg-bin/{name}",
            data=req.SerializeToString(),
            headers={"Content-Type": "application/octet-stream"},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as r:
            assert r.status == 200, await r.text()
            out = resp_type()
            out.ParseFromString(await r.read())
            return out


@contextlib.asynccontextmanager
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


class Device:
    """A logged-in device on a long link, with sync helpers."""

    def __init__(self, link: LongClient, acc: Account) -> None:
        self.link, self.acc = link, acc
        self.seen: list[pb.CmdItem] = []

    @classmethod
    async def login(
        cls, port: int, user: str, password: str = "secret1", device: str = "phone"
    ) -> Device:
        link = await LongClient.connect(port)
        acc = Account(user, device_id=f"{user}-{device}")
        r = await link.call(
            "manualauth",
            pb.ManualAuthRequest(
                base=pb.BaseRequest(device_id=acc.device_id),
                user_name=user,
                password=password,
                device_name=device,
            ),
            pb.ManualAuthResponse,
        )
        assert r.base.ret == 0, r.base.err_msg
        acc.uin, acc.sid = r.uin, r.session_key
        dev = cls(link, acc)
        ident = await link.call(
            "identify", pb.IdentifyRequest(base=acc.base()), pb.IdentifyResponse
        )
        assert ident.base.ret == 0, ident.base.err_msg
        return dev

    async def call(self, name: str, req: Any, resp_type: type[M]) -> M:
        req.base.CopyFrom(self.acc.base())
        return await self.link.call(name, req, resp_type)

    async def sync(self, selector: int = 0) -> list[pb.CmdItem]:
        """newsync (from the whole log when the key is empty) until continue_flag is
        clear, on the shared SyncDriver; returns the new items."""
        got: list[pb.CmdItem] = []
        driver = SyncDriver(
            self.acc.key.to_bytes(),
            base=self.acc.base(),
            selector=selector,
            commit=False,
            snapshot=False,
        )
        while (call := driver.next_request()) is not None:
            r = await self.link.call(call.cgi.name, call.request, call.cgi.response)
            page = driver.receive(r)
            assert isinstance(page, Page)
            got += list(page.items)
        self.acc.key = SyncKey.from_bytes(driver.key)
        self.seen += got
        return got

    async def messages(self) -> list[pb.AddMsg]:
        return [i.add_msg for i in await self.sync() if i.WhichOneof("body") == "add_msg"]

    async def send(self, to: str, text: str, cmid: str) -> pb.SendMsgResult:
        r = await self.call(
            "newsendmsg",
            pb.SendMsgRequest(
                list=[pb.MicroMsg(to_user=to, content=text, msg_type=1, client_msg_id=cmid)]
            ),
            pb.SendMsgResponse,
        )
        assert r.base.ret == 0, r.base.err_msg
        return r.list[0]

    async def close(self) -> None:
        await self.link.close()
