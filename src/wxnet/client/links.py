"""The link manager (S8-S15): which link carries a request, and keeping the long link up.

* **Requests** go over the long link while it is up, else (or when it dies under the
  request) once over the short link, trying up to three short-link addresses.
* **The long link** is raced Mars-style over the discovered addresses, identifies with
  the profile's SyncKey, and is replaced with back-off when it dies
  (:meth:`LinkManager.run_long`, a background task).
* **The short-link long poll** (``newsynccheck``) brings news while no long link is up
  (:meth:`LinkManager.run_poll`).
* **Network quality** (S13) follows every request's outcome.

It tells the facade what happens through callbacks: ``emit`` (events), ``on_news`` (a
notify, a selector or a poll hit: time to sync) and ``on_long_up`` (a new long link:
resume the outbox). It also keeps the ``status`` row that ``wxnet status`` prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from wxnet._compat import wait_for
from wxnet.client.addresses import Address
from wxnet.client.backoff import ReconnectBackoff
from wxnet.client.config import ClientConfig
from wxnet.client.discovery import Discovery
from wxnet.client.errors import NotLoggedIn, TransportError
from wxnet.client.events import ClientEvent, LinkChanged, LinkKind, NetworkChanged
from wxnet.client.heartbeat import NetworkHeartbeat, SmartHeartbeat
from wxnet.client.longlink import LongLink, race_connect
from wxnet.client.sending import PoorNetworkDetector
from wxnet.client.store import ProfileStore, SessionInfo
from wxnet.clock import Clock
from wxnet.proto import commands as C
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMError, check_base

__all__ = ["LinkManager"]

R = TypeVar("R", bound=Message)
#: At most this many connects in flight in a race (Mars).
RACE_PARALLEL = 3
#: Short-link addresses tried for one request.
SHORT_TRIES = 3
NOT_LOGGED_IN = "this profile is not logged in: run `wxnet login` first"


class LinkManager:
    """Owns both links, the session used on them, and the status they report."""

    def __init__(
        self,
        config: ClientConfig,
        store: ProfileStore,
        discovery: Discovery,
        clock: Clock,
        rng: random.Random,
        emit: Callable[[ClientEvent], None],
    ) -> None:
        self.config = config
        self.store = store
        self.discovery = discovery
        self.clock = clock
        self.rng = rng
        self.emit = emit
        self.on_news: Callable[[], None] = lambda: None
        #: a push with data (cmd 122) arrived on the long link (the syncer applies it)
        self.on_push: Callable[[bytes], None] = lambda _body: self.on_news()
        self.on_long_up: Callable[[], None] = lambda: None
        self.session: SessionInfo | None = store.session()
        self.heartbeat = (
            SmartHeartbeat(config.noop_interval, config.noop_interval)
            if config.noop_interval > 0
            else SmartHeartbeat()
        )
        self._restore_heartbeat()
        self.backoff = ReconnectBackoff(config.reconnect_ladder, jitter=1.0)
        self.poor = PoorNetworkDetector()
        self.short = discovery.short
        self.long: LongLink | None = None
        self.link_kind = LinkKind.NONE
        self.short_in_use: Address | None = None
        #: The last short-link request got no answer from any address.
        self.short_failing = False
        self.last_error = ""
        self.closing = False
        self._long_up = asyncio.Event()
        self._long_down = asyncio.Event()
        self._long_down.set()
        #: Set when the first long-link connect round has ended (either way).
        self.first_round = asyncio.Event()
        saved = store.get_json("status")
        hb = saved.get("last_heartbeat") if isinstance(saved, dict) else None
        #: Wall time of the last heartbeat reply on any long link of this profile (an
        #: earlier process's too: `wxnet status` is short-lived, `listen` is not).
        self.last_heartbeat: float | None = float(hb) if isinstance(hb, int | float) else None

    def link_state(self) -> str:
        """What carries requests now: ``long`` (a long link is up), ``short`` (the last
        short-link request was answered), or ``none`` (nothing answered: the server is
        down or cut off, or nothing was tried yet)."""
        if self.long is not None and self.long.is_open:
            return "long"
        if self.short_in_use is not None and not self.short_failing:
            return "short"
        return "none"

    def note_error(self, text: str) -> None:
        self.last_error = text

    # ---- requests ------------------------------------------------------------------

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
            NotLoggedIn: the CGI needs a session and the profile has none.
        """
        cgi = C.BY_NAME[name]
        if cgi.needs_session and self.session is None:
            raise NotLoggedIn(NOT_LOGGED_IN)
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
                self.note_network(ok=False)
                raise
        resp = resp_type()
        try:
            resp.ParseFromString(data)
        except DecodeError:
            raise TransportError(f"{name}: the reply does not decode") from None
        self.note_network(ok=True)
        check_base(resp, name)
        return resp

    async def _short_request(self, name: str, body: bytes, timeout: float) -> bytes:
        cands = self.discovery.short_addresses()
        if not cands:
            await self.refresh_addresses()
            cands = self.discovery.short_addresses()
        if not cands:
            raise TransportError(f"{name}: no short-link address (DNS failed and nothing cached)")
        errors: list[str] = []
        book = self.discovery.book
        for addr in cands[:SHORT_TRIES]:
            try:
                data = await self.short.post(addr, name, body, timeout)
            except TransportError as exc:
                book.on_failure(addr, self.clock.monotonic())
                errors.append(str(exc))
                continue
            book.on_success(addr, self.clock.monotonic())
            changed = addr != self.short_in_use or self.short_failing
            self.short_in_use = addr
            self.short_failing = False
            if changed:
                self.save_status()
            return data
        self.last_error = errors[-1]
        if not self.short_failing:
            self.short_failing = True
            self.save_status()
        raise TransportError("; ".join(errors))

    def note_network(self, ok: bool) -> None:
        now = self.clock.monotonic()
        change = self.poor.on_success(now) if ok else self.poor.on_failure(now)
        if change is not None:
            self.emit(NetworkChanged(change))
            self.save_status()

    async def refresh_addresses(self) -> None:
        await self.discovery.refresh()
        self.save_status()

    def long_addresses(self) -> list[Address]:
        return self.discovery.long_addresses(self.short_failing)

    # ---- the long link -------------------------------------------------------------

    def _new_link(
        self, addr: Address, streams: tuple[asyncio.StreamReader, asyncio.StreamWriter]
    ) -> LongLink:
        link = LongLink(
            addr,
            *streams,
            self.heartbeat,
            self.config.network_label,
            lambda _selector: self.on_news(),
            self.config.request_timeout,
            on_push=lambda body: self.on_push(body),
            noop_timeout=self.config.noop_timeout,
            clock=self.clock.monotonic,
        )
        link.start()
        return link

    async def _race(self, candidates: list[Address]) -> LongLink:
        addr, reader, writer = await race_connect(
            candidates,
            self.discovery.book,
            self.clock.monotonic,
            self.config.stagger,
            RACE_PARALLEL,
            self.config.connect_timeout,
        )
        return self._new_link(addr, (reader, writer))

    async def login_long(self, req: pb.ManualAuthRequest) -> pb.ManualAuthResponse:
        """``manualauth`` over a long link of its own (the short link is cut, S12)."""
        link = await self._race(self.long_addresses())
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
        self.discovery.book.on_success(link.address, self.clock.monotonic())
        self.note_network(ok=True)
        check_base(resp, "manualauth")
        return resp

    async def run_long(self) -> None:
        """Keep a long link up until :attr:`closing`: connect, wait for it to die,
        back off, again."""
        while not self.closing:
            delay = self.backoff.next_attempt() - self.clock.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                link = await self._connect_long()
            finally:
                self.first_round.set()
            if link is None:
                self.backoff.on_failure(self.clock.monotonic(), self.rng.random())
                continue
            self.backoff.on_success()
            await link.wait_closed()
            self._heartbeat_seen()  # before the link is forgotten
            self.long = None
            self._long_up.clear()
            self._long_down.set()
            self._fall_back(link.close_reason, force=True)
            self._save_heartbeat()
            self.backoff.on_failure(self.clock.monotonic(), self.rng.random())

    def _fall_back(self, reason: str, force: bool = False) -> None:
        """Requests go over the short link now; say so once (or always, ``force``: a
        link that was up has just died)."""
        self.last_error = reason
        if force or self.link_kind is not LinkKind.SHORT:
            self.link_kind = LinkKind.SHORT
            self.emit(LinkChanged(LinkKind.SHORT, reason=reason))
            self.save_status()

    async def _connect_long(self) -> LongLink | None:
        cands = self.long_addresses()
        if not cands or self.discovery.stale():
            await self.refresh_addresses()
            cands = self.long_addresses()
        try:
            link = await self._race(cands)
        except TransportError as exc:
            self._fall_back(str(exc))
            # The server may have moved: look the names up again next round.
            with contextlib.suppress(Exception):
                await self.refresh_addresses()
            return None
        try:
            selector = await link.identify(self.base(), self.store.synckey(), push_data=True)
        except (TransportError, MMError) as exc:
            if isinstance(exc, TransportError):
                # Accepted but unusable (a middlebox that resets, a dying server): counts
                # against the address like a failed connect, so it is banned in time.
                self.discovery.book.on_failure(link.address, self.clock.monotonic())
            link.close(f"identify: {exc}")
            await link.wait_closed()
            self._fall_back(f"identify: {exc}")
            return None
        except asyncio.CancelledError:  # the client is closing: don't leak the link
            link.close("client closed")
            raise
        self._long_up_with(link)
        if selector:
            self.on_news()
        self.on_long_up()
        return link

    def _long_up_with(self, link: LongLink) -> None:
        self.discovery.book.on_success(link.address, self.clock.monotonic())
        self.long = link
        self.link_kind = LinkKind.LONG
        self._long_down.clear()
        self._long_up.set()
        addr = link.address
        self.emit(LinkChanged(LinkKind.LONG, address=str(addr), source=addr.source.value))
        self.save_status()

    async def wait_first_round(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the first long-link round to end."""
        with contextlib.suppress(TimeoutError):
            await wait_for(self.first_round.wait(), timeout)

    async def wait_long(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a long link; True if one is up."""
        with contextlib.suppress(TimeoutError):
            await wait_for(self._long_up.wait(), timeout)
        return self._long_up.is_set()

    # ---- the short-link long poll ----------------------------------------------------

    async def run_poll(self, sync: Callable[[], Awaitable[object]]) -> None:
        """While no long link is up, long-poll ``newsynccheck``; on news, ``sync()``."""
        failures = 0
        while not self.closing:
            await self._long_down.wait()
            if self.config.use_long_link and not self.first_round.is_set():
                await self.first_round.wait()  # the first long-link round decides
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
                await sync()

    # ---- status and the learned heartbeat, kept in the profile -------------------------

    def _heartbeat_seen(self) -> float | None:
        link = self.long
        if link is not None and link.last_heartbeat is not None:
            self.last_heartbeat = max(self.last_heartbeat or 0.0, link.last_heartbeat)
        return self.last_heartbeat

    def save_status(self) -> None:
        link = self.long if self.long is not None and self.long.is_open else None
        short = self.short_in_use
        if short is None:  # not used yet: the address the short link would use first
            cands = self.discovery.short_addresses()
            short = cands[0] if cands else None
        self.store.put_json(
            "status",
            {
                "link": self.link_state(),
                "long_address": str(link.address) if link else None,
                "long_source": link.address.source.value if link else None,
                "short_address": str(short) if short else None,
                "short_in_use": self.short_in_use is not None and not self.short_failing,
                "last_heartbeat": self._heartbeat_seen(),
                "network": self.poor.quality.value,
                "dns_ok": self.discovery.dns_ok,
                "last_error": self.last_error,
                "updated": self.clock.wall(),
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

    async def close(self, grace: float) -> None:
        """Close the long link (bounded by ``grace``) and the short link's session."""
        self.closing = True
        if self._heartbeat_seen() is not None:  # keep it for `wxnet status` (only that:
            saved = self.store.get_json("status")  # the rest is another process's, maybe)
            if isinstance(saved, dict):
                saved["last_heartbeat"] = self.last_heartbeat
                self.store.put_json("status", saved)
        if self.long is not None:
            self.long.close("client closed")
            with contextlib.suppress(TimeoutError):
                await wait_for(self.long.wait_closed(), grace)
            self.long = None
        await self.short.close()
        self._save_heartbeat()
