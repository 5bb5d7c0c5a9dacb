"""The client's message commands: ``wxnet send``, ``send-image``, ``send-voice``, ``listen``,
``outbox``, ``resend``, ``history``, ``revoke`` and ``status`` (registered by
:mod:`wxnet.cli.client_cmd`).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from wxnet._compat import wait_for
from wxnet.cli import mediasave
from wxnet.cli.client_common import (
    NOT_LOGGED_IN,
    TYPE_NAMES,
    _msg_text,
    _note,
    _print_send_result,
    _probe_then,
    _row_text,
    open_store,
    opened_client,
    run_async,
    with_client,
)
from wxnet.cli.common import IO, ExitStatus, UsageError
from wxnet.client.errors import TransportError
from wxnet.client.events import (
    ClientEvent,
    ItemReceived,
    LinkChanged,
    NetworkChanged,
    SendStateChanged,
    WebLoginRequested,
    item_to_json,
)
from wxnet.client.sdk import (
    Client,
)
from wxnet.client.sending import NetworkQuality
from wxnet.proto.errors import MMError


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


def _configure(client: Client, args: argparse.Namespace) -> None:
    """``--chunk-size`` and ``--parallel`` of the media sends (image, file, video)."""
    changes = {}
    if args.chunk_size:
        changes["image_chunk"] = args.chunk_size
    if args.parallel:
        changes["parallel_chunks"] = args.parallel
    if changes:
        client.config = client.config.replace(**changes)


def cmd_send_image(args: argparse.Namespace, io: IO) -> int:
    _check_file(args.file)

    async def job(client: Client) -> int:
        _configure(client, args)
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
        case WebLoginRequested(user_agent=agent, address=address):
            return (
                f"# a web login asks to log in again: {agent or 'an unnamed client'} from"
                f" {address or 'an unknown address'} (`wxnet scan --push-approve` approves it)"
            )


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


def cmd_listen(args: argparse.Namespace, io: IO) -> int:
    async def go() -> int:
        async with opened_client(args, need_session=NOT_LOGGED_IN) as client:
            queue = client.subscribe()
            deadline = None if args.timeout is None else time.monotonic() + args.timeout
            items = 0
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

    return run_async(io, go())


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
