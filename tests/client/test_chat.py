"""``wxnet chat`` driven by Textual's own test pilot, against the real server."""

from __future__ import annotations

from typing import Any

from tests.client.conftest import FAST, Clients, history_ids, until
from wxnet.cli.chat_cmd import build_app
from wxnet.client.sdk import ClientConfig
from wxnet.server.app import Server


def log_text(app: Any) -> str:
    log = app.query_one("#messages")
    return "\n".join(line.text for line in log.lines)


async def test_chat_sends_shows_and_sends_read_receipts(server: Server, clients: Clients) -> None:
    cfg = ClientConfig(server_url=f"http://127.0.0.1:{server.http_port}").replace(**FAST)
    alice = await clients.new("alice", config=cfg)
    bob = await clients.new("bob", config=cfg)
    await alice.add_contact("bob")
    first = await alice.send_text("bob", "before the chat opened")
    await until(bob, lambda: history_ids(bob, "alice") == [first.msg_id], "bob to get it")

    app = build_app(bob, None)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        # The conversation list shows alice with one unread message; opening it reads it.
        assert "alice (1)" in str(app.query_one("#convs").children[0].query_one("Static").render())
        await pilot.press("tab")  # focus moves; open through the command line instead
        app.query_one("#input").focus()
        for ch in "/open alice":
            await pilot.press("space" if ch == " " else ch)
        await pilot.press("enter")
        await pilot.pause()
        assert "alice: before the chat opened" in log_text(app)

        def read() -> bool:
            m = alice.store.message(first.msg_id)
            return m is not None and m.status >= 4

        await until(alice, read, "the read receipt from opening the conversation")

        def label() -> str:
            return str(app.query_one("#convs").children[0].query_one("Static").render())

        # A message arriving in the open conversation is on screen: no unread badge, and
        # its read receipt goes out too.
        second = await alice.send_text("bob", "while it is open")
        await until(bob, lambda: second.msg_id in history_ids(bob, "alice"), "the second one")

        def second_read() -> bool:
            m = alice.store.message(second.msg_id)
            return m is not None and m.status >= 4

        await until(alice, second_read, "the read receipt of a message shown as it arrived")
        await pilot.pause()
        assert label() == "alice", label()
        assert bob.store.conversations()[0][1] == 0

        for ch in "hi":
            await pilot.press(ch)
        await pilot.press("enter")
        await until(alice, lambda: len(history_ids(alice, "bob")) == 3, "alice to get it")
        await until(bob, lambda: len(history_ids(bob, "alice")) == 3, "bob's own copy")
        await pilot.pause()
        assert "bob: hi" in log_text(app)

        # A failed message shows the red exclamation mark (S23).
        row = bob.store.queue("alice", 1, "stuck")
        bob.store.mark_failed(row.client_msg_id, "test")
        app.show("alice")
        assert f"(!) bob: stuck  [{row.client_msg_id}]" in log_text(app)
        for ch in "/quit":
            await pilot.press(ch)
        await pilot.press("enter")
    assert app.return_value == 0
