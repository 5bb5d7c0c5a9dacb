"""``wxnet scan``: approving a web login from the command line."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

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
    assert json.loads(out) == {
        "confirmed": True,
        "user": "alice",
        "uuid": uuid,
        "user_agent": "Python/3.11 aiohttp/" + aiohttp.__version__,
        "address": "127.0.0.1",
    }
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


async def test_scan_with_the_profile_session(
    server: Server,
    alice: Mobile,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A phone logged in with ``wxnet login`` approves with its saved session (no
    password), and is shown who asked: the browser's user agent and address."""
    monkeypatch.delenv("WXNET_PASSWORD", raising=False)
    base = base_url(server)
    profile = str(tmp_path / "phone")
    code, _, err = await asyncio.to_thread(
        cli, "login", "--server", base, "--user", "alice", "--password", "secret1",
        "--profile", profile, "--no-long-link",
    )  # fmt: skip
    assert code == 0, err
    browser = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) TestBrowser/1.0"}

    async def new_login() -> str:
        async with http.get(base + "/jslogin?appid=x&fun=new", headers=browser) as r:
            return wp.parse_qrlogin(await r.text())[1]

    uuid = await new_login()
    code, out, err = await asyncio.to_thread(cli, "scan", uuid, "--profile", profile, "--json")
    assert code == 0, err
    assert json.loads(out) == {
        "uuid": uuid,
        "user": "alice",
        "confirmed": True,
        "user_agent": browser["User-Agent"],
        "address": "127.0.0.1",
    }
    async with http.get(f"{base}{CGI}/login?uuid={uuid}") as r:
        assert wp.parse_login_poll(await r.text()).code == 200

    uuid = await new_login()
    code, out, err = await asyncio.to_thread(
        cli, "scan", uuid, "--profile", profile, "--no-confirm"
    )
    assert code == 0, err
    assert out.splitlines() == [
        f"scanned web login {uuid}",
        f"  asked by {browser['User-Agent']} from 127.0.0.1",
    ]
    # another account's profile is refused by name; no profile and no password: usage
    code, _, err = await asyncio.to_thread(cli, "scan", uuid, "--profile", profile, "--user", "bob")
    assert code == 2 and "logged in as alice, not bob" in err
    code, _, err = await asyncio.to_thread(cli, "scan", uuid, "--profile", str(tmp_path / "no"))
    assert code == 2 and "--password" in err
    assert not (tmp_path / "no").exists()
    code, _, err = await asyncio.to_thread(cli, "scan", "--profile", profile)
    assert code == 2 and "--push-approve" in err
