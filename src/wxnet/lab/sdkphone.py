"""The phone played by wxnet's client SDK (:mod:`wxnet.client.sdk`): the real subject of
the experiment. A fresh profile per case, configured with the service's names, the
newgetdns name, built-in addresses and the extra port; everything it does is read from
its events (:mod:`wxnet.client.events`) and its status, never guessed.

It returns the same result shape as :func:`wxnet.lab.agent.run_phone`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wxnet._compat import wait_for
from wxnet.proto.errors import MMError

if TYPE_CHECKING:
    from wxnet.client.events import ClientEvent
    from wxnet.client.sdk import Client, ClientConfig
    from wxnet.lab.agent import AgentConfig, PhoneRun

__all__ = ["run_sdk_phone", "run_sdk_warmup", "sdk_available"]

_SOURCES = {"dns": "dns", "newdns": "newgetdns", "builtin": "builtin"}


def sdk_available() -> bool:
    try:
        import wxnet.client.sdk  # noqa: F401
    except ImportError:
        return False
    return True


def client_config(cfg: AgentConfig) -> ClientConfig:
    """The SDK's settings for the lab: the service names, the newgetdns name, built-in
    addresses and the extra port (S9, S10, S14)."""
    from wxnet.client.sdk import ClientConfig

    return ClientConfig(
        long_name=cfg.long_name, short_name=cfg.short_name, dns_name=cfg.dns_name,
        long_ports=(cfg.long_port,), short_ports=(cfg.short_port,),
        extra_long_port=cfg.extra_port,
        builtin_long=tuple((ip, cfg.long_port) for ip in cfg.builtin),
        builtin_short=tuple((ip, cfg.short_port) for ip in cfg.builtin),
        # the lab's only shortening of the app's timers: connects fail fast (reject) or
        # time out in seconds (drop), so a case fits its time limit
        connect_timeout=cfg.connect_timeout, request_timeout=cfg.request_timeout,
        stagger=0.5, poll_timeout_ms=2000, dns_timeout=cfg.connect_timeout,
        image_chunk=cfg.chunk, send_attempts=2, send_delays=(0.5,), device_name="lab-phone",
    )  # fmt: skip


async def run_sdk_warmup(cfg: AgentConfig) -> dict[str, Any]:
    """Log in once with no fault, so the profile caches the newgetdns list (S10); the
    lab copies this profile for every case of a ``--warm`` run."""
    from wxnet.client.sdk import Client
    from wxnet.client.store import ProfileStore

    store = ProfileStore.open(Path(cfg.profile))
    client = Client(store, client_config(cfg))
    try:
        await client.login(cfg.user, cfg.password)
        cached = client.cached_dns() is not None
    finally:
        await client.close()
        store.close()
    return {"newgetdns_cached": cached}


async def run_sdk_phone(cfg: AgentConfig) -> dict[str, Any]:
    from wxnet.client.errors import ClientError
    from wxnet.client.sdk import Client
    from wxnet.client.store import ProfileStore
    from wxnet.lab.agent import PhoneRun

    run = PhoneRun(cfg.time_limit, client="sdk")
    out, note = run.out, run.note
    profile = Path(cfg.profile)
    store = ProfileStore.open(profile)
    client = Client(store, client_config(cfg))
    events = client.subscribe()
    received = _Received(cfg, run)

    async def pump() -> None:
        while True:
            received.on_event(await events.get())

    pump_task = asyncio.ensure_future(pump())
    if client.cached_dns() is not None:
        note("the profile has a cached newgetdns list")
    try:
        if not await _login(client, cfg, run):
            out["network_poor"] = out["network_poor"] or client.poor.quality.value == "poor"
            return out
        note(f"logged in (short link {client.short_in_use})")
        await client.start(wait_long=cfg.connect_timeout * 2)
        out["path"] = _path(client, cfg)
        note(f"path: {out['path']}")
        await _send_all(client, cfg, run, profile)
        with contextlib.suppress(TimeoutError):
            await wait_for(received.all.wait(), max(0.1, run.deadline - time.monotonic()))
        # the path again: the one the session ended on (a long link may have come up late)
        out["path"] = _path(client, cfg) or out["path"]
    except (ClientError, MMError, OSError) as exc:
        out["error"] = str(exc)
        note(f"error: {exc}")
    finally:
        pump_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump_task
        while not events.empty():
            received.on_event(events.get_nowait())
        out["received"] = len(set(received.contents))
        out["duplicated"] = len(received.contents) - len(set(received.contents))
        out["log"] = run.log
        await client.close()
        store.close()
    return out


class _Received:
    """What the SDK's events say: the network turning poor, link changes, the first
    ack, and the peer's texts (each message id once)."""

    def __init__(self, cfg: AgentConfig, run: PhoneRun) -> None:
        from wxnet.lab.agent import peer_text

        self.cfg, self.run = cfg, run
        self.prefix = peer_text(cfg.tag, 0)[:-1]
        self.seen: dict[int, str] = {}
        self.contents: list[str] = []
        self.all = asyncio.Event()

    def on_event(self, ev: ClientEvent) -> None:
        from wxnet.client.events import (
            ItemReceived,
            LinkChanged,
            NetworkChanged,
            SendState,
            SendStateChanged,
        )
        from wxnet.client.sending import NetworkQuality

        run = self.run
        if isinstance(ev, NetworkChanged) and ev.quality is NetworkQuality.POOR:
            run.out["network_poor"] = True
            run.note("client: the network is poor (S13)")
        elif isinstance(ev, LinkChanged):
            run.note(f"client: link {ev.link} {ev.address} {ev.reason}")
        elif isinstance(ev, SendStateChanged) and ev.state is SendState.SENT:
            run.first_ack()
        elif isinstance(ev, ItemReceived) and ev.body_type == "add_msg":
            m = ev.item.add_msg
            if (m.from_user == self.cfg.peer and m.content.startswith(self.prefix)
                    and m.msg_id not in self.seen):  # fmt: skip
                self.seen[m.msg_id] = m.content
                self.contents.append(m.content)
                if len(set(self.contents)) >= self.cfg.messages:
                    self.all.set()


