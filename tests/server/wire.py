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

from wxnet.proto import commands as C
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.framing import Packet, PacketDecoder, encode_packet
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
    """One long link: request/reply by seq, notifies collected in a queue."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = PacketDecoder()
        self.seq = 0
        self.waiting: dict[int, asyncio.Future[Packet]] = {}
        self.notifies: asyncio.Queue[int] = asyncio.Queue()
        self.other: asyncio.Queue[Packet] = asyncio.Queue()
        self.closed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(
        cls, port: int, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
    ) -> LongClient:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=tls), WAIT)
        return cls(r, w)

    async def _read(self) -> None:
        try:
            while data := await self.reader.read(65536):
                for p in self.decoder.packets(data):
                    if p.cmd == C.CMD_NOTIFY:
                        self.notifies.put_nowait(int.from_bytes(p.body, "big"))
                    elif p.seq in self.waiting and p.cmd >= C.REPLY_OFFSET:
                        self.waiting.pop(p.seq).set_result(p)
                    else:
                        self.other.put_nowait(p)
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed.set()
            for f in self.waiting.values():
                if not f.done():
                    f.set_exception(ConnectionError("link closed"))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def request(self, cmd: int, body: bytes, seq: int | None = None) -> Packet:
        if seq is None:
            self.seq += 1
            seq = self.seq
        fut: asyncio.Future[Packet] = asyncio.get_running_loop().create_future()
        self.waiting[seq] = fut
        self.writer.write(encode_packet(cmd, seq, body))
        return await asyncio.wait_for(fut, WAIT)

    async def call(self, name: str, req: Message, resp_type: type[M]) -> M:
        cgi = C.BY_NAME[name]
        seq = C.SEQ_IDENTIFY if name == "identify" else None
        p = await self.request(cgi.cmd, req.SerializeToString(), seq)
        assert p.cmd == C.reply_cmd(cgi.cmd)
        out = resp_type()
        out.ParseFromString(p.body)
        return out

    async def next_notify(self) -> int:
        return await asyncio.wait_for(self.notifies.get(), WAIT)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


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
        """newsync until continue_flag is clear; returns the new items."""
        got: list[pb.CmdItem] = []
        while True:
            r = await self.call(
                "newsync",
                pb.NewSyncRequest(key_buf=self.acc.key.to_bytes(), selector=selector),
                pb.NewSyncResponse,
            )
            assert r.base.ret == 0, r.base.err_msg
            got += list(r.cmd_list)
            self.acc.key = SyncKey.from_bytes(r.key_buf)
            if not r.continue_flag:
                break
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
