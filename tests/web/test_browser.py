"""Our web page in headless Chromium (Debian's, driven by Playwright; one browser for the
module): log in by QR approval, receive from a phone, send text and an image, see a reply
arrive, mark a failed send and resend it; history from the server's log when a
conversation opens (paged), times, unread badges, avatars, recall lines, a fresh QR code
after logout, the favicon. Leaves artifacts/web-*.png; with ``WXNET_DOC_SCREENSHOTS=1``
it also writes the screenshots docs/web.md shows (docs/web-*.png)."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, Page

from tests.web.clients import ROOT
from tests.web.conftest import Mobile, base_url, png_bytes, web_api
from wxnet.proto import web as wp
from wxnet.proto import wxnet_pb2 as pb
from wxnet.server.app import Server, start_server
from wxnet.server.config import ServerConfig

TIMEOUT_MS = 20_000
BOB, CAROL = wp.web_user_name("bob"), wp.web_user_name("carol")
#: Messages bob sent before the page logs in: more than the page's first load (100).
EARLIER = 110
#: An image element's promise of having loaded (resolves false if it fails to).
LOADED = (
    "img => img.complete ? img.naturalWidth > 0 : new Promise(r => {"
    " img.addEventListener('load', () => r(img.naturalWidth > 0));"
    " img.addEventListener('error', () => r(false)); })"
)


async def login(page: Page, server: Server, phone: Mobile) -> str:
    await page.goto(base_url(server) + "/")
    return await scan_in(page, phone)


async def scan_in(page: Page, phone: Mobile, old_uuid: str = "") -> str:
    """Scan the QR code the page shows (a new one, if ``old_uuid`` is given) and wait
    until the page is logged in; returns the code's uuid."""
    await page.locator("#uuid").wait_for(state="visible", timeout=TIMEOUT_MS)
    # The page runs under its Content-Security-Policy (no eval), so the waits are on
    # selectors and element functions, not on wait_for_function's evaluated strings.
    fresh = f'body[data-uuid]:not([data-uuid="{old_uuid}"])' if old_uuid else "body[data-uuid]"
    await page.locator(fresh).wait_for(state="attached", timeout=TIMEOUT_MS)
    uuid = await page.get_attribute("body", "data-uuid")
    assert uuid and uuid != old_uuid
    assert await page.locator("#qr").evaluate(LOADED)
    qr = await page.get_attribute("#qr", "src")
    assert qr is not None and uuid in qr
    assert await phone.scan(uuid) == 0
    await page.locator("body[data-state='ready']").wait_for(state="attached", timeout=TIMEOUT_MS)
    return uuid


def screenshot_paths(name: str) -> list[Path]:
    """Where a screenshot goes: artifacts/, and docs/ when asked to refresh those."""
    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    out = [artifacts / f"{name}.png"]
    if os.environ.get("WXNET_DOC_SCREENSHOTS") == "1":
        out.append(ROOT / "docs" / f"{name}.png")
    return out


async def screenshot(page: Page, name: str) -> None:
    for path in screenshot_paths(name):
        await page.screenshot(path=str(path))


