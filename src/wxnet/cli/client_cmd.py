"""The client commands (issue 3): ``wxnet login``, ``logout``, ``contacts``,
``contact add|requests|accept``, ``group create|add|remove``, ``send``, ``send-image``,
``send-voice``, ``listen``, ``outbox``, ``resend``, ``history``, ``revoke``, ``status``
(``chat`` is in chat_cmd).

Every command takes ``--profile DIR`` (default ``$WXNET_PROFILE`` or ``~/.wxnet``), where
the session, SyncKey, outbox and history live; commands whose output is data take
``--json``. A server that cannot be reached or says no is an error message and exit
status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from wxnet._compat import wait_for
from wxnet.cli import mediasave
from wxnet.cli.common import IO, ExitStatus, UsageError
from wxnet.client.errors import ClientError, NotLoggedIn, SendFailed, TransportError
from wxnet.client.events import (
    ClientEvent,
    ItemReceived,
    LinkChanged,
    NetworkChanged,
    SendStateChanged,
    item_to_json,
)
from wxnet.client.resolver import parse_nameserver
from wxnet.client.sdk import (
    MSG_FILE,
    MSG_IMAGE,
    MSG_TEXT,
    MSG_VIDEO,
    MSG_VOICE,
    Client,
    ClientConfig,
    parse_server_url,
)
from wxnet.client.sending import NetworkQuality
from wxnet.client.store import MessageRow, OutboxRow, ProfileError, ProfileStore
from wxnet.proto import mediaxml
from wxnet.proto.errors import MMError

log = logging.getLogger("wxnet.client")
#: Seconds a command waits for the client to close before it exits anyway.
CLOSE_LIMIT = 15.0

__all__ = ["register"]

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


def _save_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--save",
        metavar="DIR",
        type=Path,
        default=None,
        help="download the media of the messages shown (images, voice, videos, files) into DIR",
    )


def register(sub: Any) -> None:
    p = sub.add_parser("login", help="log in to a wxnet server and save the session")
    _common(p, json_flag=True)
    p.add_argument(
        "--server",
        metavar="URL",
        default="",
        help="short-link base, e.g. http://127.0.0.1:8000 (long-link addresses then "
        "come from newgetdns)",
    )
    p.add_argument("--user", required=True, help="account name")
    p.add_argument(
        "--password", default=None, help="password (default: $WXNET_PASSWORD, else read from stdin)"
    )
    p.add_argument("--long-name", default=None, help="long-link host name (DNS)")
    p.add_argument("--short-name", default=None, help="short-link host name (DNS)")
    p.add_argument("--dns-name", default=None, help="host serving newgetdns (DNS)")
    p.add_argument(
        "--long-port",
        type=_port,
        action="append",
        default=None,
        help="long-link port, in preference order (default 8080; repeatable)",
    )
    p.add_argument(
        "--short-port",
        type=_port,
        action="append",
        default=None,
        help="short-link HTTP port (default 8000; repeatable)",
    )
    p.add_argument(
        "--extra-long-port",
        type=_port,
        default=None,
        help="a last-resort long-link port (QQ's 14000, S14)",
    )
    p.add_argument(
        "--builtin-long",
        type=_hostport,
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="built-in long-link address used when DNS fails",
    )
    p.add_argument(
        "--builtin-short",
        type=_hostport,
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="built-in short-link address used when DNS fails",
    )
    p.add_argument(
        "--dns",
        type=_nameserver,
        action="append",
        default=[],
        metavar="IP[:PORT]",
        help="DNS server to ask instead of the system resolver (repeatable)",
    )
    p.add_argument(
        "--no-long-link",
        action="store_true",
        help="short link only (HTTP requests and the long poll)",
    )
    p.add_argument("--device-name", default="wxnet", help="shown in the server's device list")
    p.add_argument(
        "--image-chunk",
        type=_positive,
        default=None,
        help="image upload chunk in bytes (default 65536; the seed saw ~1500)",
    )
    p.set_defaults(func=cmd_login)

    p = sub.add_parser("logout", help="end the session on the server and forget it here")
    _common(p)
    p.set_defaults(func=cmd_logout)

    p = sub.add_parser("contacts", help="list contacts and groups")
    _common(p, json_flag=True)
    p.add_argument("--offline", action="store_true", help="print the saved list, no network")
    p.set_defaults(func=cmd_contacts)

    p = sub.add_parser("contact", help="manage contacts")
    csub = p.add_subparsers(dest="contact_command", metavar="ACTION", required=True)
    a = csub.add_parser("add", help="send a friend request (they accept it)")
    _common(a, json_flag=True)
    a.add_argument("name")
    a.add_argument("--greeting", default="", help="a line for them to read with it")
    a.set_defaults(func=cmd_contact_add)
    r = csub.add_parser("requests", help="list the friend requests you received")
    _common(r, json_flag=True)
    r.set_defaults(func=cmd_contact_requests)
    acc = csub.add_parser("accept", help="accept a friend request")
    _common(acc, json_flag=True)
    acc.add_argument("name")
    acc.set_defaults(func=cmd_contact_accept)

    p = sub.add_parser("group", help="create and change group chats")
    gsub = p.add_subparsers(dest="group_command", metavar="ACTION", required=True)
    g = gsub.add_parser("create", help="create a group")
    _common(g, json_flag=True)
    g.add_argument("name", help="the group's topic")
    g.add_argument("members", nargs="+", metavar="MEMBER")
    g.set_defaults(func=cmd_group_create)
    for action, op, text in (("add", 1, "add members"), ("remove", 2, "remove members")):
        g = gsub.add_parser(action, help=text)
        _common(g, json_flag=True)
        g.add_argument("group", help="the group: its id (<hex>@chatroom) or its unique name")
        g.add_argument("members", nargs="+", metavar="MEMBER")
        g.set_defaults(func=cmd_group_mod, op=op)

    p = sub.add_parser("send", help="send a text message")
    _common(p, json_flag=True)
    p.add_argument("to", help="user name, group id, or a group's unique name")
    p.add_argument("text")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("send-image", help="send an image (chunked, resumable upload)")
    _common(p, json_flag=True)
    p.add_argument("to")
    p.add_argument("file")
    p.add_argument("--chunk-size", type=_positive, default=None, help="bytes per chunk")
    p.add_argument("--parallel", type=_positive, default=None, help="chunks in flight")
    p.set_defaults(func=cmd_send_image)

    p = sub.add_parser("send-voice", help="send a voice clip, streamed in chunks")
    _common(p, json_flag=True)
    p.add_argument("to")
    p.add_argument("file")
    p.add_argument("--length-ms", type=int, default=0, help="clip length in milliseconds")
    p.add_argument("--chunk-size", type=_positive, default=None, help="bytes per chunk")
    p.add_argument(
        "--cancel-after",
        type=int,
        default=None,
        metavar="N",
        help="stream N chunks, then cancel (nothing is delivered)",
    )
    p.set_defaults(func=cmd_send_voice)

    p = sub.add_parser("listen", help="print every incoming item as it arrives")
    _common(p, json_flag=True)
    p.add_argument(
        "--count", type=_positive, default=None, help="exit after N messages (add_msg items)"
    )
    p.add_argument("--timeout", type=float, default=None, help="exit after S seconds")
    _save_flag(p)
    p.set_defaults(func=cmd_listen, interrupt_is_stop=True)  # Ctrl-C is how it ends

    p = sub.add_parser(
        "outbox",
        help="messages still sending or failed; `outbox drop ID` discards a failed one",
    )
    _common(p, json_flag=True)
    p.set_defaults(func=cmd_outbox)
    osub = p.add_subparsers(dest="outbox_command", metavar="ACTION")
    d = osub.add_parser("drop", help="discard a failed message: it is never sent")
    _common(d)
    d.add_argument("id", help="the ClientMsgId shown by `wxnet outbox`")
    d.set_defaults(func=cmd_outbox_drop)

    p = sub.add_parser("resend", help="send a failed message again (same ClientMsgId)")
    _common(p, json_flag=True)
    p.add_argument("id", help="the ClientMsgId shown by `wxnet outbox`")
    p.set_defaults(func=cmd_resend)

    p = sub.add_parser("history", help="messages of one conversation")
    _common(p, json_flag=True)
    p.add_argument("to", help="user name, group id, or a group's unique name")
    p.add_argument("--limit", type=_positive, default=50)
    p.add_argument("--offline", action="store_true", help="do not sync first")
    _save_flag(p)
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("revoke", help="revoke a message you sent (within 2 minutes)")
    _common(p)
    p.add_argument("id", help="ClientMsgId or server MsgId")
    p.set_defaults(func=cmd_revoke)

    p = sub.add_parser("status", help="link and addresses in use, SyncKey, last heartbeat")
    _common(p, json_flag=True)
    p.add_argument("--offline", action="store_true", help="print the last saved state only")
    p.set_defaults(func=cmd_status)


# ---- plumbing ------------------------------------------------------------------------------


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


# ---- commands ------------------------------------------------------------------------------


def cmd_login(args: argparse.Namespace, io: IO) -> int:
    password = args.password or os.environ.get("WXNET_PASSWORD")
    if password is None:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise UsageError("a password is needed (--password, $WXNET_PASSWORD or stdin)")
    changes: dict[str, Any] = {"server_url": args.server, "device_name": args.device_name}
    for name in ("long_name", "short_name", "dns_name", "extra_long_port", "image_chunk"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.long_port:
        changes["long_ports"] = tuple(args.long_port)
    if args.short_port:
        changes["short_ports"] = tuple(args.short_port)
    changes["builtin_long"] = tuple(args.builtin_long)
    changes["builtin_short"] = tuple(args.builtin_short)
    changes["nameservers"] = tuple(args.dns)
    changes["use_long_link"] = not args.no_long_link
    config = ClientConfig().replace(**changes)
    if args.server:
        try:
            parse_server_url(args.server)
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    async def go() -> int:
        store = open_store(args)
        client = Client(store, config)
        try:
            s = await client.login(args.user, password)
            if args.json:
                io.json({"user_name": s.user_name, "nick_name": s.nick_name, "uin": s.uin})
            else:
                io.print(f"logged in as {s.user_name} ({s.nick_name or s.user_name}), uin {s.uin}")
            return ExitStatus.OK
        finally:
            await client.close()
            store.close()

    return run_async(io, go())


def cmd_logout(args: argparse.Namespace, io: IO) -> int:
    async def go() -> int:
        store = open_store(args)
        client = Client(store)
        try:
            if client.session is None:
                raise NotLoggedIn("this profile is not logged in")
            await client.start(background=False)
            try:
                await client.logout()
            except (TransportError, MMError) as exc:
                io.error(f"logged out here, but the server was not told: {exc}")
                return ExitStatus.ERROR
            io.print("logged out")
            return ExitStatus.OK
        finally:
            await client.close()
            store.close()

    return run_async(io, go())


def cmd_contacts(args: argparse.Namespace, io: IO) -> int:
    async def job(client: Client) -> int:
        if not args.offline:
            await client.refresh_contacts()
        for c in client.store.contacts():
            if args.json:
                io.json(c.to_json())
            elif c.is_chatroom:
                io.print(f"{c.user_name}  group {c.nick_name!r}  members: {' '.join(c.members)}")
            else:
                io.print(f"{c.user_name}  {c.nick_name}")
        return ExitStatus.OK

    return run_async(io, with_client(args, job, background=not args.offline, wait_long=0))


def _contact_out(io: IO, args: argparse.Namespace, c: Any) -> None:
    if args.json:
        io.json(
            {
                "user_name": c.user_name,
                "nick_name": c.nick_name,
                "is_chatroom": c.is_chatroom,
                "members": list(c.members),
            }
        )
    else:
        io.print(
            f"{c.user_name}  {c.nick_name}"
            + (f"  members: {' '.join(c.members)}" if c.is_chatroom else "")
        )


def cmd_contact_add(args: argparse.Namespace, io: IO) -> int:
    async def job(client: Client) -> int:
        contact, pending = await client.request_contact(args.name, args.greeting)
        if not pending:
            _contact_out(io, args, contact)
        elif args.json:
            io.json({"user_name": contact.user_name, "pending": True})
        else:
            io.print(f"friend request sent to {contact.user_name}; they accept it with"
                     " `wxnet contact accept`")  # fmt: skip
        return ExitStatus.OK

    return run_async(io, with_client(args, job, background=False))


def cmd_contact_requests(args: argparse.Namespace, io: IO) -> int:
    async def job(client: Client) -> int:
        await client.sync()  # requests arrive in the message log
        for m in client.friend_requests():
            if args.json:
                io.json({"user_name": m.from_user, "greeting": m.content, "time": m.create_time})
            else:
                io.print(f"{m.from_user}  {m.content}".rstrip())
        return ExitStatus.OK

    return run_async(io, with_client(args, job, background=False))


def cmd_contact_accept(args: argparse.Namespace, io: IO) -> int:
    async def job(client: Client) -> int:
        _contact_out(io, args, await client.accept_contact(args.name))
        return ExitStatus.OK

    return run_async(io, with_client(args, job, background=False))


def cmd_group_create(args: argparse.Namespace, io: IO) -> int:
    async def job(client: Client) -> int:
        _contact_out(io, args, await client.create_group(args.name, list(args.members)))
        return ExitStatus.OK

    return run_async(io, with_client(args, job, background=False))


def cmd_group_mod(args: argparse.Namespace, io: IO) -> int:
    async def job(client: Client) -> int:
        group = await client.resolve(args.group)
        _contact_out(io, args, await client.modify_group(group, args.op, list(args.members)))
        return ExitStatus.OK

    return run_async(io, with_client(args, job, background=False))


def cmd_send(args: argparse.Namespace, io: IO) -> int:
    if not args.text:
        raise UsageError("the message text is empty")

    async def job(client: Client) -> int:
        to = await client.resolve(args.to)
        return _print_send_result(io, args, await client.send_text(to, args.text))

    return run_async(io, with_client(args, job))


def _check_file(path: str) -> None:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"no such file: {path}")
    if p.stat().st_size == 0:
        raise UsageError(f"the file is empty: {path}")


def cmd_send_image(args: argparse.Namespace, io: IO) -> int:
    _check_file(args.file)

    async def job(client: Client) -> int:
        changes = {}
        if args.chunk_size:
            changes["image_chunk"] = args.chunk_size
        if args.parallel:
            changes["parallel_chunks"] = args.parallel
        if changes:
            client.config = client.config.replace(**changes)
        to = await client.resolve(args.to)
        return _print_send_result(io, args, await client.send_image(to, args.file))

    return run_async(io, with_client(args, job))


def cmd_send_voice(args: argparse.Namespace, io: IO) -> int:
    _check_file(args.file)

    async def job(client: Client) -> int:
        if args.chunk_size:
            client.config = client.config.replace(voice_chunk=args.chunk_size)
        to = await client.resolve(args.to)
        if args.cancel_after is not None:
            cid = await client.cancel_voice(to, args.file, args.cancel_after)
            if args.json:
                io.json({"client_msg_id": cid, "state": "cancelled"})
            else:
                io.print(f"cancelled {cid} after {args.cancel_after} chunks")
            return ExitStatus.OK
        row = await client.send_voice(to, args.file, args.length_ms)
        return _print_send_result(io, args, row)

    return run_async(io, with_client(args, job))


def _item_text(d: dict[str, Any]) -> str:
    t = d.get("type")
    if t == "add_msg":
        who = d.get("real_from") or d.get("from_user", "")
        kind = TYPE_NAMES.get(int(d.get("msg_type", 0)), str(d.get("msg_type")))
        body = d.get("content", "") if kind == "text" else f"[{kind}]"
        return f"message {d.get('msg_id')} {who} -> {d.get('to_user')}: {body}"
    if t == "contact":
        return f"contact {d.get('user_name')} {d.get('nick_name', '')}"
    if t == "revoke":
        return f"revoked {d.get('msg_id')} in {d.get('to_user')}"
    if t == "msg_status":
        return f"read {d.get('talker')} up to {d.get('msg_id')} by {d.get('reader')}"
    return f"{t} {d}"


def _event_text(ev: ClientEvent) -> str:
    match ev:
        case ItemReceived(item=item):
            return _item_text(item_to_json(item))
        case LinkChanged(link=link, address=address, reason=reason):
            return f"# link: {link} {address or reason}"
        case NetworkChanged(quality=quality):
            return (
                "# the network is poor" if quality is NetworkQuality.POOR else "# network is back"
            )
        case SendStateChanged(client_msg_id=cid, state=state):
            return f"# send {cid}: {state}"


def cmd_listen(args: argparse.Namespace, io: IO) -> int:
    async def go() -> int:
        store = open_store(args)
        client = Client(store)
        if client.session is None:
            store.close()
            raise NotLoggedIn("this profile is not logged in: run `wxnet login` first")
        queue = client.subscribe()
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        items = 0
        try:
            await client.start(wait_long=0)
            while args.count is None or items < args.count:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                try:
                    ev = await wait_for(queue.get(), left)
                except TimeoutError:
                    break
                saved: list[str] = []
                if isinstance(ev, ItemReceived) and ev.body_type == "add_msg":
                    items += 1
                    m = ev.item.add_msg
                    saved = await _save(io, args, client, m.msg_id, m.msg_type, m.content)
                if args.json:
                    io.json({**ev.to_json(), **({"saved": saved} if saved else {})})
                else:
                    (io.print if isinstance(ev, ItemReceived) else _note(io))(_event_text(ev))
                    for path in saved:
                        io.print(f"    saved {path}")
            return ExitStatus.OK
        finally:
            await client.close()
            store.close()

    return run_async(io, go())


async def _save(
    io: IO,
    args: argparse.Namespace,
    client: Client,
    msg_id: int,
    msg_type: int,
    content: str,
    revoked: bool = False,
) -> list[str]:
    """``--save``: the message's media into the directory (a failed download is said on
    stderr and does not end the command)."""
    if args.save is None or revoked or msg_type not in mediasave.MEDIA_TYPES:
        return []
    try:
        paths = await mediasave.save_media(client, msg_id, msg_type, content, args.save)
    except (TransportError, MMError, OSError) as exc:
        io.error(f"cannot save the media of message {msg_id}: {exc}")
        return []
    return [str(p) for p in paths]


def _note(io: IO) -> Callable[[str], None]:
    def write(text: str) -> None:
        io.err.write(text + "\n")
        io.err.flush()

    return write


def cmd_outbox(args: argparse.Namespace, io: IO) -> int:
    store = open_store(args)
    try:
        rows = store.outbox()
        for row in rows:
            io.json(row.to_json()) if args.json else io.print(_row_text(row))
        if not rows and not args.json:  # JSON: no lines is the empty list
            io.print("outbox empty")
    finally:
        store.close()
    return ExitStatus.OK


def cmd_outbox_drop(args: argparse.Namespace, io: IO) -> int:
    store = open_store(args)
    try:
        if store.drop_failed(args.id):
            io.print(f"dropped {args.id}: it will not be sent")
            return ExitStatus.OK
        row = store.outbox_row(args.id)
    finally:
        store.close()
    if row is None:
        raise UsageError(f"no message {args.id} in the outbox (see `wxnet outbox`)")
    if row.state == "sent":
        raise UsageError(f"message {args.id} was sent; `wxnet revoke {args.id}` takes it back")
    raise UsageError(f"message {args.id} is still sending; only a failed message can be dropped")


def cmd_resend(args: argparse.Namespace, io: IO) -> int:
    async def job(client: Client) -> int:
        if client.store.outbox_row(args.id) is None:
            raise UsageError(f"no message {args.id} in the outbox (see `wxnet outbox`)")
        return _print_send_result(io, args, await client.resend(args.id))

    return run_async(io, with_client(args, job))


def cmd_history(args: argparse.Namespace, io: IO) -> int:
    async def job(client: Client) -> int:
        if not args.offline:
            try:
                await client.sync()
            except (TransportError, MMError) as exc:
                io.error(f"showing saved history; cannot sync: {exc}")
        for m in client.store.history(await client.resolve(args.to), args.limit):
            saved = await _save(io, args, client, m.msg_id, m.msg_type, m.content, m.revoked)
            if args.json:
                io.json({**m.to_json(), **({"saved": saved} if args.save else {})})
            else:
                io.print(_msg_text(m, client.me) + "".join(f"\n    saved {p}" for p in saved))
        return ExitStatus.OK

    return run_async(io, with_client(args, job, background=False))


def cmd_revoke(args: argparse.Namespace, io: IO) -> int:
    async def job(client: Client) -> int:
        await client.revoke(args.id)
        io.print(f"revoked {args.id}")
        return ExitStatus.OK

    return run_async(io, with_client(args, job, background=False))


def cmd_status(args: argparse.Namespace, io: IO) -> int:
    async def job(client: Client) -> int:
        st = client.status()
        if args.json:
            io.json(st)
            return ExitStatus.OK
        link = st.get("link") or "none"
        io.print(f"user:           {st.get('user')}")
        io.print(
            "link:           "
            + {
                "long": "long",
                "short": "short (no long link; requests go over HTTP)",
                "none": "none (the server did not answer over either link)",
            }.get(link, link)
        )
        long_address = st.get("long_address")
        io.print(
            "long address:   "
            + (f"{long_address} ({st.get('long_source') or '-'})" if long_address else "-")
        )
        short = st.get("short_address")
        used = "in use" if st.get("short_in_use") else "not used yet"
        io.print(f"short address:  {f'{short} ({used})' if short else '-'}")
        hb = st.get("last_heartbeat")
        io.print(
            "last heartbeat: "
            + (
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(hb))
                if hb
                else "none yet (they go on a long link kept up, as by `wxnet listen`)"
            )
        )
        io.print(f"network:        {st.get('network', 'good')}  DNS ok: {st.get('dns_ok')}")
        io.print(f"synckey:        {st.get('synckey') or '-'}")
        ob = st.get("outbox", {})
        io.print(f"outbox:         {ob.get('sending', 0)} sending, {ob.get('failed', 0)} failed")
        if st.get("last_error"):
            io.print(f"last error:     {st['last_error']}")
        return ExitStatus.OK

    if args.offline:
        store = open_store(args)
        try:
            client = Client(store)
            return asyncio.run(job(client))
        finally:
            store.close()
    return run_async(io, with_client(args, _probe_then(job)))


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
