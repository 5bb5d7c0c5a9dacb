"""The Textual app of ``wxnet chat`` (:mod:`wxnet.cli.chat_cmd` imports it only when
the command runs, so other commands never load Textual)."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Input, ListItem, ListView, RichLog, Static

from wxnet.cli.client_common import TYPE_NAMES
from wxnet.client.events import ItemReceived, SendStateChanged
from wxnet.client.sdk import MSG_TEXT, Client

__all__ = ["ChatApp"]


class ChatApp(App[int]):
    CSS = """
    #left { width: 30; border-right: solid $primary; }
    #title { height: 1; background: $primary; color: $text; }
    #status { height: 1; }
    """
    BINDINGS: ClassVar[list[Any]] = [Binding("ctrl+q", "quit", "quit")]

    def __init__(self, client: Client, open_first: str | None = None) -> None:
        super().__init__()
        self.client = client
        self.current: str | None = open_first
        self.talkers: list[str] = []
        self._events = client.subscribe()

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(id="left"):
                yield Static("conversations", id="convtitle")
                yield ListView(id="convs")
            with Vertical():
                yield Static("", id="title")
                yield RichLog(id="messages", wrap=True, markup=False)
                yield Static("", id="status")
                yield Input(placeholder="message, or /open NAME, /resend ID, /quit", id="input")
        yield Footer()

    async def on_mount(self) -> None:
        self.refresh_convs()
        if self.current:
            await self.open(self.current)
        self.set_status()
        self.run_worker(self.pump(), exclusive=False)
        self.query_one("#input", Input).focus()

    async def pump(self) -> None:
        while True:
            ev = await self._events.get()
            if isinstance(ev, ItemReceived) and self.current and self._unread(self.current):
                self.run_worker(self.read_open(self.current), exclusive=False)
            if isinstance(ev, ItemReceived | SendStateChanged):
                self.refresh_convs()
                if self.current:
                    self.show(self.current)
            self.set_status(ev.reason if isinstance(ev, SendStateChanged) else "")

    def set_status(self, extra: str = "") -> None:
        c = self.client
        poor = " - the network is poor" if c.poor.quality.value == "poor" else ""
        where = str(c.long.address) if c.long else str(c.short_in_use or "-")
        text = f"{c.me} | link: {c.link_kind} {where}{poor}"
        self.query_one("#status", Static).update(text + (f" | {extra}" if extra else ""))

    def _unread(self, talker: str) -> int:
        return next((u for t, u, _ in self.client.store.conversations() if t == talker), 0)

    async def read_open(self, talker: str) -> None:
        """A message arrived in the open conversation: read it (receipt, S22)."""
        try:
            await self.client.mark_read(talker)
        except Exception as exc:  # a receipt that cannot go now is not fatal here
            self.set_status(f"read receipt not sent: {exc}")
        self.refresh_convs()

    def refresh_convs(self) -> None:
        store = self.client.store
        convs = {t: u for t, u, _ in store.conversations()}
        talkers = list(convs)
        for c in store.contacts():
            if c.user_name not in convs and c.user_name != self.client.me:
                talkers.append(c.user_name)
        lv = self.query_one("#convs", ListView)
        lv.clear()
        for t in talkers:
            # The open conversation is being read: no badge, even before read_open ran.
            unread = 0 if t == self.current else convs.get(t, 0)
            label = f"{t} ({unread})" if unread else t
            lv.append(ListItem(Static(label)))
        self.talkers = talkers

    async def on_list_view_selected(self, event: ListView.Selected) -> None:
        idx = event.list_view.index
        if idx is not None and 0 <= idx < len(self.talkers):
            await self.open(self.talkers[idx])

    async def open(self, talker: str) -> None:
        self.current = talker
        self.query_one("#title", Static).update(f" {talker}")
        self.show(talker)
        try:
            await self.client.mark_read(talker)
        except Exception as exc:  # a receipt that cannot go now is not fatal here
            self.set_status(f"read receipt not sent: {exc}")
        self.refresh_convs()

    def show(self, talker: str) -> None:
        log = self.query_one("#messages", RichLog)
        log.clear()
        me = self.client.me
        for m in self.client.store.history(talker, 200):
            who = m.real_from or m.from_user
            if m.revoked:
                body = "(revoked)"
            elif m.msg_type == MSG_TEXT:
                body = m.content
            else:
                body = f"[{TYPE_NAMES.get(m.msg_type, m.msg_type)}]"
            read = " ✓✓" if who == me and m.status >= 4 else ""
            log.write(Text(f"{who}: {body}{read}"))
        for row in self.client.store.outbox():
            if row.to_user != talker:
                continue
            mark = "(!)" if row.state == "failed" else "..."
            kind = (
                row.content
                if row.msg_type == MSG_TEXT
                else f"[{TYPE_NAMES.get(row.msg_type, row.msg_type)}]"
            )
            log.write(Text(f"{mark} {me}: {kind}  [{row.client_msg_id}]"))

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        event.input.value = ""
        if not text:
            return
        if text.startswith("/"):
            cmd, _, arg = text[1:].partition(" ")
            if cmd == "quit":
                self.exit(0)
            elif cmd == "open" and arg:
                await self.open(arg.strip())
            elif cmd == "resend" and arg:
                self.run_worker(self.client.resend(arg.strip()))
            else:
                self.set_status(f"unknown command: {text}")
            return
        if not self.current:
            self.set_status("open a conversation first (/open NAME)")
            return
        self.run_worker(self.client.send_text(self.current, text))
        await asyncio.sleep(0)
        self.show(self.current)