async def test_web_page(
    browser: Browser, server: Server, alice: Mobile, bob: Mobile, tmp_path: Path
) -> None:
    room = await alice.room("team", ["bob", "carol"])
    page = await browser.new_page(viewport={"width": 1000, "height": 640})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(  # what the page's CSP blocks shows as a console error "Refused to ..."
        "console", lambda m: errors.append(m.text) if "Refused to" in m.text else None
    )
    await login(page, server, alice)
    assert await page.locator("#me-name").inner_text() == "Alice"
    bob_web = wp.web_user_name("bob")
    chat = page.locator(f'#chats li[data-user="{bob_web}"]')
    await chat.wait_for(timeout=TIMEOUT_MS)

    # receive: text and an image from bob's phone appear live
    await bob.send("alice", "hi from <phone>")
    await chat.locator(".last", has_text="hi from <phone>").wait_for(timeout=TIMEOUT_MS)
    await chat.click()
    await page.locator(".msg .bubble", has_text="hi from <phone>").wait_for(timeout=TIMEOUT_MS)
    await bob.send_image("alice", png_bytes((0, 120, 255), 200))
    img = page.locator(".msg:not(.mine) .bubble img")
    await img.wait_for(timeout=TIMEOUT_MS)
    assert await img.evaluate(LOADED)

    # a file and a video from bob's phone: bubbles with working downloads
    doc = b"%PDF-1.4 the plan\n" + bytes(range(256)) * 12
    file_id = await bob.send_file("alice", "plan.pdf", doc)
    file_bubble = page.locator(f'.msg[data-msgid="{file_id}"] .bubble.file')
    await file_bubble.wait_for(timeout=TIMEOUT_MS)
    assert await file_bubble.locator(".file-name").inner_text() == "plan.pdf"
    assert await file_bubble.locator(".file-size").inner_text() == "3.0 KB"
    async with page.expect_download(timeout=TIMEOUT_MS) as dl_info:
        await file_bubble.locator("a.download").click()
    download = await dl_info.value
    assert download.suggested_filename == "plan.pdf"
    await download.save_as(tmp_path / "got.pdf")
    assert (tmp_path / "got.pdf").read_bytes() == doc
    clip = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20
    video_id = await bob.send_video("alice", clip, png_bytes((90, 90, 200), 64))
    video = page.locator(f'.msg[data-msgid="{video_id}"] .bubble.video video')
    await video.wait_for(timeout=TIMEOUT_MS)
    src = await video.get_attribute("src")
    poster = await video.get_attribute("poster")
    assert src and poster and f"msgid={video_id}" in src
    part = await page.request.get(base_url(server) + src, headers={"Range": "bytes=0-99"})
    assert part.status == 206 and await part.body() == clip[:100]
    thumb = await page.request.get(base_url(server) + poster)
    assert thumb.status == 200 and len(await thumb.body()) > 0
    link = page.locator(f'.msg[data-msgid="{video_id}"] a.download')
    assert await link.get_attribute("href") == src
    await video.evaluate("v => v.scrollIntoView({block: 'end'})")
    await screenshot(page, "web-files")

    # send text: bob's phone gets it
    await page.fill("#text", "hello from the browser")
    await page.press("#text", "Enter")
    got = await bob.wait_msg(lambda m: m.content == "hello from the browser")
    assert got.from_user == "alice"
    await page.locator(f'.msg.mine[data-msgid="{got.msg_id}"]').wait_for(timeout=TIMEOUT_MS)

    # send an image
    path = tmp_path / "pic.png"
    path.write_bytes(png_bytes((255, 128, 0), 320))
    await page.set_input_files("#image", str(path))
    got = await bob.wait_msg(lambda m: m.msg_type == 3 and m.from_user == "alice")
    assert got.media_len == path.stat().st_size

    # bob replies; it arrives
    await bob.send("alice", "reply from bob")
    await page.locator(".msg .bubble", has_text="reply from bob").wait_for(timeout=TIMEOUT_MS)

    # a group message: the room's conversation names the member who wrote it
    room_web = wp.web_chatroom_name(room)
    await bob.send(room, "hello team")
    room_chat = page.locator(f'#chats li[data-user="{room_web}"]')
    await room_chat.locator(".last", has_text="hello team").wait_for(timeout=TIMEOUT_MS)
    await room_chat.click()
    msg = page.locator(".msg", has_text="hello team")
    await msg.locator(".who", has_text="Bob").wait_for(timeout=TIMEOUT_MS)
    await page.fill("#text", "hi team")
    await page.press("#text", "Enter")
    got = await bob.wait_msg(lambda m: m.content == "hi team")
    assert got.to_user == room
    await chat.click()

    # a send that fails is marked, and resending (same ClientMsgId) delivers it once
    await page.route("**/webwxsendmsg*", lambda route: route.abort())
    await page.fill("#text", "try again")
    await page.press("#text", "Enter")
    failed = page.locator(".msg.failed .state")
    await failed.wait_for(timeout=TIMEOUT_MS)
    await page.unroute("**/webwxsendmsg*")
    await failed.click()
    got = await bob.wait_msg(lambda m: m.content == "try again")
    await page.locator(f'.msg.mine[data-msgid="{got.msg_id}"]').wait_for(timeout=TIMEOUT_MS)

    await screenshot(page, "web-client")

    await page.click("#logout")
    await page.locator("body[data-state='loggedout']").wait_for(
        state="attached", timeout=TIMEOUT_MS
    )
    assert not web_api(server).sessions.of_account(alice.uin)
    assert errors == []


