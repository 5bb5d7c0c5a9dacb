"""``wxnet scan``: approving a web login from the command line."""

from __future__ import annotations

import asyncio
import io
import json

import aiohttp
import pytest

from tests.web.conftest import CGI, Mobile, base_url
from wxnet.cli.common import IO, UsageError
from wxnet.cli.main import run
from wxnet.cli.scan_cmd import parse_uuid
from wxnet.proto import web as wp
from wxnet.server.app import Server


def test_parse_uuid() -> None:
    assert parse_uuid("Ab_c-1==") == "Ab_c-1=="
    assert parse_uuid("https://login.weixin.qq.com/l/Ab_c-1") == "Ab_c-1"
    assert parse_uuid("http://127.0.0.1:8000/qrcode/XYZ") == "XYZ"
    assert parse_uuid("http://h/cgi-bin/mmwebwx-bin/login?uuid=QQ&tip=1") == "QQ"
    for bad in ("a/b c", "", "http://h/nothing", "x" * 300, "a+b"):
        with pytest.raises(UsageError):
            parse_uuid(bad)


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), IO(out, err))
    return code, out.getvalue(), err.getvalue()


async def test_scan_approves_a_web_login(
    server: Server, alice: Mobile, http: aiohttp.ClientSession
) -> None:
    base = base_url(server)
    async with http.get(base + "/jslogin") as r:
        _, uuid = wp.parse_qrlogin(await r.text())
    qr_url = f"https://login.weixin.qq.com/l/{uuid}"
    code, out, err = await asyncio.to_thread(
        cli, "scan", qr_url, "--server", base, "--user", "alice", "--password", "secret1", "--json"
    )
    assert code == 0, err
    assert json.loads(out) == {"confirmed": True, "user": "alice", "uuid": uuid}
    async with http.get(f"{base}{CGI}/login?uuid={uuid}") as r:
        poll = wp.parse_login_poll(await r.text())
    assert poll.code == 200
    async with http.get(poll.redirect_uri, allow_redirects=False) as r:
        assert wp.parse_login_ticket(await r.text()).wxuin == alice.uin

    # already used, wrong password, unknown code, unreachable server: clear errors
    code, _, err = await asyncio.to_thread(
        cli, "scan", uuid, "--server", base, "--user", "alice", "--password", "secret1"
    )
    assert code == 1 and "refused" in err
    code, _, err = await asyncio.to_thread(
        cli, "scan", uuid, "--server", base, "--user", "alice", "--password", "wrong1"
    )
    assert code == 1 and "login as alice failed" in err
    code, _, err = await asyncio.to_thread(
        cli, "scan", "a/b", "--server", base, "--user", "alice", "--password", "x"
    )
    assert code == 2
    code, _, err = await asyncio.to_thread(
        cli, "scan", uuid, "--server", "http://127.0.0.1:1", "--user", "a", "--password", "x"
    )
    assert code == 1 and "cannot reach" in err
