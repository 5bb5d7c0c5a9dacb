from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from wxnet.cli.common import IO
from wxnet.cli.main import run
from wxnet.client.events import ClientEvent
from wxnet.client.sdk import Client, ClientConfig
from wxnet.client.store import ProfileStore
from wxnet.server.app import Server, start_server
from wxnet.server.config import ServerConfig
from wxnet.sync.engine import EngineConfig

WAIT = 15.0  # bound on every wait for a real event
PASSWORD = "secret1"
USERS = ("alice", "bob", "carol")
#: Fast timers for tests: the policies are the same, only the numbers are small.
FAST = {
    "reconnect_ladder": (0.0, 0.05, 0.1, 0.2),
    "send_delays": (0.05, 0.1),
    # Generous: logins hash passwords (argon2), slow on a loaded two-core machine.
    "request_timeout": 8.0,
    "connect_timeout": 2.0,
    "stagger": 0.2,
    "poll_timeout_ms": 2000,
}


def server_config(tmp_path: Path, **changes: Any) -> ServerConfig:
    cfg = ServerConfig(
        host="127.0.0.1",
        long_port=0,
        http_port=0,
        data=tmp_path / "server",
        sync=EngineConfig(durability="NORMAL", contacts="open"),  # consent: test_consent
    )
    return dataclasses.replace(cfg, **changes)


#: No client test should come near this; if one does, say where every task waits.
WATCHDOG = 150.0


@pytest.fixture(autouse=True)
def watchdog(request: pytest.FixtureRequest) -> Iterator[None]:
    """For async tests: after WATCHDOG seconds, print every asyncio task's stack to
    stderr and cancel them, so a hang fails with a diagnosis instead of blocking CI."""
    if request.node.get_closest_marker("asyncio") is None:
        yield
        return
    fired = threading.Event()
    loops: list[asyncio.AbstractEventLoop] = []

    def fire() -> None:
        for loop in loops:
            loop.call_soon_threadsafe(_dump_and_cancel, loop)
        fired.set()

    timer = threading.Timer(WATCHDOG, fire)
    timer.daemon = True
    original = asyncio.BaseEventLoop.run_until_complete

    def tracking(self: asyncio.BaseEventLoop, future: Any) -> Any:
        loops.append(self)
        return original(self, future)

    asyncio.BaseEventLoop.run_until_complete = tracking  # type: ignore[method-assign]
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        asyncio.BaseEventLoop.run_until_complete = original  # type: ignore[method-assign]
    assert not fired.is_set(), f"watchdog: the test ran longer than {WATCHDOG} s"


def _dump_and_cancel(loop: asyncio.AbstractEventLoop) -> None:
    for task in asyncio.all_tasks(loop):
        print(f"watchdog: {task!r}", file=sys.stderr)
        task.print_stack(file=sys.stderr)
    for task in asyncio.all_tasks(loop):
        task.cancel()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = await start_server(server_config(tmp_path))
    for name in USERS:
        await srv.engine.add_user(name, PASSWORD, name.title())
    try:
        yield srv
    finally:
        await srv.close()


class Clients:
    """Starts logged-in clients (one profile per user and device) and closes them."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.all: list[Client] = []
        self.stores: list[ProfileStore] = []

    async def new(
        self, user: str, device: str = "phone", config: ClientConfig | None = None, **kw: Any
    ) -> Client:
        store = ProfileStore.open(self.tmp_path / f"{user}-{device}")
        self.stores.append(store)
        client = Client(store, config, **kw)
        self.all.append(client)
        await client.login(user, PASSWORD)
        await client.start()
        return client

    async def reopen(self, client: Client, **kw: Any) -> Client:
        """Close ``client`` and start a new one on the same profile (a restart)."""
        await client.close()
        self.all.remove(client)
        fresh = Client(client.store, **kw)
        await fresh.start()
        self.all.append(fresh)
        return fresh

    async def close(self) -> None:
        for c in self.all:
            with contextlib.suppress(Exception):
                await c.close()
        for s in self.stores:
            s.close()


@pytest.fixture
async def clients(tmp_path: Path) -> AsyncIterator[Clients]:
    cs = Clients(tmp_path)
    try:
        yield cs
    finally:
        await cs.close()


async def until(
    client: Client | list[Client],
    cond: Callable[[], bool],
    what: str,
    timeout: float = WAIT,
) -> None:
    """Wait for ``cond`` to hold, re-checking after each event of the client(s); bounded."""
    cs = client if isinstance(client, list) else [client]
    queues = [c.subscribe() for c in cs]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while not cond():
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}")
            getters = [asyncio.ensure_future(q.get()) for q in queues]
            try:
                await asyncio.wait(
                    getters, timeout=min(left, 0.5), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for g in getters:
                    g.cancel()
    finally:
        for c, q in zip(cs, queues, strict=True):
            c.unsubscribe(q)


async def next_event(
    q: asyncio.Queue[ClientEvent], match: Callable[[ClientEvent], bool], what: str
) -> ClientEvent:
    async def get() -> ClientEvent:
        while True:
            ev = await q.get()
            if match(ev):
                return ev

    try:
        return await asyncio.wait_for(get(), WAIT)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def history_ids(client: Client, talker: str) -> list[int]:
    return [m.msg_id for m in client.store.history(talker, 1000)]


# ---- a server in a thread, for the CLI (whose commands run their own event loop) ----------


class ServerThread:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.loop = asyncio.new_event_loop()
        self.server: Server | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def call(self, coro: Awaitable[Any]) -> Any:
        async def wrap() -> Any:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(WAIT * 2)

    def start(self) -> ServerThread:
        self._thread.start()

        async def go() -> Server:
            srv = await start_server(server_config(self.tmp_path))
            for name in USERS:
                await srv.engine.add_user(name, PASSWORD, name.title())
            return srv

        self.server = self.call(go())
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.http_port}"

    def stop_listening(self) -> None:
        """Close both listeners and every open link (the server "goes away")."""
        assert self.server is not None
        srv = self.server

        async def go() -> None:
            for s in srv._long_servers:
                s.close()
            for link in srv.long_links():
                link.close()
            assert srv._runner is not None
            for site in list(srv._runner.sites):
                await site.stop()

        self.call(go())

    def resume_listening(self) -> None:
        assert self.server is not None
        srv = self.server

        async def go() -> None:
            from aiohttp import web

            from wxnet.server.longlink import LongLink

            srv._long_servers = [
                await srv.loop.create_server(
                    lambda: LongLink(srv), "127.0.0.1", srv.long_port, reuse_address=True
                )
            ]
            assert srv._runner is not None
            await web.TCPSite(srv._runner, "127.0.0.1", srv.http_port, reuse_address=True).start()

        self.call(go())

    def stop(self) -> None:
        if self.server is not None:
            self.call(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(WAIT)
        self.loop.close()


@pytest.fixture
def server_thread(tmp_path: Path) -> Iterator[ServerThread]:
    st = ServerThread(tmp_path).start()
    try:
        yield st
    finally:
        st.stop()


def call(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), IO(out, err))
    return code, out.getvalue(), err.getvalue()
