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
import os
import sys
from pathlib import Path
from typing import Any

from wxnet.cli.client_common import (
    TYPE_NAMES,
    _common,
    _hostport,
    _nameserver,
    _port,
    _positive,
    open_store,
    run_async,
    with_client,
)
from wxnet.cli.client_msgs import (
    cmd_history,
    cmd_listen,
    cmd_outbox,
    cmd_outbox_drop,
    cmd_resend,
    cmd_revoke,
    cmd_send,
    cmd_send_image,
    cmd_send_voice,
    cmd_status,
)
from wxnet.cli.common import IO, ExitStatus, UsageError
from wxnet.client.errors import NotLoggedIn, TransportError
from wxnet.client.sdk import (
    Client,
    ClientConfig,
    parse_server_url,
)
from wxnet.proto.errors import MMError

__all__ = ["TYPE_NAMES", "open_store", "register", "run_async"]


def register(sub: Any) -> None:
    _register_login(sub)
    _register_contacts(sub)
    _register_sending(sub)
    _register_profile(sub)


def _register_login(sub: Any) -> None:
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
    _address_options(p)
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


def _address_options(p: argparse.ArgumentParser) -> None:
    """Where the client finds the server: host names, ports, built-in addresses, DNS."""
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


def _register_contacts(sub: Any) -> None:
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


def _save_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--save",
        metavar="DIR",
        type=Path,
        default=None,
        help="download the media of the messages shown (images, voice, videos, files) into DIR",
    )


def _register_sending(sub: Any) -> None:
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


def _register_profile(sub: Any) -> None:
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