async def revoke(phone: Mobile, msg_id: int) -> None:
    resp = await phone.call("revokemsg", pb.RevokeMsgRequest(msg_id=msg_id), pb.RevokeMsgResponse)
    assert resp.base.ret == 0, resp.base.err_msg


class ShiftedClock:
    """The server's wall clock, moved by ``offset`` seconds (messages "sent earlier")."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def __call__(self) -> float:
        return time.time() + self.offset


class TestHistory:
    """History, times, unread badges, recalls and relogin, with messages sent "earlier"
    (the server on a clock moved back, then forward to now)."""

    @pytest.fixture
    def clock(self) -> ShiftedClock:
        return ShiftedClock(-26 * 3600)  # yesterday, until the test moves it

    @pytest.fixture
    async def server(self, web_config: ServerConfig, clock: ShiftedClock) -> AsyncIterator[Server]:
        """As tests/web/conftest.py's, on the shifted clock."""
        srv = await start_server(web_config, clock)
        for name in ("alice", "bob", "carol"):
            await srv.engine.add_user(name, "secret1", name.title())
        try:
            yield srv
        finally:
            await srv.close()

    async def test_history_times_unread_recall_and_relogin(
        self,
        browser: Browser,
        server: Server,
        clock: ShiftedClock,
        alice: Mobile,
        bob: Mobile,
        http: aiohttp.ClientSession,
    ) -> None:
        carol = await Mobile(http, base_url(server), "carol").login()
        # Before the browser logs in: a long conversation with bob yesterday (more than one
        # page), alice's reply from her phone two hours ago, then two unread from bob (one
        # more recalled) and an image; two from carol.
        for i in range(EARLIER):
            await bob.send("alice", f"earlier {i}")
        clock.offset = -2 * 3600
        await alice.send("bob", "phone reply")
        await bob.send("alice", "are you there?")
        clock.offset = -40 * 60
        oops = await bob.send("alice", "wrong chat, sorry")
        await revoke(bob, oops)
        await bob.send_image("alice", png_bytes((40, 160, 90), 240))
        await bob.send("alice", "see you at 6")
        clock.offset = -10 * 60
        await carol.send("alice", "lunch?")
        await carol.send("alice", "12:30 at the usual place")
        clock.offset = 0

        page = await browser.new_page(
            viewport={"width": 1000, "height": 640}, timezone_id="UTC", locale="en-GB"
        )
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if "Refused to" in m.text else None)
        await page.goto(base_url(server) + "/")
        icon = await page.get_attribute('link[rel="icon"]', "href")
        assert icon is not None
        resp = await page.request.get(base_url(server) + icon)
        assert resp.status == 200 and resp.headers["content-type"].startswith("image/svg+xml")
        assert (await resp.body()).startswith(b"<svg")
        await screenshot(page, "web-login")
        first_uuid = await scan_in(page, alice)

        # the list: newest conversation first, last message and its time, unread badges
        bob_li = page.locator(f'#chats li[data-user="{BOB}"]')
        carol_li = page.locator(f'#chats li[data-user="{CAROL}"]')
        await carol_li.locator(".badge", has_text="2").wait_for(timeout=TIMEOUT_MS)
        # after alice's reply: two texts and the image, not the recalled one
        assert await bob_li.locator(".badge").inner_text() == "3"
        order = await page.locator("#chats li").evaluate_all("els => els.map(e => e.dataset.user)")
        assert order[:2] == [CAROL, BOB]
        assert await carol_li.locator(".last").inner_text() == "12:30 at the usual place"
        assert await carol_li.locator("time.when").get_attribute("datetime")
        avatars = page.locator("#chats li .avatar img")
        assert await avatars.count() >= 2
        for i in range(2):
            assert await avatars.nth(i).evaluate(LOADED)
        assert await page.locator("#me-avatar img").evaluate(LOADED)
        assert await bob_li.locator(".avatar .initial").inner_text() == "B"

        # opening bob's chat: the newest page of history, times, the recall line
        await bob_li.click()
        await page.locator("#messages[data-history='more']").wait_for(timeout=TIMEOUT_MS)
        await page.locator(".msg .bubble", has_text="see you at 6").wait_for(timeout=TIMEOUT_MS)
        assert await bob_li.locator(".badge").count() == 0
        recalled = page.locator(f'.msg.recalled[data-msgid="{oops}"]')
        await recalled.wait_for(timeout=TIMEOUT_MS)
        assert "wrong chat" not in await page.locator("#messages").inner_text()
        line = await recalled.inner_text()
        assert "recalled" in line or "撤回了一条消息" in line
        mine = page.locator(".msg.mine .bubble", has_text="phone reply")
        await mine.wait_for(timeout=TIMEOUT_MS)
        assert await page.locator(".msg:not(.mine) .bubble img").evaluate(LOADED)
        stamps = page.locator("#messages time.msg-time")
        assert await stamps.count() == 3  # yesterday (the newest of them), 2 h and 40 min ago
        for i, ago in enumerate((26 * 3600, 2 * 3600, 40 * 60)):
            when = await stamps.nth(i).get_attribute("datetime")
            assert when is not None
            shown = datetime.fromisoformat(when.replace("Z", "+00:00"))
            assert abs(shown.timestamp() - (time.time() - ago)) < 120
            assert (await stamps.nth(i).inner_text()).endswith(shown.strftime("%H:%M"))
        assert await page.get_by_text("earlier 0", exact=True).count() == 0  # not loaded yet
        await screenshot(page, "web-page")

        # earlier messages, a page at a time, back to the start of the conversation
        for _ in range(EARLIER // 30 + 1):
            if await page.locator("#messages[data-history='all']").count():
                break
            cursor = await page.get_attribute("#messages", "data-next")
            await page.click("#more")
            moved = f'#messages:not([data-next="{cursor}"])'
            await page.locator(moved).wait_for(state="attached", timeout=TIMEOUT_MS)
        await page.locator("#messages[data-history='all']").wait_for(timeout=TIMEOUT_MS)
        texts = [t for t in await page.locator(".msg:not(.system) .bubble").all_inner_texts() if t]
        assert texts[0] == "earlier 0" and texts[-1] == "see you at 6"
        assert len(texts) == len(set(texts)) == EARLIER + 3  # each once
        assert await page.locator("#messages time.msg-time").count() == 3  # yesterday, 2 h, 40 min

        # live: carol's new message raises her badge; a live recall replaces bob's message
        await carol.send("alice", "running late")
        await carol_li.locator(".badge", has_text="3").wait_for(timeout=TIMEOUT_MS)
        late = await bob.send("alice", "forget what I said")
        bubble = page.locator(f'.msg[data-msgid="{late}"] .bubble')
        await bubble.wait_for(timeout=TIMEOUT_MS)
        await revoke(bob, late)
        await page.locator(f'.msg.recalled[data-msgid="{late}"]').wait_for(timeout=TIMEOUT_MS)
        assert await page.locator(".msg .bubble", has_text="forget what I said").count() == 0
        await carol_li.click()
        await page.locator(".msg .bubble", has_text="running late").wait_for(timeout=TIMEOUT_MS)
        assert await carol_li.locator(".badge").count() == 0

        # the read marks are on the server: a new page load shows no badges
        await page.reload()
        await scan_in(page, alice, old_uuid=first_uuid)
        await bob_li.wait_for(timeout=TIMEOUT_MS)
        assert await page.locator("#chats .badge").count() == 0

        # logging out shows a new QR code (the used one is gone), and it logs in again
        old = await page.get_attribute("body", "data-uuid")
        assert old
        await page.click("#logout")
        uuid = await scan_in(page, alice, old_uuid=old)
        assert uuid != old
        await bob_li.wait_for(timeout=TIMEOUT_MS)
        assert errors == []
