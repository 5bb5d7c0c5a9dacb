"""The client SDK's facade: one :class:`Client` per profile (S8-S16, S19, S22-S25).

``Client`` wires the pieces together and gives them one set of method names; each
piece lives in its own module:

* :mod:`~wxnet.client.discovery`: finding the server (DNS, newgetdns cache, built-ins);
* :mod:`~wxnet.client.links`: the link manager (long link preferred, short-link
  fallback and long poll, reconnect with back-off, network quality);
* :mod:`~wxnet.client.syncer`: the sync loop (newsync/ContinueFlag/syncdone, newinit);
* :mod:`~wxnet.client.outbox` (pure state machine) and :mod:`~wxnet.client.delivery`
  (its adapter): bounded retries, then failed; ``resend`` keeps the ClientMsgId;
* :mod:`~wxnet.client.mediaplan` (pure chunk planning) and :mod:`~wxnet.client.media`:
  image chunks in parallel resumed from the server's offset, voice streamed in chunks;
* :mod:`~wxnet.client.events`: the typed events :meth:`Client.subscribe` delivers.

Why this module is over 500 lines: it is the SDK's whole public surface in one class.
Its methods are short (most delegate to one piece above in a few lines); splitting the
class would split the API users call, and moving the docstrings away would hide it.

Typical use::

    store = ProfileStore.open(profile_dir)
    async with Client(store, config) as client:   # start() ... close()
        row = await client.send_text("bob", "hello")
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import Message

from wxnet.client.addresses import Address, AddressBook
from wxnet.client.backoff import ReconnectBackoff
from wxnet.client.config import CONFIG_KEY, ClientConfig, parse_server_url
from wxnet.client.delivery import (
    MSG_FILE,
    MSG_IMAGE,
    MSG_TEXT,
    MSG_VIDEO,
    MSG_VOICE,
    Delivery,
)
from wxnet.client.discovery import Discovery
from wxnet.client.errors import AmbiguousName, NotLoggedIn, SendFailed, TransportError
from wxnet.client.events import (
    ClientEvent,
    ItemReceived,
    LinkKind,
    SendState,
    SendStateChanged,
    WebLoginRequested,
    item_to_json,
)
from wxnet.client.heartbeat import SmartHeartbeat
from wxnet.client.links import NOT_LOGGED_IN, LinkManager
from wxnet.client.longlink import LongLink
from wxnet.client.media import Media
from wxnet.client.newdns import CachedDns
from wxnet.client.resolver import Resolver, SystemResolver, UdpResolver
from wxnet.client.sending import PoorNetworkDetector, SendRetryPolicy
from wxnet.client.shortlink import ShortLink
from wxnet.client.store import AppliedItem, MessageRow, OutboxRow, ProfileStore, SessionInfo
from wxnet.client.syncer import SELECTOR_ALL, Syncer
from wxnet.clock import SYSTEM_CLOCK, Clock
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMError

__all__ = [
    "MSG_FILE",
    "MSG_IMAGE",
    "MSG_TEXT",
    "MSG_VIDEO",
    "MSG_VOICE",
    "SELECTOR_ALL",
    "Client",
    "ClientConfig",
    "ClientEvent",
    "item_to_json",
    "parse_server_url",
]

#: Bound on waiting for each background task to end in close().
CLOSE_WAIT = 5.0
R = TypeVar("R", bound=Message)


class Client:
    """The SDK. ``await start()`` before use and ``await close()`` after (or ``async with``).

    Args:
        store: the profile.
        config: where the service is; None: the config saved at login.
        resolver: the DNS resolver (default: the system's, or ``config.nameservers``).
        clock: monotonic and wall time (tests pass a :class:`~wxnet.clock.FakeClock`).
        rng: randomness for back-off jitter.
    """

    def __init__(
        self,
        store: ProfileStore,
        config: ClientConfig | None = None,
        resolver: Resolver | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        if config is None:
            raw = store.get_json(CONFIG_KEY)
            config = ClientConfig.from_json(raw) if isinstance(raw, dict) else ClientConfig()
        if resolver is None:
            resolver = (
                UdpResolver(list(config.nameservers), config.dns_timeout)
                if config.nameservers
                else SystemResolver(config.dns_timeout)
            )
        self.resolver = resolver
        self.clock = clock
        self._subscribers: list[asyncio.Queue[ClientEvent]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self.discovery = Discovery(
            config, store, resolver, ShortLink(config.connect_timeout), clock, self._note_error
        )
        self.links = LinkManager(
            config, store, self.discovery, clock, rng or random.Random(), self._emit
        )
        self.syncer = Syncer(
            self.links,
            store,
            lambda: self.me,
            self._publish,
            self._note_error,
            config.push_hold_bytes,
        )
        self.media = Media(self.links, config)
        self.delivery = Delivery(
            store,
            self.links,
            self.media,
            SendRetryPolicy(config.send_attempts, config.send_delays),
            clock,
            self._emit,
            self.kick_sync,
        )
        self._started = False
        self.links.on_news = self.kick_sync
        self.links.on_push = self.syncer.push
        self.links.on_long_up = self.delivery.resume
        self._config = config

    # ---- configuration and state, as the pieces hold it ----------------------------

    @property
    def config(self) -> ClientConfig:
        return self._config

    @config.setter
    def config(self, value: ClientConfig) -> None:
        """A new config applies to every request from now on."""
        self._config = value
        self.discovery.config = self.links.config = self.media.config = value
        self.syncer.hold_bytes = value.push_hold_bytes

    @property
    def session(self) -> SessionInfo | None:
        return self.links.session

    @property
    def me(self) -> str:
        if self.session is None:
            raise NotLoggedIn(NOT_LOGGED_IN)
        return self.session.user_name

    @property
    def long(self) -> LongLink | None:
        """The long link in use, if one is up."""
        return self.links.long

    @property
    def link_kind(self) -> LinkKind:
        return self.links.link_kind

    @property
    def short_in_use(self) -> Address | None:
        return self.links.short_in_use

    @property
    def last_error(self) -> str:
        return self.links.last_error

    @property
    def book(self) -> AddressBook:
        return self.discovery.book

    @property
    def poor(self) -> PoorNetworkDetector:
        return self.links.poor

    @property
    def heartbeat(self) -> SmartHeartbeat:
        return self.links.heartbeat

    @property
    def backoff(self) -> ReconnectBackoff:
        return self.links.backoff

    @property
    def send_policy(self) -> SendRetryPolicy:
        return self.delivery.policy

    def _note_error(self, text: str) -> None:
        self.links.last_error = text

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
        self._started = True
        await self.refresh_addresses()
        if not background:
            return
        if self.session is None:
            raise NotLoggedIn(NOT_LOGGED_IN)
        self._tasks.append(asyncio.ensure_future(self.syncer.run()))
        self._tasks.append(asyncio.ensure_future(self.links.run_poll(self._poll_hit)))
        if self.config.use_long_link:
            self._tasks.append(asyncio.ensure_future(self.links.run_long()))
            wait = self.config.connect_timeout if wait_long is None else wait_long
            await self.links.wait_first_round(wait)
        self.delivery.resume()  # rows a killed process left sending, same ClientMsgId
        self.kick_sync()

    async def close(self) -> None:
        """Stop every task (each bounded by :data:`CLOSE_WAIT`) and close the links."""
        self.syncer.closing = True
        self.links.closing = True
        for t in self._tasks:
            t.cancel()
        await self.delivery.close(CLOSE_WAIT)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=CLOSE_WAIT)
        self._tasks.clear()
        await self.links.close(CLOSE_WAIT)

    async def wait_long_link(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a long link; True if one is up."""
        return await self.links.wait_long(timeout)

    # ---- events --------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[ClientEvent]:
        """A queue that gets every event from now on (see :mod:`wxnet.client.events`)."""
        q: asyncio.Queue[ClientEvent] = asyncio.Queue()
        self._subscribers.append(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[ClientEvent]) -> None:
        if q in self._subscribers:
            self._subscribers.remove(q)

    def _emit(self, ev: ClientEvent) -> None:
        for q in self._subscribers:
            q.put_nowait(ev)

    def _publish(self, items: list[AppliedItem]) -> None:
        for it in items:
            if it.item.WhichOneof("body") == "web_login":
                w = it.item.web_login
                self._emit(WebLoginRequested(w.uuid, w.user_agent, w.address, w.expires))
            else:
                self._emit(ItemReceived(it.item))

    # ---- addresses and requests ----------------------------------------------------

    def cached_dns(self) -> CachedDns | None:
        return self.discovery.cached_dns()

    async def refresh_addresses(self) -> None:
        """Resolve the names (S8), then fetch newgetdns if the cache is stale (S10)."""
        await self.links.refresh_addresses()

    def long_addresses(self) -> list[Address]:
        return self.links.long_addresses()

    def short_addresses(self) -> list[Address]:
        return self.discovery.short_addresses()

    def base(self, scene: int = 0) -> pb.BaseRequest:
        return self.links.base(scene)

    async def request(
        self,
        name: str,
        req: Message,
        resp_type: type[R],
        *,
        via: str = "any",
        timeout: float | None = None,
    ) -> R:
        """One CGI request (see :meth:`LinkManager.request`)."""
        return await self.links.request(name, req, resp_type, via=via, timeout=timeout)

    # ---- login ---------------------------------------------------------------------

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
            resp = await self.links.login_long(req)
        old = self.store.session()
        if old is None or old.user_name != resp.user_name:
            self.store.reset_sync()
        else:  # the key goes on; newinit brings what was sent while logged out (S17)
            self.syncer.catch_up = True
        session = SessionInfo(
            resp.uin, resp.session_key, resp.user_name, resp.nick_name, self.store.device_id()
        )
        self.links.session = session
        self.store.save_session(session)
        self.store.put_json(CONFIG_KEY, self.config.to_json())
        self.links.save_status()
        return session

    async def logout(self) -> None:
        try:
            await self.request("logout", pb.LogoutRequest(base=self.base()), pb.LogoutResponse)
        finally:
            self.store.clear_session()
            self.links.session = None

    # ---- sync ----------------------------------------------------------------------

    def kick_sync(self) -> None:
        self.syncer.kick()

    async def sync(self) -> list[AppliedItem]:
        """Fetch everything new; returns the items new to this profile. Notifies that
        arrive meanwhile are coalesced into one more round."""
        return await self.syncer.sync()

    async def _poll_hit(self) -> None:
        self.kick_sync()
        await self.sync()

    # ---- sending -------------------------------------------------------------------

    async def _queue_and_send(self, row: OutboxRow) -> OutboxRow:
        self._emit(SendStateChanged(row.client_msg_id, SendState.SENDING))
        return await self.delivery.submit(row.client_msg_id)

    async def send_text(self, to_user: str, text: str) -> OutboxRow:
        """Queue a text (committed before anything is sent) and deliver it; returns the
        final row (``sent`` or ``failed``)."""
        if not to_user or not text:
            raise ValueError("recipient and text must not be empty")
        return await self._queue_and_send(self.store.queue(to_user, MSG_TEXT, text))

    async def send_image(self, to_user: str, path: str | Path) -> OutboxRow:
        p = _media_file(path)
        return await self._queue_and_send(self.store.queue(to_user, MSG_IMAGE, media_path=str(p)))

    async def send_voice(
        self, to_user: str, path: str | Path, voice_length_ms: int = 0
    ) -> OutboxRow:
        p = _media_file(path)
        row = self.store.queue(to_user, MSG_VOICE, media_path=str(p), voice_length=voice_length_ms)
        return await self._queue_and_send(row)

    async def send_file(self, to_user: str, path: str | Path) -> OutboxRow:
        """Send a file (msg_type 49, app_msg_type 6) under its own name: chunked and
        resumable as an image is."""
        p = _media_file(path)
        return await self._queue_and_send(self.store.queue(to_user, MSG_FILE, media_path=str(p)))

    async def send_video(
        self,
        to_user: str,
        path: str | Path,
        thumb: str | Path | None = None,
        play_length_s: int = 0,
    ) -> OutboxRow:
        """Send a video (msg_type 43) with ``thumb`` (an image file) as its thumbnail;
        without one the server makes a placeholder (a grey frame with a play mark).
        The row's ``content`` holds the thumbnail's path, ``voice_length`` the seconds."""
        p = _media_file(path)
        t = "" if thumb is None else str(_media_file(thumb))
        row = self.store.queue(
            to_user, MSG_VIDEO, t, media_path=str(p), voice_length=max(0, play_length_s)
        )
        return await self._queue_and_send(row)

    async def resend(self, client_msg_id: str) -> OutboxRow:
        """Send a failed message again with its ClientMsgId (the server dedups, S23)."""
        row = self.store.outbox_row(client_msg_id)
        if row is None:
            raise SendFailed(client_msg_id, "no such message in the outbox")
        if row.state == "sent":
            return row
        self.store.mark_sending(client_msg_id)
        return await self.delivery.submit(client_msg_id)

    async def wait_sent(self, client_msg_id: str) -> OutboxRow:
        """The final row of a message on its way (or its row now, if none is)."""
        fut = self.delivery.waiter(client_msg_id)
        if fut is not None:
            return await asyncio.shield(fut)
        row = self.store.outbox_row(client_msg_id)
        if row is None:
            raise SendFailed(client_msg_id, "no such message in the outbox")
        return row

    async def cancel_voice(self, to_user: str, path: str | Path, chunks: int) -> str:
        """Stream ``chunks`` chunks of a voice message, then cancel it (cancel_flag):
        nothing is delivered. Returns the ClientMsgId used."""
        row = self.store.queue(to_user, MSG_VOICE, media_path=str(Path(path).resolve()))
        try:
            await self.media.upload_voice(row, cancel_after=chunks)
        finally:
            self.store.discard(row.client_msg_id)
            self.media.forget(row.client_msg_id)
        return row.client_msg_id

    async def download_image(self, msg_id: int, thumb: bool = False) -> bytes:
        return await self.media.download_image(msg_id, thumb)

    async def download_voice(self, msg_id: int) -> bytes:
        return await self.media.download_voice(msg_id)

    async def download_file(self, msg_id: int, dest: str | Path) -> int:
        """Write a file message's bytes to ``dest``; returns how many."""
        return await self.media.download_file(msg_id, Path(dest))

    async def download_video(self, msg_id: int, dest: str | Path, thumb: bool = False) -> int:
        """Write a video (``thumb``: its JPEG thumbnail) to ``dest``; returns how many."""
        return await self.media.download_video(msg_id, Path(dest), thumb)

    # ---- contacts, groups, receipts, revoke ------------------------------------------

    async def add_contact(self, user_name: str, greeting: str = "") -> pb.Contact:
        """Ask ``user_name`` to be a contact. On a server with ``contacts = "request"``
        (the default) this sends a friend request (see :meth:`request_contact`); the
        contact is saved here once it is one (the server's ``contacts = "open"``, or
        they had asked you)."""
        contact, _ = await self.request_contact(user_name, greeting)
        return contact

    async def request_contact(self, user_name: str, greeting: str = "") -> tuple[pb.Contact, bool]:
        """Send a friend request (verifyuser opcode 2). Returns (their card, pending):
        ``pending`` means they must accept it (:meth:`accept_contact` on their side)."""
        resp = await self.request(
            "verifyuser",
            pb.AddContactRequest(user_name=user_name, opcode=2, verify_content=greeting),
            pb.AddContactResponse,
        )
        if not resp.pending:
            self.store.save_contact(resp.contact)
        return resp.contact, resp.pending

    async def accept_contact(self, user_name: str) -> pb.Contact:
        """Accept ``user_name``'s friend request (verifyuser opcode 3): you become
        contacts of each other.

        Raises:
            MMError: ERR_NOT_FOUND when they sent no request.
        """
        resp = await self.request(
            "verifyuser",
            pb.AddContactRequest(user_name=user_name, opcode=3),
            pb.AddContactResponse,
        )
        self.store.save_contact(resp.contact)
        return resp.contact

    def friend_requests(self) -> list[MessageRow]:
        """Requests received (as synced) from accounts that are not contacts yet."""
        return self.store.friend_requests()

    async def refresh_contacts(self) -> list[pb.Contact]:
        resp = await self.request("getcontact", pb.GetContactRequest(), pb.GetContactResponse)
        for c in resp.contacts:
            self.store.save_contact(c)
        return list(resp.contacts)

    async def resolve(self, name: str) -> str:
        """The user name or group id that ``name`` stands for: a group id, or a contact's
        user name, as it is; a group's name (its topic) when exactly one of the user's
        groups has it. Anything else is returned as it is (the server then says no).
        A name not known here is looked up again after fetching the contact list once.

        Raises:
            AmbiguousName: several of the user's groups have that name.
        """
        found = self._resolve_saved(name)
        if found is None and self.session is not None:
            try:
                await self.refresh_contacts()
            except (TransportError, MMError):
                return name  # offline: the saved list was all there is
            found = self._resolve_saved(name)
        return found or name

    def _resolve_saved(self, name: str) -> str | None:
        if name.endswith("@chatroom"):
            return name
        contacts = self.store.contacts()
        if any(c.user_name == name for c in contacts):
            return name
        ids = [c.user_name for c in contacts if c.is_chatroom and c.nick_name == name]
        if len(ids) > 1:
            raise AmbiguousName(name, ids)
        return ids[0] if ids else None

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
        """What ``wxnet status`` prints: the status row (brought up to date first when this
        client has started; else as the last process saved it) plus the SyncKey, the
        user, where the server is configured, the newgetdns cache and outbox counts."""
        if self._started:
            self.links.save_status()
        raw = self.store.get_json("status")
        st: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {}
        st["synckey"] = self.store.synckey().hex()
        st["user"] = self.session.user_name if self.session else None
        st["config"] = {k: v for k, v in self.config.to_json().items() if k in _STATUS_CONFIG}
        cached = self.cached_dns()
        st["newdns_cached"] = (
            None
            if cached is None
            else {"fetched_at": cached.fetched_at, "fresh": cached.fresh(self.clock.wall())}
        )
        st["outbox"] = {s: len(self.store.outbox((s,))) for s in ("sending", "failed")}
        st["pushes"] = dict(self.syncer.pushes)
        return st


_STATUS_CONFIG = frozenset(
    {
        "server_url",
        "long_name",
        "short_name",
        "dns_name",
        "long_ports",
        "short_ports",
        "extra_long_port",
        "nameservers",
    }
)


def _media_file(path: str | Path) -> Path:
    p = Path(path).resolve()
    if not p.is_file() or p.stat().st_size == 0:
        raise ValueError(f"not a non-empty file: {p}")
    return p
