"""One headless Chromium (Debian's) per test module, driven by Playwright.

The browser process is started once per module by the ``chromium`` fixture (a plain
process with a DevTools endpoint, so it belongs to no event loop); each test connects
to it over CDP in its own loop with :func:`connect` and gets a fresh context, which
costs milliseconds where launching costs about a second. Used by the web page, the
analyser's HTML report and the gate dashboard tests.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]
#: Bound on Chromium's start (it prints its DevTools address within a second or two).
START_TIMEOUT = 60.0
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


@dataclass
class Chromium:
    """A running Chromium: its DevTools websocket address."""

    ws: str
    proc: subprocess.Popen[bytes]
    reader: threading.Thread

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(10)  # at the end of stderr once the process is gone
        assert self.proc.stderr is not None
        self.proc.stderr.close()


def _start(profile: str) -> Chromium:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: `make sysdeps` installs Debian's chromium")
    proc = subprocess.Popen(
        [CHROMIUM, *ARGS, f"--user-data-dir={profile}", "about:blank"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    found: list[str] = []
    seen = threading.Event()

    def read() -> None:  # keeps draining stderr so that Chromium never blocks on it
        assert proc.stderr is not None
        for raw in proc.stderr:
            m = _LISTENING.search(raw.decode(errors="replace"))
            if m and not found:
                found.append(m.group(1))
                seen.set()
        seen.set()  # exited

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not seen.wait(START_TIMEOUT) or not found:
        Chromium("", proc, reader).stop()
        pytest.fail(f"chromium printed no DevTools address (exit {proc.poll()})")
    return Chromium(found[0], proc, reader)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    """Chromium for the whole module; killed at its end."""
    with tempfile.TemporaryDirectory(prefix="wxnet-chromium-") as profile:
        c = _start(profile)
        try:
            yield c
        finally:
            c.stop()


@asynccontextmanager
async def connect(c: Chromium) -> AsyncIterator[Browser]:
    """The module's Chromium as a Playwright :class:`Browser` for one test; the
    contexts (pages) it creates are closed when the block ends."""
    async with async_playwright() as p:
        b = await p.chromium.connect_over_cdp(c.ws)
        try:
            yield b
        finally:
            await b.close()  # closes the contexts this connection made, and disconnects


@pytest.fixture
async def browser(chromium: Chromium) -> AsyncIterator[Browser]:
    """A connection to the module's Chromium (new pages open in a fresh context)."""
    async with connect(chromium) as b:
        yield b
