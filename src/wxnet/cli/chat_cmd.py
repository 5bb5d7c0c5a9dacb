"""``wxnet chat``: an interactive terminal chat on Textual.

Conversation list on the left (unread counts), the open conversation's messages on the
right (``(!)`` marks a failed message, ``...`` one still sending), an input line at the
bottom. Opening a conversation sends its read receipt (S22), and so does a message that
arrives in the open conversation: it is on screen, so it never counts as unread. Lines
starting with ``/``
are commands: ``/open NAME``, ``/resend ID``, ``/quit``.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import TYPE_CHECKING, Any

from wxnet.cli.common import IO, ExitStatus

if TYPE_CHECKING:
    from wxnet.client.sdk import Client

__all__ = ["build_app", "register"]


def register(sub: Any) -> None:
    p = sub.add_parser("chat", help="interactive terminal chat (conversations, messages, input)")
    p.add_argument(
        "--profile",
        metavar="DIR",
        default=None,
        help="profile directory (default: $WXNET_PROFILE or ~/.wxnet)",
    )
    p.add_argument("--to", default=None, help="open this conversation first")
    p.set_defaults(func=cmd_chat)


def build_app(client: Client, open_first: str | None = None) -> Any:
    """The Textual app for ``client`` (already started). Tests drive it with
    ``app.run_test()``."""
    from wxnet.cli.chat_app import ChatApp

    return ChatApp(client, open_first)


def cmd_chat(args: argparse.Namespace, io: IO) -> int:
    from wxnet.cli.client_cmd import open_store, run_async
    from wxnet.client.errors import NotLoggedIn
    from wxnet.client.sdk import Client

    async def go() -> int:
        store = open_store(args)
        client = Client(store)
        try:
            if client.session is None:
                raise NotLoggedIn("this profile is not logged in: run `wxnet login` first")
            await client.start(wait_long=0)
            app = build_app(client, args.to)
            result = await app.run_async()
            return int(result or ExitStatus.OK)
        finally:
            with contextlib.suppress(Exception):
                await client.close()
            store.close()

    return run_async(io, go())
