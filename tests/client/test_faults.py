"""Faults injected for real on loopback: the long-link listener closed mid-session,
connections dropped mid-send, the short link stalled, DNS failing, a killed process.
Every send ends delivered exactly once, or failed and then delivered once by resend;
the client recovers by itself."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.client.conftest import (
    FAST,
    PASSWORD,
    USERS,
    Clients,
    history_ids,
    next_event,
    server_config,
    until,
)
from tests.client.faults import DnsMode, DnsServer, Mode, Proxy
from wxnet.client.events import (
    ClientEvent,
    LinkChanged,
    NetworkChanged,
    SendState,
    SendStateChanged,
)
from wxnet.client.sdk import Client, ClientConfig
from wxnet.client.sending import NetworkQuality
from wxnet.client.store import ProfileStore
from wxnet.server.app import Server, start_server
from wxnet.server.config import DnsConfig
from wxnet.server.longlink import LongLink as ServerLongLink


def is_link(kind: str) -> Callable[[ClientEvent], bool]:
    return lambda ev: isinstance(ev, LinkChanged) and ev.link == kind


def is_quality(quality: NetworkQuality) -> Callable[[ClientEvent], bool]:
    return lambda ev: isinstance(ev, NetworkChanged) and ev.quality is quality


@dataclasses.dataclass
class Proxied:
    server: Server
    long: Proxy
    short: Proxy

    def config(self, **changes: object) -> ClientConfig:
        return ClientConfig(server_url=f"http://127.0.0.1:{self.short.port}").replace(
            **{**FAST, **changes}
        )

    def direct(self) -> ClientConfig:
        """A client that bypasses the proxies (short link straight to the server)."""
        return ClientConfig(
            server_url=f"http://127.0.0.1:{self.server.http_port}", use_long_link=False
        ).replace(**FAST)

    def mode(self, mode: Mode) -> None:
        self.long.mode = mode
        self.short.mode = mode


@pytest.fixture
async def proxied(tmp_path: Path) -> AsyncIterator[Proxied]:
    """The server behind two proxies; its newgetdns points clients at the proxies."""
    long, short = await Proxy(0).start(), await Proxy(0).start()
    cfg = server_config(tmp_path, dns=DnsConfig(long_ports=(long.port,), short_ports=(short.port,)))
    srv = await start_server(cfg)
    long.target_port, short.target_port = srv.long_port, srv.http_port
    for name in USERS:
        await srv.engine.add_user(name, PASSWORD, name.title())
    try:
        yield Proxied(srv, long, short)
    finally:
        await long.close()
        await short.close()
        await srv.close()


async def test_long_listener_closed_mid_session_short_link_then_back(
    server: Server, clients: Clients
) -> None:
    cfg = ClientConfig(server_url=f"http://127.0.0.1:{server.http_port}").replace(**FAST)
    alice = await clients.new("alice", config=cfg)
    bob = await clients.new("bob", config=cfg)
    await alice.add_contact("bob")
    assert alice.link_kind == "long"
    events = alice.subscribe()
    port = server.long_port
    listener = server._long_servers[0]
    listener.close()
    await listener.wait_closed()
    for link in server.long_links():
        link.close()
    await next_event(events, is_link("short"), "alice to fall back to the short link")
    # Both directions still work: alice's requests go over HTTP, news by the long poll.
    r1 = await bob.send_text("alice", "while the long link is down")
    r2 = await alice.send_text("bob", "me too")
    assert r1.state == r2.state == "sent"
    await until(alice, lambda: r1.msg_id in history_ids(alice, "bob"), "alice's long poll")
    await until(bob, lambda: r2.msg_id in history_ids(bob, "alice"), "bob to get it")
    # The listener comes back: the client moves back to the long link by itself.
    server._long_servers[0] = await server.loop.create_server(
        lambda: ServerLongLink(server), "127.0.0.1", port, reuse_address=True
    )
    await next_event(events, is_link("long"), "alice to move back to the long link")
    r3 = await bob.send_text("alice", "welcome back")
    await until(alice, lambda: r3.msg_id in history_ids(alice, "bob"), "notify on long link")
    await until(bob, lambda: r3.msg_id in history_ids(bob, "alice"), "bob's own copy")
    for c, talker in ((alice, "bob"), (bob, "alice")):
        ids = history_ids(c, talker)
        assert sorted(ids) == sorted({r1.msg_id, r2.msg_id, r3.msg_id}), c.me


async def test_reply_dropped_mid_send_is_delivered_once(proxied: Proxied, clients: Clients) -> None:
    alice = await clients.new("alice", config=proxied.config())
    bob = await clients.new("bob", config=proxied.config())
    await alice.add_contact("bob")
    assert alice.long is not None
    # The server gets the send, but the long link dies before the reply: the client
    # retries on the short link with the same ClientMsgId.
    proxied.long.mode = Mode.DROP_REPLIES
    r = await alice.send_text("bob", "exactly once")
    assert r.state == "sent", r.error
    await until(bob, lambda: history_ids(bob, "alice") == [r.msg_id], "bob to get it once")
    proxied.long.mode = Mode.PASS
    await until(alice, lambda: alice.link_kind == "long", "alice back on the long link")
    assert await bob.sync() == []
    assert history_ids(bob, "alice") == [r.msg_id]


async def test_unreachable_marks_failed_then_resend_delivers_once(
    proxied: Proxied, clients: Clients
) -> None:
    alice = await clients.new("alice", config=proxied.config())
    bob = await clients.new("bob", config=proxied.direct())
    await alice.add_contact("bob")
    events = alice.subscribe()
    # Every request reaches the server, no reply ever comes back.
    proxied.mode(Mode.DROP_REPLIES)
    proxied.long.drop_all()
    r = await alice.send_text("bob", "red exclamation")
    assert r.state == "failed" and r.attempts == alice.send_policy.max_attempts
    await next_event(
        events,
        lambda e: isinstance(e, NetworkChanged) and e.quality is NetworkQuality.POOR,
        "S13 poor",
    )
    assert [x.client_msg_id for x in alice.store.outbox(("failed",))] == [r.client_msg_id]
    # The server stored it on the first attempt; bob has it once already.
    await until(bob, lambda: len(history_ids(bob, "alice")) == 1, "bob to get it")
    proxied.mode(Mode.PASS)
    again = await alice.resend(r.client_msg_id)
    assert again.state == "sent" and again.client_msg_id == r.client_msg_id
    assert history_ids(bob, "alice") == [again.msg_id]
    await next_event(
        events,
        lambda e: isinstance(e, NetworkChanged) and e.quality is NetworkQuality.GOOD,
        "good again",
    )
    assert alice.store.outbox() == []


async def test_stalled_short_link_fails_then_recovers_by_itself(
    proxied: Proxied, clients: Clients
) -> None:
    alice = await clients.new("alice", config=proxied.config())
    # Short timeouts only now: a loaded machine may take longer than 0.5 s to log in.
    alice.config = alice.config.replace(request_timeout=0.5, poll_timeout_ms=300)
    bob = await clients.new("bob", config=proxied.direct())
    await alice.add_contact("bob")
    events = alice.subscribe()
    proxied.long.mode = Mode.REFUSE
    proxied.long.drop_all()
    await next_event(events, is_link("short"), "alice on the short link")
    proxied.short.mode = Mode.STALL
    r = await alice.send_text("bob", "into the void")
    assert r.state == "failed"
    # Unstall: no action from the user, yet news arrive again (long poll or long link).
    proxied.short.mode = Mode.PASS
    proxied.long.mode = Mode.PASS
    r2 = await bob.send_text("alice", "can you hear me")
    await until(alice, lambda: r2.msg_id in history_ids(alice, "bob"), "alice to recover")
    again = await alice.resend(r.client_msg_id)
    assert again.state == "sent"
    await until(bob, lambda: again.msg_id in history_ids(bob, "alice"), "the resent message")
    assert history_ids(bob, "alice").count(again.msg_id) == 1


async def test_dead_heartbeat_replaces_the_link(proxied: Proxied, clients: Clients) -> None:
    cfg = proxied.config(noop_interval=0.2, noop_timeout=0.3)
    alice = await clients.new("alice", config=cfg)
    alice.config = alice.config.replace(request_timeout=1.0)  # for the links to come
    assert alice.long is not None
    first = alice.long
    await until(alice, lambda: first.last_heartbeat is not None, "a noop reply")
    events = alice.subscribe()
    proxied.long.mode = Mode.STALL  # the path silently eats everything (a dead NAT entry)
    ev = await next_event(events, is_link("short"), "the link to be declared dead")
    assert isinstance(ev, LinkChanged) and "heartbeat" in ev.reason
    proxied.long.mode = Mode.PASS
    await next_event(events, is_link("long"), "a new long link")
    assert alice.long is not None and alice.long is not first


async def test_dns_failure_uses_cached_list_then_builtin(tmp_path: Path, clients: Clients) -> None:
    # A port nobody listens on: the server advertises it as the long link in newgetdns.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    srv = await start_server(server_config(tmp_path, dns=DnsConfig(long_ports=(dead,))))
    dns_server = await DnsServer(
        {n: "127.0.0.1" for n in ("long.wxnet.local", "short.wxnet.local", "dns.wxnet.local")}
    ).start()
    try:
        for name in USERS:
            await srv.engine.add_user(name, PASSWORD, name.title())
        cfg = ClientConfig(
            nameservers=(("127.0.0.1", dns_server.port),),
            long_ports=(srv.long_port,),
            short_ports=(srv.http_port,),
            builtin_long=(("127.0.0.1", srv.long_port),),
            dns_timeout=0.5,
        ).replace(**FAST)
        alice = await clients.new("alice", config=cfg)
        bob = await clients.new(
            "bob",
            config=ClientConfig(
                server_url=f"http://127.0.0.1:{srv.http_port}", use_long_link=False
            ).replace(**FAST),
        )
        await alice.add_contact("bob")
        assert dns_server.queries > 0
        st = alice.status()
        assert st["long_source"] == "dns" and st["dns_ok"] is True
        assert st["newdns_cached"]["fresh"]

        dns_server.mode = DnsMode.SERVFAIL
        alice = await clients.reopen(alice)
        st = alice.status()
        assert st["dns_ok"] is False
        # The cached newgetdns long address is dead, so the built-in one carries the link;
        # the short link comes from the cached list (no built-in short address is set).
        assert st["link"] == "long" and st["long_source"] == "builtin"
        assert alice.book.failures(("127.0.0.1", dead)) >= 1
        r = await alice.send_text("bob", "sent without DNS")
        assert r.state == "sent"
        await until(bob, lambda: history_ids(bob, "alice") == [r.msg_id], "bob")
        assert alice.short_addresses()[0].source.value == "newdns"

        dns_server.mode = DnsMode.SILENT  # timeouts, not errors
        await alice.refresh_addresses()
        assert alice.status()["dns_ok"] is False
        dns_server.mode = DnsMode.ANSWER
        await alice.refresh_addresses()
        assert alice.status()["dns_ok"] is True
    finally:
        await clients.close()
        dns_server.close()
        await srv.close()


async def test_killed_mid_send_resumes_once(proxied: Proxied, tmp_path: Path) -> None:
    prof = tmp_path / "alice-killed"
    store = ProfileStore.open(prof)
    client = Client(store, proxied.config(use_long_link=False))
    await client.login("alice", PASSWORD)
    await client.add_contact("bob")
    await client.close()
    store.close()
    proxied.mode(Mode.STALL)
    proxied.short.received.clear()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wxnet",
        "send",
        "--profile",
        str(prof),
        "bob",
        "half-sent",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        await proxied.short.wait_for_request(b"/cgi-bin/micromsg-bin/newsendmsg", 20)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.stderr is not None
    err = await proc.stderr.read()
    assert b"newsendmsg" in proxied.short.received, err.decode()
    proxied.mode(Mode.PASS)
    store = ProfileStore.open(prof)
    left = store.outbox(("sending",))
    assert [r.content for r in left] == ["half-sent"]
    bob_store = ProfileStore.open(tmp_path / "bob")
    bob = Client(bob_store, proxied.direct())
    await bob.login("bob", PASSWORD)
    await bob.start()
    alice = Client(store)
    q: asyncio.Queue[ClientEvent] = alice.subscribe()
    try:
        await alice.start()  # resumes the outbox with the same ClientMsgId
        ev = await next_event(
            q, lambda e: isinstance(e, SendStateChanged) and e.state is SendState.SENT, "sent"
        )
        assert isinstance(ev, SendStateChanged)
        assert ev.client_msg_id == left[0].client_msg_id
        await until(bob, lambda: len(history_ids(bob, "alice")) == 1, "bob to get it")
        assert await bob.sync() == []
        assert len(history_ids(bob, "alice")) == 1
    finally:
        await alice.close()
        await bob.close()
        store.close()
        bob_store.close()


async def test_extra_long_port_is_tried_only_after_the_others(
    tmp_path: Path, clients: Clients
) -> None:
    """S14: QQ's 14000 plays 8080's role, tried only when both 8080 and 80 fail."""
    proxy, http = await Proxy(0).start(), await Proxy(0).start()
    srv = await start_server(
        server_config(
            tmp_path,
            extra_long_ports=(0,),
            dns=DnsConfig(long_ports=(proxy.port,), short_ports=(http.port,)),
        )
    )
    proxy.target_port, http.target_port = srv.long_port, srv.http_port
    extra = srv.extra_long_ports[0]
    try:
        await srv.engine.add_user("alice", PASSWORD)
        cfg = ClientConfig(
            server_url=f"http://127.0.0.1:{http.port}", extra_long_port=extra
        ).replace(**FAST)
        alice = await clients.new("alice", "phone", cfg)
        assert alice.long is not None and alice.long.address.port == proxy.port
        assert [a.port for a in alice.long_addresses()] == [proxy.port]
        events = alice.subscribe()
        proxy.mode = Mode.REFUSE  # 8080 cut: the short link carries on, no 14000 yet
        proxy.drop_all()
        await next_event(events, is_link("short"), "the short link")
        r = await alice.send_text("alice", "note to self over HTTP")
        assert r.state == "sent" and alice.long is None
        http.mode = Mode.REFUSE  # 80 cut too: now the extra port
        await until(
            alice,
            lambda: alice.long is not None and alice.long.address.port == extra,
            "the link to move to the extra port",
        )
        assert alice.status()["long_address"] == f"127.0.0.1:{extra}"
    finally:
        await clients.close()
        await proxy.close()
        await http.close()
        await srv.close()


async def test_login_over_the_long_link_when_http_is_cut(proxied: Proxied, tmp_path: Path) -> None:
    """S12: either port alone is enough, login included."""
    store = ProfileStore.open(tmp_path / "p")
    # Fetch the newgetdns list while HTTP works, then cut HTTP.
    warm = Client(store, proxied.config())
    await warm.refresh_addresses()
    await warm.close()
    proxied.short.mode = Mode.REFUSE
    client = Client(store, proxied.config())
    try:
        s = await client.login("alice", PASSWORD)
        assert s.user_name == "alice"
    finally:
        await client.close()
        store.close()
