"""``wxnet scan``: approve a web login, as the phone does when it scans the QR code.

The web page (or a web client) shows a QR code for ``https://login.weixin.qq.com/l/<uuid>``
and prints the uuid. ``wxnet scan UUID-or-URL`` calls the ``scanqrcode`` CGI twice: once
to say "scanned" (the web side sees 201; the reply names the browser or client that
asked: its User-Agent and address) and once to approve (200), unless ``--no-confirm``.
It does so as the logged-in phone of the profile (``wxnet login``), with its saved
session, or, with ``--user`` and ``--password`` (for scripts), as a new mobile session
(``manualauth`` on the short link) that it logs out afterwards. ``--push-approve``
approves the account's newest push login instead (a web client that asked to log in
again without a QR code: ``webwxpushloginurl``).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message

from wxnet.cli.client_common import default_profile, open_store, run_async
from wxnet.cli.common import IO, ExitStatus, UsageError
from wxnet.client.sdk import Client
from wxnet.client.store import DB_NAME
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMError, MMRet
from wxnet.proto.web import is_token

__all__ = ["parse_uuid", "register"]

R = TypeVar("R", bound=Message)
_TIMEOUT = 30.0


def parse_uuid(text: str) -> str:
    """The uuid in a bare uuid, a ``.../l/<uuid>`` QR URL or a URL with ``uuid=``."""
    text = text.strip()
    if "://" in text:
        u = urllib.parse.urlsplit(text)
        q = urllib.parse.parse_qs(u.query).get("uuid")
        if q:
            text = q[0]
        else:
            m = re.search(r"/(?:l|qrcode)/([^/?#]+)", u.path)
            if m is None:
                raise UsageError(f"no uuid in {text!r}")
            text = urllib.parse.unquote(m.group(1))
    if not is_token(text):
        raise UsageError(f"{text[:60]!r} is not a QR login uuid")
    return text


def _post(server: str, name: str, req: Message, resp_type: type[R]) -> R:
    url = f"{server.rstrip('/')}/cgi-bin/micromsg-bin/{name}"
    http = urllib.request.Request(
        url,
        data=req.SerializeToString(),
        headers={"Content-Type": "application/octet-stream"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(http, timeout=_TIMEOUT) as f:
            body = f.read(1 << 20)
    except urllib.error.HTTPError as exc:
        raise ConnectionError(f"{name}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectionError(f"cannot reach {server}: {exc}") from None
    resp = resp_type()
    try:
        resp.ParseFromString(body)
    except DecodeError:
        raise ConnectionError(f"{name}: the server's reply does not decode") from None
    return resp


def _ret(resp: Any) -> tuple[int, str]:
    return int(resp.base.ret), str(resp.base.err_msg)


@dataclass
class _Scan:
    """What the command does: ``uuid`` ("" with ``push``), in ``steps``."""

    uuid: str
    push: bool
    steps: list[bool]


def cmd_scan(args: argparse.Namespace, io: IO) -> int:
    if bool(args.code) == bool(args.push_approve):
        raise UsageError("give the QR code's uuid (or URL), or --push-approve")
    scan = _Scan(
        parse_uuid(args.code) if args.code else "",
        bool(args.push_approve),
        [False] if args.no_confirm else [False, True],
    )
    password = args.password
    profile = Path(args.profile or default_profile())
    if password is None and (profile / DB_NAME).exists():
        return _with_profile(args, io, scan)
    if password is None:
        password = os.environ.get("WXNET_PASSWORD")
    if not password or not args.user:
        raise UsageError(
            f"no logged-in profile in {profile} (`wxnet login`): give --user and --password"
            " (or $WXNET_PASSWORD)"
        )
    return _with_password(args, io, scan, password)


def _report(io: IO, args: argparse.Namespace, user: str, resp: pb.ScanQrResponse) -> None:
    confirmed = not args.no_confirm
    if args.json:
        io.json(
            {
                "uuid": resp.uuid,
                "user": user,
                "confirmed": confirmed,
                "user_agent": resp.user_agent,
                "address": resp.address,
            }
        )
        return
    who = resp.user_agent or "an unnamed client"
    io.print(f"{'approved' if confirmed else 'scanned'} web login {resp.uuid}")
    io.print(f"  asked by {who} from {resp.address or 'an unknown address'}")


def _refused(io: IO, code: int, msg: str) -> int:
    name = MMRet(code).name if code in MMRet._value2member_map_ else str(code)
    io.error(f"scanqrcode refused: {msg} ({name})")
    if code == MMRet.ERR_SESSIONTIMEOUT:
        io.error("the profile's session has ended: `wxnet login` again")
    return ExitStatus.ERROR


def _with_profile(args: argparse.Namespace, io: IO, scan: _Scan) -> int:
    """As the profile's phone: its saved session, no password."""

    async def go() -> int:
        store = open_store(args)
        try:
            client = Client(store)
            session = client.session
            if session is None:
                raise UsageError("this profile is not logged in: run `wxnet login` first")
            if args.user and args.user != session.user_name:
                raise UsageError(
                    f"the profile is logged in as {session.user_name}, not {args.user}"
                )
            try:
                await client.start(background=False)
                resp = pb.ScanQrResponse()
                for confirm in scan.steps:
                    req = pb.ScanQrRequest(
                        uuid=resp.uuid or scan.uuid, confirm=confirm, push=scan.push
                    )
                    try:
                        resp = await client.request("scanqrcode", req, pb.ScanQrResponse)
                    except MMError as exc:
                        return _refused(io, int(exc.code), exc.message)
            finally:
                await client.close()
        finally:
            store.close()
        _report(io, args, session.user_name, resp)
        return ExitStatus.OK

    return run_async(io, go())


