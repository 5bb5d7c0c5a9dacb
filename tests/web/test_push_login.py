"""Push login (webwxpushloginurl): a bot whose web session ended logs in again without a
QR code. itchat with ``hotReload=True`` asks for it after its saved session is refused;
the phone gets a ``web_login`` sync item, and ``wxnet scan --push-approve`` approves."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from tests.web.clients import HARNESS, Harness, python_client
from tests.web.conftest import CGI, WAIT, Mobile, WebClient, base_url, web_api
from tests.web.test_scan_cmd import cli
from wxnet.client.events import WebLoginRequested
from wxnet.client.sdk import Client, ClientConfig
from wxnet.client.store import ProfileStore
from wxnet.proto import web as wp
from wxnet.server.app import Server


async def end_web_sessions(server: Server, uin: int) -> None:
    """End the account's web sessions on the server side (as an expiry does)."""
    api = web_api(server)
    for s in api.sessions.of_account(uin):
        api.sessions.end(s.wxsid, api.clock())
        await api.sessions.save(s)


def login_profile(server: Server, profile: Path) -> None:
    code, _, err = cli(
        "login", "--server", base_url(server), "--user", "alice", "--password", "secret1",
        "--profile", str(profile), "--no-long-link",
    )  # fmt: skip
    assert code == 0, err


@pytest.mark.slow
async def test_itchat_push_login_after_its_session_ended(
    server: Server, alice: Mobile, bob: Mobile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WXNET_PASSWORD", raising=False)
    profile = tmp_path / "phone"
    await asyncio.to_thread(login_profile, server, profile)
    py = await asyncio.to_thread(python_client, "itchat")
    argv = [str(py), str(HARNESS / "itchat_harness.py"), base_url(server), str(tmp_path), "hot"]
    first = await Harness.start("itchat", argv, tmp_path)
    try:
        qr = await first.expect("qr")
        assert await alice.scan(qr["uuid"]) == 0
        await first.expect("ready")
    finally:
        await first.close()
    await end_web_sessions(server, alice.uin)
    second = await Harness.start("itchat", argv, tmp_path)
    try:
        item = await alice.wait_item(lambda it: it.WhichOneof("body") == "web_login")
        prompt = item.web_login
        assert prompt.address == "127.0.0.1" and prompt.user_agent.startswith("Mozilla/")
        code, out, err = await asyncio.to_thread(
            cli, "scan", "--push-approve", "--profile", str(profile), "--json"
        )
        assert code == 0, err
        approved = json.loads(out)
        assert approved["uuid"] == prompt.uuid and approved["confirmed"]
        assert approved["user_agent"] == prompt.user_agent
        await second.expect("login")
        # no QR code was made: itchat reports status "0" only with a fresh QR image
        assert not [e for e in second.events if e.get("event") == "qr" and e["status"] == "0"]
        await bob.send("alice", "welcome back")
        m = await second.expect("message", lambda e: e.get("text") == "welcome back")
        assert m["from"] == wp.web_user_name("bob")
    finally:
        await second.close()
    # nothing left to approve
    code, _, err = await asyncio.to_thread(cli, "scan", "--push-approve", "--profile", str(profile))
    assert code == 1 and "no web login" in err


async def test_push_login_needs_the_browser_and_is_rate_limited(
    server: Server, alice: Mobile, bob: Mobile, http: aiohttp.ClientSession
) -> None:
    base = base_url(server) + CGI
    web = await WebClient(http, base_url(server)).login(alice)
    async with aiohttp.ClientSession() as stranger:  # no cookies of alice's browser
        async with stranger.get(f"{base}/webwxpushloginurl?uin={alice.uin}") as r:
            out = json.loads(await r.text())
        assert out["ret"] == str(wp.RET_SESSION_REJECTED) and not out["uuid"]
    async with http.get(f"{base}/webwxpushloginurl?uin={bob.uin}") as r:  # another account
        assert json.loads(await r.text())["ret"] != "0"
    uuids = []
    for _ in range(web_api(server).config.push_login_burst):
        async with http.get(f"{base}/webwxpushloginurl?uin={web.uin}") as r:
            out = json.loads(await r.text())
        assert out["ret"] == "0" and out["BaseResponse"]["Ret"] == 0, out
        uuids.append(out["uuid"])
    async with http.get(f"{base}/webwxpushloginurl?uin={web.uin}") as r:
        out = json.loads(await r.text())
    assert out["ret"] != "0" and "too many push logins" in out["msg"]
    assert web_api(server).limited["push_login_rate"] == 1
    # each one reached the phone; only alice can approve; the newest is approved first
    item = await alice.wait_item(
        lambda it: it.WhichOneof("body") == "web_login" and it.web_login.uuid == uuids[-1]
    )
    assert item.cmd_id == 11001
    assert await bob.scan(uuids[-1]) != 0
    assert await alice.scan(uuids[-1]) == 0


async def test_the_sdk_shows_a_push_login_as_a_typed_event(
    server: Server, alice: Mobile, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    store = ProfileStore.open(tmp_path / "sdk")
    client = Client(store, ClientConfig(server_url=base_url(server), use_long_link=False))
    try:
        await client.login("alice", "secret1")
        async with client:
            events = client.subscribe()
            web = await WebClient(http, base_url(server)).login(alice)
            url = f"{base_url(server)}{CGI}/webwxpushloginurl?uin={web.uin}"
            async with http.get(url, headers={"User-Agent": "Bot/2.0"}) as r:
                uuid = json.loads(await r.text())["uuid"]

            async def prompted() -> WebLoginRequested:
                while True:
                    ev = await events.get()
                    if isinstance(ev, WebLoginRequested):
                        return ev

            ev = await asyncio.wait_for(prompted(), WAIT)
            assert (ev.uuid, ev.user_agent, ev.address) == (uuid, "Bot/2.0", "127.0.0.1")
            assert ev.to_json()["event"] == "web_login"
    finally:
        store.close()
