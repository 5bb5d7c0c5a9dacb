"""``wxnet send-file`` and ``wxnet send-video``: a file or a video to a contact or group,
chunked and resumable as ``send-image`` is (downloads are ``--save DIR`` of
``wxnet history`` and ``wxnet listen``)."""

from __future__ import annotations

import argparse
from typing import Any

from wxnet.cli.client_common import (
    _common,
    _positive,
    _print_send_result,
    run_async,
    with_client,
)
from wxnet.cli.client_msgs import _check_file, _configure
from wxnet.cli.common import IO
from wxnet.client.sdk import Client

__all__ = ["register"]


def _chunking(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chunk-size", type=_positive, default=None, help="bytes per chunk")
    p.add_argument("--parallel", type=_positive, default=None, help="chunks in flight")


def register(sub: Any) -> None:
    p = sub.add_parser("send-file", help="send a file under its own name (chunked, resumable)")
    _common(p, json_flag=True)
    p.add_argument("to", help="user name, group id, or a group's unique name")
    p.add_argument("file")
    _chunking(p)
    p.set_defaults(func=cmd_send_file)

    p = sub.add_parser("send-video", help="send a video with a thumbnail (chunked, resumable)")
    _common(p, json_flag=True)
    p.add_argument("to", help="user name, group id, or a group's unique name")
    p.add_argument("file")
    p.add_argument(
        "--thumb",
        metavar="IMAGE",
        default=None,
        help="the thumbnail (any image; default: the server's placeholder, a grey frame)",
    )
    p.add_argument("--seconds", type=int, default=0, help="the video's length (shown only)")
    _chunking(p)
    p.set_defaults(func=cmd_send_video)


def cmd_send_file(args: argparse.Namespace, io: IO) -> int:
    _check_file(args.file)

    async def job(client: Client) -> int:
        _configure(client, args)
        to = await client.resolve(args.to)
        return _print_send_result(io, args, await client.send_file(to, args.file))

    return run_async(io, with_client(args, job))


def cmd_send_video(args: argparse.Namespace, io: IO) -> int:
    _check_file(args.file)
    if args.thumb is not None:
        _check_file(args.thumb)

    async def job(client: Client) -> int:
        _configure(client, args)
        to = await client.resolve(args.to)
        row = await client.send_video(to, args.file, args.thumb, args.seconds)
        return _print_send_result(io, args, row)

    return run_async(io, with_client(args, job))