def _with_password(args: argparse.Namespace, io: IO, scan: _Scan, password: str) -> int:
    """As a new mobile session (manualauth), logged out afterwards (scripts)."""
    if not args.server.startswith(("http://", "https://")):
        raise UsageError("--server must be an http:// or https:// URL")
    try:
        auth = _post(
            args.server,
            "manualauth",
            pb.ManualAuthRequest(
                base=pb.BaseRequest(device_id=f"scan-{secrets.token_hex(6)}"),
                user_name=args.user,
                password=password,
                device_name="wxnet scan",
            ),
            pb.ManualAuthResponse,
        )
        ret, msg = _ret(auth)
        if ret != 0:
            io.error(f"login as {args.user} failed: {msg} (ret {ret})")
            return ExitStatus.ERROR
        base = pb.BaseRequest(session_key=auth.session_key, uin=auth.uin)
        resp = pb.ScanQrResponse()
        try:
            for confirm in scan.steps:
                req = pb.ScanQrRequest(
                    base=base, uuid=resp.uuid or scan.uuid, confirm=confirm, push=scan.push
                )
                resp = _post(args.server, "scanqrcode", req, pb.ScanQrResponse)
                ret, msg = _ret(resp)
                if ret != 0:
                    return _refused(io, ret, msg)
        finally:
            _post(args.server, "logout", pb.LogoutRequest(base=base), pb.LogoutResponse)
    except ConnectionError as exc:
        io.error(str(exc))
        return ExitStatus.ERROR
    _report(io, args, args.user, resp)
    return ExitStatus.OK


def register(sub: Any) -> None:
    p = sub.add_parser(
        "scan",
        help="approve a web login (scan its QR code) as the profile's phone",
        description="Approve a web login shown as a QR code, as the phone does (wxnet web): "
        "with the profile's saved session, or with --user and --password.",
    )
    p.add_argument(
        "code", nargs="?", default="", help="the uuid shown under the QR code, or its URL"
    )
    p.add_argument(
        "--push-approve",
        action="store_true",
        help="approve the account's newest push login (a web client asking again, no QR)",
    )
    p.add_argument(
        "--profile",
        metavar="DIR",
        default=None,
        help="the phone's profile (default: $WXNET_PROFILE or ~/.wxnet)",
    )
    p.add_argument(
        "--server",
        default="http://127.0.0.1:8000",
        help="short-link base URL (with --password; a profile knows its server)",
    )
    p.add_argument("--user", default="", help="the account that approves (with --password)")
    p.add_argument(
        "--password", help="log in with a password instead of the profile (or $WXNET_PASSWORD)"
    )
    p.add_argument("--no-confirm", action="store_true", help="only mark the code scanned")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_scan)