async def _login(client: Client, cfg: AgentConfig, run: PhoneRun) -> bool:
    """Up to ``cfg.attempts`` logins; whether one worked (``out["error"]`` says why not)."""
    from wxnet.client.errors import ClientError

    for attempt in range(1, max(1, cfg.attempts) + 1):
        try:
            await client.login(cfg.user, cfg.password)
        except (ClientError, MMError, OSError) as exc:
            run.note(f"login attempt {attempt} failed: {exc}")
            run.out["error"] = f"login: {exc}"
            continue
        run.out["logged_in"] = True
        run.out["error"] = ""
        return True
    return False


async def _send_all(client: Client, cfg: AgentConfig, run: PhoneRun, profile: Path) -> None:
    """The case's texts, then the image (from a file in the profile)."""
    from wxnet.lab.agent import make_image, phone_text

    out = run.out
    for i in range(cfg.messages):
        out["sent"] += 1
        row = await client.send_text(cfg.peer, phone_text(cfg.tag, i))
        if row.state == "sent":
            out["acked"] += 1
        else:
            run.note(f"text {i} {row.state}")
    image = profile / "lab-image.jpg"
    image.write_bytes(make_image(cfg.image_bytes, cfg.tag))
    row = await client.send_image(cfg.peer, image)
    out["image_ok"] = row.state == "sent"
    run.note(f"image {row.state}")


def _path(client: Client, cfg: AgentConfig) -> dict[str, Any] | None:
    link = client.long
    if client.link_kind == "long" and link is not None:
        addr = link.address
        kind = "extra" if addr.extra or addr.port == cfg.extra_port else "long"
        return {"source": _SOURCES.get(addr.source.value, addr.source.value), "link": kind,
                "address": addr.host, "port": addr.port}  # fmt: skip
    short = client.short_in_use
    if short is not None:
        return {"source": _SOURCES.get(short.source.value, short.source.value), "link": "short",
                "address": short.host, "port": short.port}  # fmt: skip
    return None
