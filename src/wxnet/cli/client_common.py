"""What the client commands share (:mod:`wxnet.cli.client_cmd`, :mod:`wxnet.cli.client_msgs`):
argument types, the profile and client set-up, error mapping, and how rows are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from wxnet._compat import wait_for
from wxnet.cli.common import IO, ExitStatus, UsageError
from wxnet.client.errors import ClientError, NotLoggedIn, SendFailed, TransportError
from wxnet.client.resolver import parse_nameserver
from wxnet.client.sdk import (
    MSG_FILE,
    MSG_IMAGE,
    MSG_TEXT,
    MSG_VIDEO,
    MSG_VOICE,
    Client,
)
from wxnet.client.store import MessageRow, OutboxRow, ProfileError, ProfileStore
from wxnet.proto import mediaxml
from wxnet.proto.errors import MMError

log = logging.getLogger("wxnet.client")
#: Seconds a command waits for the client to close before it exits anyway.
CLOSE_LIMIT = 15.0

TYPE_NAMES: dict[int, str] = {
    MSG_TEXT: "text",
    MSG_IMAGE: "image",
    MSG_VOICE: "voice",
    MSG_VIDEO: "video",
    MSG_FILE: "file",
    10000: "system",
}


def default_profile() -> str:
    return os.environ.get("WXNET_PROFILE") or str(Path.home() / ".wxnet")


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _nameserver(text: str) -> tuple[str, int]:
    try:
        return parse_nameserver(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected IP or IP:PORT, got {text!r}") from None


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _common(p: argparse.ArgumentParser, json_flag: bool = False) -> None:
    p.add_argument(
        "--profile",
        metavar="DIR",
        default=None,
        help="profile directory (default: $WXNET_PROFILE or ~/.wxnet)",
    )
    if json_flag:
        p.add_argument("--json", action="store_true", help="print JSON (one object a line)")


def open_store(args: argparse.Namespace) -> ProfileStore:
    try:
        return ProfileStore.open(args.profile or default_profile())
    except ProfileError as exc:
        raise UsageError(str(exc)) from None


def run_async(io: IO, coro: Coroutine[Any, Any, int]) -> int:
    """Run one command's coroutine; map the client's errors to messages and statuses."""
    try:
        return asyncio.run(coro)
    except NotLoggedIn as exc:
        io.error(str(exc))
    except SendFailed as exc:
        io.error(str(exc))
    except MMError as exc:
        io.error(f"the server said no: {exc}")
    except TransportError as exc:
        io.error(f"server unreachable: {exc}")
    except ClientError as exc:
        io.error(str(exc))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return ExitStatus.ERROR


async def with_client(
    args: argparse.Namespace,
    job: Callable[[Client], Awaitable[int]],
    wait_long: float = 2.0,
    background: bool = True,
) -> int:
    store = open_store(args)
    try:
        client = Client(store)
        if client.session is None:
            raise NotLoggedIn("this profile is not logged in: run `wxnet login` first")
        try:
            await client.start(background=background, wait_long=wait_long)
            return await job(client)
        finally:
            # The job's result is already saved in the profile; a close that cannot finish
            # (a peer that never answers) must not hold the command.
            try:
                await wait_for(client.close(), CLOSE_LIMIT)
            except TimeoutError:
                log.warning("closing the client took over %s s; gave up", CLOSE_LIMIT)
    finally:
        store.close()


def _row_text(row: OutboxRow) -> str:
    kind = TYPE_NAMES.get(row.msg_type, str(row.msg_type))
    what = row.content if row.msg_type == MSG_TEXT else Path(row.media_path).name
    mark = {"failed": "(!)", "sending": "...", "sent": "ok"}.get(row.state, row.state)
    extra = f"  {row.error}" if row.error else ""
    return f"{mark:4} {row.client_msg_id}  to {row.to_user}  {kind}: {what}{extra}"


def _msg_text(m: MessageRow, me: str) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.create_time))
    who = m.real_from or m.from_user
    if m.revoked:
        body = "(revoked)"
    elif m.msg_type == MSG_IMAGE:
        body = f"[image {m.media_len} bytes{', thumbnail' if m.has_thumb else ''}]"
    elif m.msg_type == MSG_VOICE:
        body = f"[voice {m.voice_length} ms, {m.media_len} bytes]"
    elif m.msg_type == MSG_VIDEO:
        body = f"[video {m.media_len} bytes{', thumbnail' if m.has_thumb else ''}]"
    elif m.msg_type == MSG_FILE and (f := mediaxml.parse_file(m.content)) is not None:
        body = f"[file {f.name}, {f.size} bytes]"
    else:
        body = m.content
    read = " (read)" if who == me and m.status >= 4 else ""
    return f"{when}  {who}: {body}{read}"


def _print_send_result(io: IO, args: argparse.Namespace, row: OutboxRow) -> int:
    if args.json:
        io.json(row.to_json())
    elif row.state == "sent":
        io.print(f"sent {row.client_msg_id} (msg id {row.msg_id})")
    if row.state == "sent":
        return ExitStatus.OK
    cid = row.client_msg_id
    if row.refused:
        # The server answered, and said no: sending it again the same way will not help.
        io.error(
            f"the server refused message {cid} to {row.to_user}: {row.error} "
            f"(`wxnet outbox drop {cid}` discards it)"
        )
    else:  # no answer: the network's fault, the case S13 is about
        io.error(
            f"message {cid} to {row.to_user} failed: {row.error} "
            f"(the network is poor? `wxnet resend {cid}` sends it again)"
        )
    return ExitStatus.ERROR


def _note(io: IO) -> Callable[[str], None]:
    def write(text: str) -> None:
        io.err.write(text + "\n")
        io.err.flush()

    return write


def _probe_then(job: Callable[[Client], Awaitable[int]]) -> Callable[[Client], Awaitable[int]]:
    async def probe(client: Client) -> int:
        # Give the first long-link round its full connect budget; without a long link,
        # ask over the short link, so that the report says whether that one answers.
        if client.config.use_long_link and client.long is None:
            await client.wait_long_link(client.config.connect_timeout)
        if client.long is None:
            try:
                await client.sync()
            except (TransportError, MMError) as exc:
                client.links.note_error(str(exc))
        return await job(client)

    return probe
