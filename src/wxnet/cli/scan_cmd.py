"""``wxnet scan``: approve a web login, as the phone does when it scans the QR code.

The web page (or a web client) shows a QR code for ``https://login.weixin.qq.com/l/<uuid>``
and prints the uuid. ``wxnet scan UUID-or-URL`` logs in as a mobile device over the short
link (``manualauth``), then calls the ``scanqrcode`` CGI twice: once to say "scanned"
(the web side sees 201) and once to approve (200), unless ``--no-confirm``.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message

from wxnet.cli.common import IO, ExitStatus, UsageError
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMRet
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


def cmd_scan(args: argparse.Namespace, io: IO) -> int:
    uuid = parse_uuid(args.code)
    password = args.password if args.password is not None else os.environ.get("WXNET_PASSWORD")
    if not password:
        raise UsageError("give --password or set WXNET_PASSWORD")
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
        steps = [False] if args.no_confirm else [False, True]
        for confirm in steps:
            resp = _post(
                args.server,
                "scanqrcode",
                pb.ScanQrRequest(base=base, uuid=uuid, confirm=confirm),
                pb.ScanQrResponse,
            )
            ret, msg = _ret(resp)
            if ret != 0:
                name = MMRet(ret).name if ret in MMRet._value2member_map_ else str(ret)
                io.error(f"scanqrcode refused: {msg} ({name})")
                return ExitStatus.ERROR
        _post(args.server, "logout", pb.LogoutRequest(base=base), pb.LogoutResponse)
    except ConnectionError as exc:
        io.error(str(exc))
        return ExitStatus.ERROR
    if args.json:
        io.json({"uuid": uuid, "user": args.user, "confirmed": not args.no_confirm})
    else:
        io.print(f"{'approved' if not args.no_confirm else 'scanned'} web login {uuid}")
    return ExitStatus.OK


def register(sub: Any) -> None:
    p = sub.add_parser(
        "scan",
        help="approve a web login (scan its QR code) as a mobile device",
        description="Approve a web login shown as a QR code, as the phone does (wxnet web).",
    )
    p.add_argument("code", help="the uuid shown under the QR code, or the URL it encodes")
    p.add_argument("--server", default="http://127.0.0.1:8000", help="short-link base URL")
    p.add_argument("--user", required=True, help="the account that approves")
    p.add_argument("--password", help="its password (default: $WXNET_PASSWORD)")
    p.add_argument("--no-confirm", action="store_true", help="only mark the code scanned")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_scan)
