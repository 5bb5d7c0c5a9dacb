"""Our web page in headless Chromium (Debian's, driven by Playwright): log in by QR
approval, receive from a phone, send text and an image, see a reply arrive, mark a failed
send and resend it. Leaves artifacts/web-client.png."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, Page

from tests.web.clients import ROOT
from tests.web.conftest import Mobile, base_url, png_bytes, web_api
from wxnet.proto import web as wp
from wxnet.server.app import Server

TIMEOUT_MS = 20_000
#: An image element's promise of having loaded (resolves false if it fails to).
LOADED = (
    "img => img.complete ? img.naturalWidth > 0 : new Promise(r => {"
    " img.addEventListener('load', () => r(img.naturalWidth > 0));"
    " img.addEventListener('error', () => r(false)); })"
)


async def login(page: Page, server: Server, phone: Mobile) -> None:
    await page.goto(base_url(server) + "/")
    uuid_el = page.locator("#uuid")
    await uuid_el.wait_for(state="visible", timeout=TIMEOUT_MS)
    # The page runs under its Content-Security-Policy (no eval), so the waits are on
    # selectors and element functions, not on wait_for_function's evaluated strings.
    await page.locator("body[data-uuid]").wait_for(state="attached", timeout=TIMEOUT_MS)
    uuid = await page.get_attribute("body", "data-uuid")
    assert uuid
    assert await page.locator("#qr").evaluate(LOADED)
    assert await phone.scan(uuid) == 0
    await page.locator("body[data-state='ready']").wait_for(state="attached", timeout=TIMEOUT_MS)


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

    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    await page.screenshot(path=str(artifacts / "web-client.png"))

    await page.click("#logout")
    await page.locator("body[data-state='loggedout']").wait_for(
        state="attached", timeout=TIMEOUT_MS
    )
    assert not web_api(server).sessions.of_account(alice.uin)
    assert errors == []
