"""The lab's own small client on the protocol core: just enough of S9-S14 to run a case.

It finds the service the way the seed saw the app do it: names by DNS, or the built-in
addresses when DNS fails (S9); then the long link on 8080, else HTTP short links on 80,
else (when configured) the long link on the extra port 14000 (S12, S14); after
``attempts`` failed rounds it gives up and says the network is poor (S13). Once in, every
request goes over the link it chose: ``manualauth``, ``newinit``, ``newsendmsg``,
``uploadmsgimg``, ``newsync`` (woken by notify cmd 24 on the long link, or by the
``newsynccheck`` long poll on the short link).

It exists so the lab can run on the server alone (and as the always-reachable peer in
the internet namespace); :mod:`wxnet.lab.agent` uses it when the client SDK
(``wxnet.client``) is not installed or not asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import aiohttp
from google.protobuf.message import DecodeError, Message

from wxnet._compat import wait_for
from wxnet.client.basiclink import BasicLink
from wxnet.client.errors import TransportError
from wxnet.lab.results import Link, Source
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.enums import MsgType, Selector
from wxnet.proto.errors import LocalProtocolError, MMError, check_base
from wxnet.proto.syncdriver import Page, SyncDriver

__all__ = [
    "LinkError",
    "LongLink",
    "Path",
    "ProbeClient",
    "ShortLink",
    "Transport",
    "find_path",
    "resolve",
]

M = TypeVar("M", bound=Message)

#: The transport failed (connect, timeout, closed, bad HTTP status): the client's own
#: :class:`~wxnet.client.errors.TransportError`, under the one error tree.
LinkError = TransportError


class Transport(Protocol):
    link: Link

    async def call(self, name: str, request: Message, response: type[M], timeout: float) -> M:
        """Send one CGI request; return its decoded reply (MM errors raise MMError)."""
        ...

    async def wait_news(self, key: bytes, base: pb.BaseRequest, timeout: float) -> None:
        """Return when the server says there is news after ``key`` (or at the timeout)."""
        ...

    async def close(self) -> None: ...


def _decode(kind: type[M], body: bytes) -> M:
    msg = kind()
    try:
        msg.ParseFromString(body)
    except DecodeError as exc:
        raise LinkError(f"undecodable {kind.__name__}: {exc}") from exc
    return msg


class LongLink:
    """One long-link TCP connection (a :class:`~wxnet.client.basiclink.BasicLink`):
    requests matched to replies by seq; notifies (cmd 24) wake :meth:`wait_news`."""

    def __init__(self, basic: BasicLink, link: Link = Link.LONG) -> None:
        self.link = link
        self._basic = basic
        self._news = asyncio.Event()
        basic.on_notify = lambda _selector: self._news.set()
        basic.on_event = lambda _event: self._news.set()

    @classmethod
    async def connect(cls, host: str, port: int, timeout: float, link: Link) -> LongLink:
        return cls(await BasicLink.connect(host, port, timeout=timeout), link)

    async def noop(self, timeout: float) -> None:
        await self._basic.noop(timeout)

    async def call(self, name: str, request: Message, response: type[M], timeout: float) -> M:
        try:
            return await self._basic.call(name, request, response, timeout)
        except LocalProtocolError as exc:
            raise LinkError(f"{name}: {exc}") from exc

    async def wait_news(self, key: bytes, base: pb.BaseRequest, timeout: float) -> None:
        if self._basic.closed.is_set():
            raise LinkError(self._basic.close_reason)
        with contextlib.suppress(TimeoutError):
            await wait_for(self._news.wait(), timeout)
        self._news.clear()

    async def close(self) -> None:
        await self._basic.wait_closed()


class ShortLink:
    """HTTP short links: one POST per request (S12, S30)."""

    link = Link.SHORT

    def __init__(self, host: str, port: int) -> None:
        self.base_url = f"http://{host}:{port}"
        self._session = aiohttp.ClientSession(
            headers={"User-Agent": "MicroMessenger Client", "Connection": "close"}
        )

    async def get(self, path: str, timeout: float) -> bytes:
        try:
            async with self._session.get(
                self.base_url + path, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                data = await resp.read()
                if resp.status != 200:
                    raise LinkError(f"GET {path}: HTTP {resp.status}")
                return data
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise LinkError(f"GET {self.base_url}{path}: {exc or 'timed out'}") from exc

    async def call(self, name: str, request: Message, response: type[M], timeout: float) -> M:
        url = f"{self.base_url}/cgi-bin/micromsg-bin/{name}"
        try:
            async with self._session.post(
                url,
                data=request.SerializeToString(),
                headers={"Content-Type": "application/octet-stream"},
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise LinkError(f"POST {name}: HTTP {resp.status} {body[:200]!r}")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise LinkError(f"POST {url}: {exc or 'timed out'}") from exc
        resp_msg = _decode(response, body)
        check_base(resp_msg, name)
        return resp_msg

    async def wait_news(self, key: bytes, base: pb.BaseRequest, timeout: float) -> None:
        req = pb.SyncCheckRequest(base=base, key_buf=key, timeout_ms=int(timeout * 1000))
        await self.call("newsynccheck", req, pb.SyncCheckResponse, timeout + 5)

    async def close(self) -> None:
        await self._session.close()


@dataclass(frozen=True, slots=True)
class Path:
    """How the client reached the service."""

    source: Source
    link: Link
    address: str
    port: int


async def resolve(name: str, timeout: float) -> list[str]:
    """IPv4 addresses of ``name`` from the system resolver (in the lab: the phone's
    resolv.conf, pointing at the lab's DNS). Raises OSError/TimeoutError on failure."""
    loop = asyncio.get_running_loop()
    infos = await wait_for(
        loop.getaddrinfo(name, None, family=socket.AF_INET, type=socket.SOCK_STREAM), timeout
    )
    addrs = list(dict.fromkeys(str(i[4][0]) for i in infos))
    if not addrs:
        raise OSError(f"no address for {name}")
    return addrs


@dataclass
class ProbeConfig:
    long_name: str
    short_name: str
    builtin: Sequence[str] = ()
    long_port: int = 8080
    short_port: int = 80
    extra_port: int | None = None
    connect_timeout: float = 2.0
    request_timeout: float = 8.0
    attempts: int = 2


@dataclass
class PathSearch:
    """What :func:`find_path` tried (for the report)."""

    tried: list[str] = field(default_factory=list)
    rounds: int = 0


async def find_path(
    cfg: ProbeConfig, log: Callable[[str], None] = lambda s: None
) -> tuple[Path, Transport] | None:
    """Find a way to the service (see the module docstring); None after
    ``cfg.attempts`` rounds with no way through (the network is poor, S13)."""
    for round_no in range(1, max(1, cfg.attempts) + 1):
        long_addrs, short_addrs, source = await _addresses(cfg, log)
        for addr in long_addrs:
            try:
                ll = await LongLink.connect(addr, cfg.long_port, cfg.connect_timeout, Link.LONG)
            except LinkError as exc:
                log(f"long link {addr}:{cfg.long_port} failed: {exc}")
                continue
            try:
                await ll.noop(cfg.connect_timeout)
            except LinkError as exc:
                log(f"long link {addr}:{cfg.long_port} noop failed: {exc}")
                await ll.close()
                continue
            return Path(source, Link.LONG, addr, cfg.long_port), ll
        for addr in short_addrs:
            sl = ShortLink(addr, cfg.short_port)
            try:
                await sl.get("/healthz", cfg.connect_timeout)
            except LinkError as exc:
                log(f"short link {addr}:{cfg.short_port} failed: {exc}")
                await sl.close()
                continue
            return Path(source, Link.SHORT, addr, cfg.short_port), sl
        if cfg.extra_port:
            for addr in long_addrs:
                try:
                    ll = await LongLink.connect(
                        addr, cfg.extra_port, cfg.connect_timeout, Link.EXTRA
                    )
                    await ll.noop(cfg.connect_timeout)
                except LinkError as exc:
                    log(f"extra port {addr}:{cfg.extra_port} failed: {exc}")
                    continue
                return Path(source, Link.EXTRA, addr, cfg.extra_port), ll
        log(f"round {round_no}: no way to the service")
    return None


async def _addresses(
    cfg: ProbeConfig, log: Callable[[str], None]
) -> tuple[list[str], list[str], Source]:
    try:
        long_addrs = await resolve(cfg.long_name, cfg.connect_timeout)
        short_addrs = await resolve(cfg.short_name, cfg.connect_timeout)
        return long_addrs, short_addrs, Source.DNS
    except (OSError, TimeoutError) as exc:
        log(f"DNS failed ({exc or 'timed out'}); using built-in addresses")
        return list(cfg.builtin), list(cfg.builtin), Source.BUILTIN


@dataclass
class Received:
    """Messages seen by a client, deduplicated by msg_id (S19). A text counted twice in
    :meth:`duplicated` came back under more than one msg_id (a failed server dedup)."""

    by_msg_id: dict[int, pb.AddMsg] = field(default_factory=dict)

    def add(self, msg: pb.AddMsg) -> bool:
        if msg.msg_id in self.by_msg_id:
            return False
        self.by_msg_id[msg.msg_id] = msg
        return True

    def texts(self, from_user: str, prefix: str) -> list[pb.AddMsg]:
        """Texts from ``from_user`` whose content starts with ``prefix``."""
        return [
            m
            for m in self.by_msg_id.values()
            if m.from_user == from_user
            and m.msg_type == MsgType.TEXT
            and m.content.startswith(prefix)
        ]

    def images(self, from_user: str, exclude: set[int]) -> list[pb.AddMsg]:
        return [
            m
            for m in self.by_msg_id.values()
            if m.from_user == from_user and m.msg_type == MsgType.IMAGE and m.msg_id not in exclude
        ]

    def duplicated(self, from_user: str, prefix: str) -> int:
        contents = [m.content for m in self.texts(from_user, prefix)]
        return len(contents) - len(set(contents))


class ProbeClient:
    """A logged-in session over one transport."""

    def __init__(self, transport: Transport, timeout: float) -> None:
        self.t = transport
        self.timeout = timeout
        self.base = pb.BaseRequest()
        self.key = b""
        self.user = ""
        self.received = Received()

    async def login(self, user: str, password: str, device: str) -> None:
        req = pb.ManualAuthRequest(
            base=pb.BaseRequest(device_id=device), user_name=user, password=password,
            device_name=device,
        )  # fmt: skip
        resp = await self.t.call("manualauth", req, pb.ManualAuthResponse, self.timeout)
        self.base = pb.BaseRequest(session_key=resp.session_key, uin=resp.uin, device_id=device)
        self.user = resp.user_name or user
        self.key = b""
        await self.sync()  # from no key: newinit
        if isinstance(self.t, LongLink):
            ident = pb.IdentifyRequest(base=self.base, key_buf=self.key)
            await self.t.call("identify", ident, pb.IdentifyResponse, self.timeout)

    def _apply(self, items: Sequence[pb.CmdItem]) -> None:
        for item in items:
            if item.WhichOneof("body") == "add_msg":
                self.received.add(item.add_msg)

    async def sync(self) -> None:
        """Run the shared sync loop (SyncDriver): newinit from no key, else newsync until
        continue_flag is clear, newinit again on a refused key. No syncdone: presenting
        the new key in the next newsync commits it (S19)."""
        driver = SyncDriver(self.key, base=self.base, selector=Selector.ALL, commit=False)
        while (call := driver.next_request()) is not None:
            try:
                resp = await self.t.call(
                    call.cgi.name, call.request, call.cgi.response, self.timeout
                )
            except MMError as exc:
                driver.receive_error(exc)  # a KeyReset, or it raises
                continue
            event = driver.receive(resp)
            if isinstance(event, Page):
                self._apply(event.items)
        self.key = driver.key

    async def wait_news(self, timeout: float) -> None:
        await self.t.wait_news(self.key, self.base, timeout)

    async def send_text(self, to: str, text: str, client_msg_id: str) -> pb.SendMsgResult:
        msg = pb.MicroMsg(
            to_user=to,
            content=text,
            msg_type=MsgType.TEXT,
            create_time=int(time.time()),
            client_msg_id=client_msg_id,
        )
        req = pb.SendMsgRequest(base=self.base, list=[msg])
        resp = await self.t.call("newsendmsg", req, pb.SendMsgResponse, self.timeout)
        if len(resp.list) != 1:
            raise LinkError(f"newsendmsg returned {len(resp.list)} results for one message")
        result = resp.list[0]
        err = MMError.from_base(result, f"send {client_msg_id}")
        if err is not None:
            raise err
        return result

    async def send_image(self, to: str, data: bytes, client_img_id: str, chunk: int) -> int:
        """Upload an image in chunks (S24); returns the message id."""
        pos = 0
        for _ in range(len(data) // max(1, chunk) + 10):
            req = pb.UploadMsgImgRequest(
                base=self.base, client_img_id=client_img_id, to_user=to, total_len=len(data),
                start_pos=pos, data=data[pos : pos + chunk],
            )  # fmt: skip
            resp = await self.t.call("uploadmsgimg", req, pb.UploadMsgImgResponse, self.timeout)
            if resp.msg_id:
                return int(resp.msg_id)
            if resp.start_pos <= pos:
                raise LinkError(f"image upload stuck at offset {pos}")
            pos = resp.start_pos
        raise LinkError("image upload did not complete")

    async def close(self) -> None:
        await self.t.close()
