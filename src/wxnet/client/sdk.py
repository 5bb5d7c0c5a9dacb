"""The client SDK: one :class:`Client` per profile (DESIGN section 5; S8-S16, S19, S22-S25).

It puts the pure policies to work over the two transports:

* **finding the server**: DNS (or the server URL), the newgetdns list cached with its
  TTL, built-in addresses; long link preferred, short link when it cannot connect, the
  extra long-link port last; bans and staggered racing (:mod:`wxnet.client.addresses`);
* **the long link**: identify, smart heartbeat, notify -> sync; a background task keeps
  reconnecting with back-off and moves back from the short link when it can;
* **the short link**: every request as an HTTP POST, news by the long poll
  ``newsynccheck`` while the long link is down;
* **sync**: newsync until ContinueFlag is clear, each batch applied once in the profile
  with its key (S19), then ``syncdone`` commits; ``newinit`` when the key is refused;
* **the outbox**: bounded retries, then failed (S23); ``resend`` keeps the ClientMsgId;
* **media**: image chunks in parallel resumed from the server's offset (S24); voice
  streamed in chunks with end and cancel flags (S25).

Typical use::

    store = ProfileStore.open(profile_dir)
    async with Client(store, config) as client:   # start() ... close()
        row = await client.send_text("bob", "hello")
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError, Message

from wxnet._compat import wait_for
from wxnet.client.addresses import Address, AddressBook, AddressSource
from wxnet.client.backoff import DEFAULT_LADDER, ReconnectBackoff
from wxnet.client.errors import NotLoggedIn, SendFailed, TransportError
from wxnet.client.heartbeat import NetworkHeartbeat, SmartHeartbeat
from wxnet.client.longlink import LongLink, race_connect
from wxnet.client.newdns import (
    CachedDns,
    NewDnsError,
    long_candidates,
    parse_newdns,
    short_candidates,
)
from wxnet.client.resolver import DnsFailure, Resolver, SystemResolver, UdpResolver
from wxnet.client.sending import PoorNetworkDetector, SendRetryPolicy, Verdict
from wxnet.client.shortlink import ShortLink
from wxnet.client.store import AppliedItem, OutboxRow, ProfileStore, SessionInfo
from wxnet.proto import commands as C
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.enums import MsgType, Selector
from wxnet.proto.errors import MMError, MMRet, check_base

__all__ = [
    "MSG_IMAGE",
    "MSG_TEXT",
    "MSG_VOICE",
    "SELECTOR_ALL",
    "Client",
    "ClientConfig",
    "ClientEvent",
    "item_to_json",
    "parse_server_url",
]

MSG_TEXT: int = MsgType.TEXT
MSG_IMAGE: int = MsgType.IMAGE
MSG_VOICE: int = MsgType.VOICE
SELECTOR_ALL = int(Selector.ALL)
CONFIG_KEY = "config"
#: While DNS fails, look the names up again at most this often (seconds).
REFRESH_EVERY = 30.0
#: Bound on waiting for each background task to end in close().
CLOSE_WAIT = 5.0
R = TypeVar("R", bound=Message)


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Where the service is and how to behave. Saved in the profile at login."""

    #: The short-link base for simple set-ups (``http://host:port``); the long-link
    #: addresses then come from newgetdns.
    server_url: str = ""
    long_name: str = "long.wxnet.local"
    short_name: str = "short.wxnet.local"
    dns_name: str = "dns.wxnet.local"
    long_ports: tuple[int, ...] = (8080,)
    short_ports: tuple[int, ...] = (8000,)
    #: QQ's 14000 (S14): tried only after every other long-link address.
    extra_long_port: int | None = None
    builtin_long: tuple[tuple[str, int], ...] = ()
    builtin_short: tuple[tuple[str, int], ...] = ()
    #: DNS servers to ask (ip, port); empty: the system resolver.
    nameservers: tuple[tuple[str, int], ...] = ()
    use_long_link: bool = True
    network_label: str = "default"
    request_timeout: float = 15.0
    connect_timeout: float = 10.0
    stagger: float = 2.5
    poll_timeout_ms: int = 25_000
    image_chunk: int = 64 * 1024
    parallel_chunks: int = 4
    voice_chunk: int = 1500
    send_attempts: int = 3
    send_delays: tuple[float, ...] = (1.0, 3.0)
    reconnect_ladder: tuple[float, ...] = DEFAULT_LADDER
    device_name: str = "wxnet"
    #: A fixed noop interval in seconds (Mars ``longlink_noop_interval``); 0: smart.
    noop_interval: float = 0.0
    noop_timeout: float = 8.0
    dns_timeout: float = 2.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ClientConfig:
        known = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {}
        for k, v in raw.items():
            if k not in known:
                continue
            if isinstance(v, list):
                v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
            kw[k] = v
        return cls(**kw)

    def replace(self, **changes: Any) -> ClientConfig:
        raw = self.to_json()
        raw.update(changes)
        return ClientConfig.from_json(raw)


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """What the client tells its user: ``item`` (a new sync item), ``link`` (long/short),
    ``network`` (good/poor, S13), ``send`` (sending/sent/failed)."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"event": self.kind, **self.data}


def item_to_json(item: pb.CmdItem) -> dict[str, Any]:
    kind = item.WhichOneof("body") or "unknown"
    out: dict[str, Any] = {"type": kind, "cmd_id": item.cmd_id, "key": item.key, "seq": item.seq}
    if kind != "unknown":
        body = MessageToDict(
            getattr(item, kind), preserving_proto_field_name=True, use_integers_for_enums=True
        )
        if "img_buf" in body:
            body["img_buf_len"] = len(item.add_msg.img_buf)
            del body["img_buf"]
        out.update(body)
    for k in ("msg_id", "seq", "create_time"):
        if k in out:
            out[k] = int(out[k])
    return out


def parse_server_url(url: str) -> Address:
    """``http://HOST[:PORT]`` -> the short-link address; raises ValueError."""
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"not a valid URL: {url!r}") from None
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"the server URL must be http://HOST[:PORT], got {url!r}")
    return Address(parts.hostname, port, AddressSource.DNS)


def _mm_check(resp: Message, name: str) -> None:
    check_base(resp, name)


class Client:
    """The SDK. ``await start()`` before use and ``await close()`` after (or ``async with``)."""

    def __init__(
        self,
        store: ProfileStore,
        config: ClientConfig | None = None,
        resolver: Resolver | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        if config is None:
            raw = store.get_json(CONFIG_KEY)
            config = ClientConfig.from_json(raw) if isinstance(raw, dict) else ClientConfig()
        self.config = config
        if resolver is None:
            resolver = (
                UdpResolver(list(config.nameservers), config.dns_timeout)
                if config.nameservers
                else SystemResolver(config.dns_timeout)
            )
        self.resolver = resolver
        self.clock = clock
        self.rng = rng or random.Random()
        self.book = AddressBook()
        self.heartbeat = (
            SmartHeartbeat(config.noop_interval, config.noop_interval)
            if config.noop_interval > 0
            else SmartHeartbeat()
        )
        self._restore_heartbeat()
        self.backoff = ReconnectBackoff(config.reconnect_ladder, jitter=1.0)
        self.send_policy = SendRetryPolicy(config.send_attempts, config.send_delays)
        self.poor = PoorNetworkDetector()
        self.short = ShortLink(config.connect_timeout)
        self.long: LongLink | None = None
        self.session = store.session()
        self._subscribers: list[asyncio.Queue[ClientEvent]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._sync_lock = asyncio.Lock()
        self._sync_wanted = False
        self._sync_kick = asyncio.Event()
        self._long_down = asyncio.Event()
        self._long_down.set()
        self._long_up = asyncio.Event()
        #: Set when the first long-link connect round has ended (either way).
        self._first_round = asyncio.Event()
        self._closing = False
        self._sending: dict[str, asyncio.Task[OutboxRow]] = {}
        self._progress: dict[str, int] = {}
        self._dns_answers: dict[str, list[str]] = {}
        self._dns_ok = True
        self._last_newdns_try = -1e9
        self._last_refresh = -1e9
        self.link_kind = "none"
        self.short_in_use: Address | None = None
        #: The last short-link request got no answer from any address.
        self.short_failing = False
        self.last_error = ""

    # ---- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self, background: bool = True, wait_long: float | None = None) -> None:
        """Find the server and, with ``background``, start the long-link manager, the
        short-link poller, the sync and outbox tasks. ``wait_long`` bounds how long to
        wait for the first long link (default: the connect timeout); after that,
        requests go over the short link while the long link keeps being tried."""
        await self.refresh_addresses()
        if not background:
            return
        if self.session is None:
            raise NotLoggedIn("this profile is not logged in: run `wxnet login` first")
        self._tasks.append(asyncio.ensure_future(self._sync_loop()))
        self._tasks.append(asyncio.ensure_future(self._poll_loop()))
        if self.config.use_long_link:
            self._tasks.append(asyncio.ensure_future(self._link_loop()))
            wait = self.config.connect_timeout if wait_long is None else wait_long
            with contextlib.suppress(TimeoutError):
                await wait_for(self._first_round.wait(), wait)
        self._tasks.append(asyncio.ensure_future(self._resume_outbox()))
        self.kick_sync()

    async def close(self) -> None:
        self._closing = True
        for t in list(self._sending.values()):
            t.cancel()
        for t in self._tasks:
            t.cancel()
        for t in [*self._tasks, *self._sending.values()]:
            with contextlib.suppress(BaseException):
                await wait_for(t, CLOSE_WAIT)
        self._tasks.clear()
        if self.long is not None:
            self.long.close("client closed")
            with contextlib.suppress(TimeoutError):
                await wait_for(self.long.wait_closed(), CLOSE_WAIT)
            self.long = None
        await self.short.close()
        self._save_heartbeat()

    # ---- events --------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[ClientEvent]:
        q: asyncio.Queue[ClientEvent] = asyncio.Queue()
        self._subscribers.append(q)
        return q

    def _emit(self, kind: str, **data: Any) -> None:
        ev = ClientEvent(kind, data)
        for q in self._subscribers:
            q.put_nowait(ev)

    # ---- status persisted for `wxnet status` --------------------------------------------

    def _save_status(self) -> None:
        link = self.long
        self.store.put_json(
            "status",
            {
                "link": self.link_kind,
                "long_address": str(link.address) if link else None,
                "long_source": link.address.source.value if link else None,
                "short_address": str(self.short_in_use) if self.short_in_use else None,
                "last_heartbeat": link.last_heartbeat if link else None,
                "network": self.poor.quality.value,
                "dns_ok": self._dns_ok,
                "last_error": self.last_error,
                "updated": time.time(),
            },
        )

    def _restore_heartbeat(self) -> None:
        raw = self.store.get_json("heartbeat")
        if isinstance(raw, dict):
            with contextlib.suppress(TypeError, ValueError):
                self.heartbeat.restore({k: NetworkHeartbeat(**v) for k, v in raw.items()})

    def _save_heartbeat(self) -> None:
        with contextlib.suppress(Exception):
            self.store.put_json(
                "heartbeat", {k: asdict(v) for k, v in self.heartbeat.snapshot().items()}
            )

    # ---- addresses ---------------------------------------------------------------------

    def _url_address(self) -> Address | None:
        return parse_server_url(self.config.server_url) if self.config.server_url else None

    def cached_dns(self) -> CachedDns | None:
        raw = self.store.get_json("newdns")
        if not isinstance(raw, dict):
            return None
        try:
            return CachedDns(parse_newdns(str(raw["xml"])), float(raw["fetched_at"]))
        except (NewDnsError, KeyError, ValueError):
            return None

    async def refresh_addresses(self) -> None:
        """Resolve the names (S8), then fetch newgetdns if the cache is stale (S10).
        DNS failures are remembered, not raised: the cache and built-ins cover them."""
        cfg = self.config
        names = [cfg.long_name, cfg.short_name, cfg.dns_name]
        url = self._url_address()
        if url is not None:
            names = [url.host]
        self._last_refresh = self.clock()
        unique = list(dict.fromkeys(names))
        results = await asyncio.gather(
            *(self.resolver.resolve(n) for n in unique), return_exceptions=True
        )
        answers: dict[str, list[str]] = {}
        ok = True
        for name, res in zip(unique, results, strict=True):
            if isinstance(res, DnsFailure):
                ok = False
                self.last_error = str(res)
            elif isinstance(res, BaseException):
                raise res
            else:
                answers[name] = res
        self._dns_answers = answers
        self._dns_ok = ok
        cached = self.cached_dns()
        now_wall = time.time()
        if (cached is None or not cached.fresh(now_wall)) and (
            self.clock() - self._last_newdns_try > 30
        ):
            self._last_newdns_try = self.clock()
            await self._fetch_newdns()
        self._save_status()

    async def _fetch_newdns(self) -> None:
        cfg = self.config
        url = self._url_address()
        if url is not None:
            sources = [Address(ip, url.port) for ip in self._dns_answers.get(url.host, [])]
        else:
            sources = [
                Address(ip, p)
                for ip in self._dns_answers.get(cfg.dns_name, [])
                for p in cfg.short_ports
            ] + self.short_addresses()
        for addr in self.book.order(sources, self.clock()):
            try:
                xml = await self.short.get_newdns(addr, min(5.0, cfg.request_timeout))
                parse_newdns(xml)
            except (TransportError, NewDnsError) as exc:
                self.last_error = str(exc)
                continue
            self.store.put_json(
                "newdns", {"xml": xml.decode("utf-8", "replace"), "fetched_at": time.time()}
            )
            return

    def long_addresses(self) -> list[Address]:
        cfg = self.config
        got = long_candidates(
            cfg.long_name,
            cfg.long_ports,
            self._dns_answers,
            self.cached_dns(),
            time.time(),
            cfg.builtin_long,
            # S14: the extra port only when both the usual long link and the short link
            # fail; while HTTP works the client stays there and keeps trying 8080.
            cfg.extra_long_port if self.short_failing else None,
        )
        return self.book.order(got, self.clock())

    def short_addresses(self) -> list[Address]:
        cfg = self.config
        url = self._url_address()
        first: list[Address] = []
        if url is not None:
            first = [Address(ip, url.port) for ip in self._dns_answers.get(url.host, [])]
        got = short_candidates(
            cfg.short_name,
            cfg.short_ports,
            self._dns_answers,
            self.cached_dns(),
            time.time(),
            cfg.builtin_short,
        )
        return self.book.order(first + got, self.clock())

    # ---- requests ------------------------------------------------------------------------

    def base(self, scene: int = 0) -> pb.BaseRequest:
        s = self.session
        return pb.BaseRequest(
            session_key=s.session_key if s else "",
            uin=s.uin if s else 0,
            device_id=self.store.device_id(),
            device_type="wxnet",
            scene=scene,
        )

    async def request(
        self,
        name: str,
        req: Message,
        resp_type: type[R],
        *,
        via: str = "any",
        timeout: float | None = None,
    ) -> R:
        """Send one CGI request over the long link if it is up, else the short link.

        Raises:
            MMError: the server said no (``code`` is the MM result).
            TransportError: neither link got an answer.
        """
        cgi = C.BY_NAME[name]
        if cgi.needs_session and self.session is None:
            raise NotLoggedIn("this profile is not logged in: run `wxnet login` first")
        base = getattr(req, "base", None)
        if base is not None and not base.session_key and cgi.needs_session:
            base.CopyFrom(self.base(base.scene))
        timeout = timeout or self.config.request_timeout
        data: bytes | None = None
        link = self.long
        if via != "short" and link is not None and link.is_open:
            try:
                data = await link.request(cgi, req, timeout)
            except TransportError as exc:
                self.last_error = str(exc)
        if data is None:
            try:
                data = await self._short_request(name, req.SerializeToString(), timeout)
            except TransportError:
                self._note_network(ok=False)
                raise
        resp = resp_type()
        try:
            resp.ParseFromString(data)
        except DecodeError:
            raise TransportError(f"{name}: the reply does not decode") from None
        self._note_network(ok=True)
        _mm_check(resp, name)
        return resp

    async def _short_request(self, name: str, body: bytes, timeout: float) -> bytes:
        cands = self.short_addresses()
        if not cands:
            await self.refresh_addresses()
            cands = self.short_addresses()
        if not cands:
            raise TransportError(f"{name}: no short-link address (DNS failed and nothing cached)")
        errors: list[str] = []
        for addr in cands[:3]:
            try:
                data = await self.short.post(addr, name, body, timeout)
            except TransportError as exc:
                self.book.on_failure(addr, self.clock())
                errors.append(str(exc))
                continue
            self.book.on_success(addr, self.clock())
            self.short_in_use = addr
            self.short_failing = False
            return data
        self.last_error = errors[-1]
        self.short_failing = True
        raise TransportError("; ".join(errors))

    def _note_network(self, ok: bool) -> None:
        now = self.clock()
        change = self.poor.on_success(now) if ok else self.poor.on_failure(now)
        if change is not None:
            self._emit("network", quality=change.value)
            self._save_status()

    # ---- login ---------------------------------------------------------------------------

    async def login(self, user: str, password: str) -> SessionInfo:
        """manualauth; saves the session and this config in the profile. A new account on
        this profile starts with a fresh SyncKey."""
        await self.refresh_addresses()
        req = pb.ManualAuthRequest(
            base=pb.BaseRequest(device_id=self.store.device_id(), device_type="wxnet"),
            user_name=user,
            password=password,
            device_name=self.config.device_name,
        )
        try:
            resp = await self.request("manualauth", req, pb.ManualAuthResponse)
        except TransportError:
            if not self.config.use_long_link:
                raise
            # The short link is cut: any CGI works on the long link too (S12).
            resp = await self._login_long(req)
        old = self.store.session()
        if old is None or old.user_name != resp.user_name:
            self.store.reset_sync()
        self.session = SessionInfo(
            resp.uin, resp.session_key, resp.user_name, resp.nick_name, self.store.device_id()
        )
        self.store.save_session(self.session)
        self.store.put_json(CONFIG_KEY, self.config.to_json())
        self._save_status()
        return self.session

    async def _login_long(self, req: pb.ManualAuthRequest) -> pb.ManualAuthResponse:
        addr, reader, writer = await race_connect(
            self.long_addresses(),
            self.book,
            self.clock,
            self.config.stagger,
            3,
            self.config.connect_timeout,
        )
        link = LongLink(
            addr,
            reader,
            writer,
            self.heartbeat,
            self.config.network_label,
            lambda _sel: None,
            self.config.request_timeout,
            clock=self.clock,
        )
        link.start()
        try:
            body = await link.request(C.BY_NAME["manualauth"], req)
        finally:
            link.close("login done")
            await link.wait_closed()
        resp = pb.ManualAuthResponse()
        try:
            resp.ParseFromString(body)
        except DecodeError:
            raise TransportError("manualauth: the reply does not decode") from None
        self.book.on_success(addr, self.clock())
        self._note_network(ok=True)
        _mm_check(resp, "manualauth")
        return resp

    async def logout(self) -> None:
        try:
            await self.request("logout", pb.LogoutRequest(base=self.base()), pb.LogoutResponse)
        finally:
            self.store.clear_session()
            self.session = None

    @property
    def me(self) -> str:
        if self.session is None:
            raise NotLoggedIn("this profile is not logged in: run `wxnet login` first")
        return self.session.user_name

    # ---- long link manager -----------------------------------------------------------------

    async def _link_loop(self) -> None:
        while not self._closing:
            delay = self.backoff.next_attempt() - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                link = await self._connect_long()
            finally:
                self._first_round.set()
            if link is None:
                self.backoff.on_failure(self.clock(), self.rng.random())
                continue
            self.backoff.on_success()
            await link.wait_closed()
            self.last_error = link.close_reason
            self.long = None
            self._long_up.clear()
            self._long_down.set()
            self.link_kind = "short"
            self._emit("link", link="short", reason=link.close_reason)
            self._save_status()
            self._save_heartbeat()
            self.backoff.on_failure(self.clock(), self.rng.random())

    async def _connect_long(self) -> LongLink | None:
        cands = self.long_addresses()
        stale = self.clock() - self._last_refresh > REFRESH_EVERY
        if not cands or (not self._dns_ok and stale):
            await self.refresh_addresses()
            cands = self.long_addresses()
        try:
            addr, reader, writer = await race_connect(
                cands, self.book, self.clock, self.config.stagger, 3, self.config.connect_timeout
            )
        except TransportError as exc:
            self.last_error = str(exc)
            if self.link_kind != "short":
                self.link_kind = "short"
                self._emit("link", link="short", reason=str(exc))
                self._save_status()
            # The server may have moved: look the names up again next round.
            with contextlib.suppress(Exception):
                await self.refresh_addresses()
            return None
        link = LongLink(
            addr,
            reader,
            writer,
            self.heartbeat,
            self.config.network_label,
            self._on_notify,
            self.config.request_timeout,
            noop_timeout=self.config.noop_timeout,
            clock=self.clock,
        )
        link.start()
        try:
            selector = await link.identify(self.base(), self.store.synckey())
        except (TransportError, MMError) as exc:
            self.last_error = f"identify: {exc}"
            if isinstance(exc, TransportError):
                # Accepted but unusable (a middlebox that resets, a dying server): counts
                # against the address like a failed connect, so it is banned in time.
                self.book.on_failure(addr, self.clock())
            link.close(self.last_error)
            await link.wait_closed()
            return None
        except BaseException:  # cancelled (the client is closing): don't leak the link
            link.close("client closed")
            raise
        self.book.on_success(addr, self.clock())
        self.long = link
        self.link_kind = "long"
        self._long_down.clear()
        self._long_up.set()
        self._emit("link", link="long", address=str(addr), source=addr.source.value)
        self._save_status()
        if selector:
            self.kick_sync()
        self._kick_outbox()
        return link

    def _on_notify(self, selector: int) -> None:
        self.kick_sync()

    # ---- short-link long poll --------------------------------------------------------------

    async def _poll_loop(self) -> None:
        failures = 0
        while not self._closing:
            await self._long_down.wait()
            if self.config.use_long_link and self.link_kind == "none":
                # The first long-link round has not ended yet.
                await asyncio.sleep(0.05)
                continue
            req = pb.SyncCheckRequest(
                key_buf=self.store.synckey(), timeout_ms=self.config.poll_timeout_ms
            )
            try:
                resp = await self.request(
                    "newsynccheck",
                    req,
                    pb.SyncCheckResponse,
                    via="short",
                    timeout=self.config.poll_timeout_ms / 1000 + self.config.request_timeout,
                )
            except (TransportError, MMError) as exc:
                self.last_error = str(exc)
                failures += 1
                ladder = self.config.reconnect_ladder
                await asyncio.sleep(max(0.05, ladder[min(failures, len(ladder) - 1)]))
                continue
            failures = 0
            if resp.selector:
                self.kick_sync()
                await self.sync()

    # ---- sync ------------------------------------------------------------------------------

    def kick_sync(self) -> None:
        self._sync_wanted = True
        self._sync_kick.set()

    async def _sync_loop(self) -> None:
        failures = 0
        while not self._closing:
            await self._sync_kick.wait()
            self._sync_kick.clear()
            try:
                await self.sync()
                failures = 0
            except (TransportError, MMError) as exc:
                self.last_error = f"sync: {exc}"
                failures += 1
                await asyncio.sleep(min(10.0, 0.2 * 2**failures))
                self.kick_sync()

    async def sync(self) -> list[AppliedItem]:
        """Fetch everything new; returns the items new to this profile. Notifies that
        arrive meanwhile are coalesced into one more round."""
        self._sync_wanted = True
        fresh: list[AppliedItem] = []
        async with self._sync_lock:
            while self._sync_wanted:
                self._sync_wanted = False
                fresh += await self._sync_once()
        return fresh

    async def _sync_once(self) -> list[AppliedItem]:
        key = self.store.synckey()
        if not key:
            return await self._init()
        fresh: list[AppliedItem] = []
        for _ in range(10_000):
            try:
                resp = await self.request(
                    "newsync",
                    pb.NewSyncRequest(key_buf=key, selector=SELECTOR_ALL, scene=1),
                    pb.NewSyncResponse,
                )
            except MMError as exc:
                if exc.code == MMRet.ERR_SYNCKEY_INVALID:
                    self.store.reset_sync()
                    return fresh + await self._init()
                raise
            new_key = bytes(resp.key_buf) or key
            got = self.store.apply_batch(self.me, resp.cmd_list, new_key)
            self._publish(got)
            fresh += got
            key = new_key
            if not resp.continue_flag:
                break
        await self.request("syncdone", pb.SyncDoneRequest(key_buf=key), pb.SyncDoneResponse)
        return fresh

    async def _init(self) -> list[AppliedItem]:
        key = b""
        fresh: list[AppliedItem] = []
        for _ in range(10_000):
            resp = await self.request(
                "newinit", pb.NewInitRequest(current_synckey=key), pb.NewInitResponse
            )
            new_key = bytes(resp.current_synckey)
            got = self.store.apply_batch(self.me, resp.cmd_list, new_key)
            self._publish(got)
            fresh += got
            key = new_key
            if not resp.continue_flag:
                break
        await self.request("syncdone", pb.SyncDoneRequest(key_buf=key), pb.SyncDoneResponse)
        return fresh

    def _publish(self, items: list[AppliedItem]) -> None:
        for it in items:
            self._emit("item", **item_to_json(it.item))

    # ---- outbox ------------------------------------------------------------------------------

    def _kick_outbox(self) -> None:
        for row in self.store.outbox(("sending",)):
            if row.client_msg_id not in self._sending:
                self._deliver_soon(row.client_msg_id)

    async def _resume_outbox(self) -> None:
        """Messages left ``sending`` by a killed process go out again, same ClientMsgId."""
        self._kick_outbox()

    def _deliver_soon(self, cid: str) -> asyncio.Task[OutboxRow]:
        task = self._sending.get(cid)
        if task is None or task.done():
            task = asyncio.ensure_future(self._deliver(cid))
            self._sending[cid] = task
            task.add_done_callback(lambda _t: self._sending.pop(cid, None))
        return task

    async def _deliver(self, cid: str) -> OutboxRow:
        attempts = 0
        while True:
            row = self.store.outbox_row(cid)
            if row is None:
                raise SendFailed(cid, "no such message in the outbox")
            if row.state != "sending":
                return row
            attempts += 1
            self.store.note_attempt(cid)
            try:
                msg_id, create_time = await self._send_once(row)
            except MMError as exc:
                decision = self.send_policy.after_failure(
                    attempts, self.clock(), code=int(exc.code), reason=str(exc)
                )
            except TransportError as exc:
                decision = self.send_policy.after_failure(attempts, self.clock(), reason=str(exc))
            else:
                self.store.mark_sent(cid, msg_id, create_time)
                self._progress.pop(cid, None)
                self._emit("send", client_msg_id=cid, state="sent", msg_id=msg_id)
                self.kick_sync()
                done = self.store.outbox_row(cid)
                assert done is not None
                return done
            if decision.verdict is Verdict.FAIL:
                self.store.mark_failed(cid, decision.reason)
                self._emit("send", client_msg_id=cid, state="failed", reason=decision.reason)
                failed = self.store.outbox_row(cid)
                assert failed is not None
                return failed
            self._emit("send", client_msg_id=cid, state="retrying", reason=decision.reason)
            await asyncio.sleep(max(0.0, decision.at - self.clock()))

    async def _send_once(self, row: OutboxRow) -> tuple[int, int]:
        if row.msg_type == MSG_IMAGE:
            return await self._upload_image(row)
        if row.msg_type == MSG_VOICE:
            return await self._upload_voice(row)
        msg = pb.MicroMsg(
            to_user=row.to_user,
            content=row.content,
            msg_type=row.msg_type,
            create_time=int(row.queued_at),
            client_msg_id=row.client_msg_id,
        )
        scene = 6 if row.attempts > 1 else 5  # MM_SCENE_RETRYSENDMSG / SENDMSG (research 2.6)
        resp = await self.request(
            "newsendmsg",
            pb.SendMsgRequest(base=self.base(scene), list=[msg]),
            pb.SendMsgResponse,
        )
        for r in resp.list:
            if r.client_msg_id == row.client_msg_id or len(resp.list) == 1:
                err = MMError.from_base(r, "send")
                if err is not None:
                    raise err
                return int(r.msg_id), int(r.create_time)
        raise TransportError("newsendmsg: the reply has no result for this message")

    async def send_text(self, to_user: str, text: str) -> OutboxRow:
        """Queue a text (committed before anything is sent) and deliver it; returns the
        final row (``sent`` or ``failed``)."""
        if not to_user or not text:
            raise ValueError("recipient and text must not be empty")
        row = self.store.queue(to_user, MSG_TEXT, text)
        self._emit("send", client_msg_id=row.client_msg_id, state="sending")
        return await self._deliver_soon(row.client_msg_id)

    async def send_image(self, to_user: str, path: str | Path) -> OutboxRow:
        p = Path(path).resolve()
        if not p.is_file() or p.stat().st_size == 0:
            raise ValueError(f"not a non-empty file: {p}")
        row = self.store.queue(to_user, MSG_IMAGE, media_path=str(p))
        self._emit("send", client_msg_id=row.client_msg_id, state="sending")
        return await self._deliver_soon(row.client_msg_id)

    async def send_voice(
        self, to_user: str, path: str | Path, voice_length_ms: int = 0
    ) -> OutboxRow:
        p = Path(path).resolve()
        if not p.is_file() or p.stat().st_size == 0:
            raise ValueError(f"not a non-empty file: {p}")
        row = self.store.queue(to_user, MSG_VOICE, media_path=str(p), voice_length=voice_length_ms)
        self._emit("send", client_msg_id=row.client_msg_id, state="sending")
        return await self._deliver_soon(row.client_msg_id)

    async def resend(self, client_msg_id: str) -> OutboxRow:
        """Send a failed message again with its ClientMsgId (the server dedups, S23)."""
        row = self.store.outbox_row(client_msg_id)
        if row is None:
            raise SendFailed(client_msg_id, "no such message in the outbox")
        if row.state == "sent":
            return row
        self.store.mark_sending(client_msg_id)
        return await self._deliver_soon(client_msg_id)

    async def wait_sent(self, client_msg_id: str) -> OutboxRow:
        task = self._sending.get(client_msg_id)
        if task is not None:
            return await task
        row = self.store.outbox_row(client_msg_id)
        if row is None:
            raise SendFailed(client_msg_id, "no such message in the outbox")
        return row

    # ---- media ---------------------------------------------------------------------------------

    async def _upload_image(self, row: OutboxRow) -> tuple[int, int]:
        """Chunks in parallel (``parallel_chunks`` in flight), resumed from the server's
        lowest missing offset after a failure (research 2.7; S24)."""
        try:
            data = Path(row.media_path).read_bytes()
        except OSError as exc:
            raise MMError(MMRet.ERR_ARG, f"cannot read {row.media_path}: {exc}") from None
        total = len(data)
        size = max(1, self.config.image_chunk)
        result: list[tuple[int, int]] = []
        cid = row.client_msg_id

        async def put(off: int) -> None:
            if off + size <= self._progress.get(cid, 0) < total:
                return  # the server already has it
            req = pb.UploadMsgImgRequest(
                base=self.base(),
                client_img_id=cid,
                to_user=row.to_user,
                total_len=total,
                start_pos=off,
                data=data[off : off + size],
            )
            resp = await self.request("uploadmsgimg", req, pb.UploadMsgImgResponse)
            self._progress[cid] = max(self._progress.get(cid, 0), int(resp.start_pos))
            if resp.msg_id:
                result.append((int(resp.msg_id), int(resp.create_time)))

        # Probe with the first missing chunk alone: the reply says the lowest offset the
        # server still misses, so an upload begun by an earlier process (or attempt)
        # resumes there instead of starting over (research 2.7).
        await put(min(self._progress.get(cid, 0), max(0, total - size)))
        for _round in range(total // size + 3):
            start = self._progress.get(cid, 0)
            if result:
                break
            await _bounded(
                [functools.partial(put, off) for off in range(start, total, size)]
                or [functools.partial(put, max(0, total - size))],
                self.config.parallel_chunks,
            )
            if result or self._progress.get(cid, 0) >= total:
                break
        if not result:
            raise TransportError("uploadmsgimg: the server never completed the image")
        return result[0]

    async def _upload_voice(
        self, row: OutboxRow, cancel_after: int | None = None
    ) -> tuple[int, int]:
        """Sequential chunks from the file with end_flag on the last (S25); resumes from
        the server's offset."""
        cid = row.client_msg_id
        size = max(1, self.config.voice_chunk)
        try:
            fh = open(row.media_path, "rb")  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            raise MMError(MMRet.ERR_ARG, f"cannot read {row.media_path}: {exc}") from None
        with fh:
            total = fh.seek(0, 2)
            offset = self._progress.get(cid, 0)
            sent = 0
            while True:
                fh.seek(offset)
                chunk = fh.read(size)
                end = offset + len(chunk) >= total
                cancel = cancel_after is not None and sent >= cancel_after
                req = pb.UploadVoiceRequest(
                    base=self.base(),
                    client_msg_id=cid,
                    to_user=row.to_user,
                    offset=offset,
                    data=b"" if cancel else chunk,
                    voice_length=row.voice_length,
                    voice_format=0,
                    end_flag=end and not cancel,
                    cancel_flag=cancel,
                )
                resp = await self.request("uploadvoice", req, pb.UploadVoiceResponse)
                sent += 1
                if cancel:
                    return 0, 0
                if resp.msg_id:
                    return int(resp.msg_id), int(resp.create_time)
                if resp.offset <= offset and not chunk:
                    raise TransportError("uploadvoice: the server made no progress")
                offset = int(resp.offset)
                self._progress[cid] = offset
                if end and offset >= total:
                    raise TransportError("uploadvoice: ended without a message id")

    async def cancel_voice(self, to_user: str, path: str | Path, chunks: int) -> str:
        """Stream ``chunks`` chunks of a voice message, then cancel it (cancel_flag):
        nothing is delivered. Returns the ClientMsgId used."""
        row = self.store.queue(to_user, MSG_VOICE, media_path=str(Path(path).resolve()))
        try:
            await self._upload_voice(row, cancel_after=chunks)
        finally:
            self.store.discard(row.client_msg_id)
        return row.client_msg_id

    async def download_image(self, msg_id: int, thumb: bool = False) -> bytes:
        out = bytearray()
        for _ in range(100_000):
            resp = await self.request(
                "getmsgimg",
                pb.DownloadMsgImgRequest(msg_id=msg_id, start_pos=len(out), thumb=thumb),
                pb.DownloadMsgImgResponse,
            )
            out += resp.data
            if len(out) >= resp.total_len or not resp.data:
                break
        return bytes(out)

    async def download_voice(self, msg_id: int) -> bytes:
        out = bytearray()
        for _ in range(100_000):
            resp = await self.request(
                "downloadvoice",
                pb.DownloadVoiceRequest(msg_id=msg_id, offset=len(out)),
                pb.DownloadVoiceResponse,
            )
            out += resp.data
            if len(out) >= resp.total_len or not resp.data:
                break
        return bytes(out)

    # ---- contacts, groups, receipts, revoke ----------------------------------------------

    async def add_contact(self, user_name: str) -> pb.Contact:
        resp = await self.request(
            "verifyuser", pb.AddContactRequest(user_name=user_name), pb.AddContactResponse
        )
        self.store.save_contact(resp.contact)
        return resp.contact

    async def refresh_contacts(self) -> list[pb.Contact]:
        resp = await self.request("getcontact", pb.GetContactRequest(), pb.GetContactResponse)
        for c in resp.contacts:
            self.store.save_contact(c)
        return list(resp.contacts)

    async def create_group(self, topic: str, members: list[str]) -> pb.Contact:
        resp = await self.request(
            "createchatroom",
            pb.CreateChatRoomRequest(topic=topic, members=members),
            pb.CreateChatRoomResponse,
        )
        self.store.save_contact(resp.chatroom)
        return resp.chatroom

    async def modify_group(self, chatroom: str, op: int, members: list[str]) -> pb.Contact:
        resp = await self.request(
            "modchatroom",
            pb.ModChatRoomRequest(chatroom=chatroom, op=op, members=members),
            pb.ModChatRoomResponse,
        )
        self.store.save_contact(resp.chatroom)
        return resp.chatroom

    async def mark_read(self, talker: str) -> int:
        """Opening a conversation: mark it read here and send the read receipt (S22)."""
        last = self.store.mark_read_local(talker)
        if last:
            await self.request(
                "statusnotify",
                pb.MarkReadRequest(talker=talker, last_msg_id=last),
                pb.MarkReadResponse,
            )
        return last

    async def revoke(self, ident: str) -> None:
        """Revoke by server MsgID (digits) or by ClientMsgId."""
        row = self.store.outbox_row(ident)
        if row is not None and row.msg_id:
            req = pb.RevokeMsgRequest(msg_id=row.msg_id)
        elif ident.isdigit() and row is None:
            req = pb.RevokeMsgRequest(msg_id=int(ident))
        else:
            req = pb.RevokeMsgRequest(client_msg_id=ident)
        await self.request("revokemsg", req, pb.RevokeMsgResponse)
        self.kick_sync()

    def status(self) -> dict[str, Any]:
        raw = self.store.get_json("status")
        st: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {}
        st["synckey"] = self.store.synckey().hex()
        st["user"] = self.session.user_name if self.session else None
        st["config"] = {
            k: v
            for k, v in self.config.to_json().items()
            if k
            in (
                "server_url",
                "long_name",
                "short_name",
                "dns_name",
                "long_ports",
                "short_ports",
                "extra_long_port",
                "nameservers",
            )
        }
        cached = self.cached_dns()
        st["newdns_cached"] = (
            None
            if cached is None
            else {"fetched_at": cached.fetched_at, "fresh": cached.fresh(time.time())}
        )
        st["outbox"] = {s: len(self.store.outbox((s,))) for s in ("sending", "failed")}
        return st


async def _bounded(jobs: list[Callable[[], Awaitable[None]]], limit: int) -> None:
    """Run the jobs with at most ``limit`` in flight; the first failure cancels the rest
    and is raised."""
    sem = asyncio.Semaphore(max(1, limit))

    async def run(job: Callable[[], Awaitable[None]]) -> None:
        async with sem:
            await job()

    tasks = [asyncio.ensure_future(run(j)) for j in jobs]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t


def dump_json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True)
