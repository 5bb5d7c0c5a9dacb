"""Issue 12, server core: each attack against a real ``wxnet serve`` process fails, and a
normal user of the same server keeps working.

The attacker connects from 127.0.0.3 and the normal user from 127.0.0.2 (both loopback),
so the per-address caps can tell them apart, as they would on a real network.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from google.protobuf.message import Message

from tests.server.realserver import RealServer, wait_closed
from tests.server.wire import WAIT, Account, Device, LongClient
from wxnet.client.basiclink import BasicLink
from wxnet.client.errors import TransportError
from wxnet.proto import commands as C
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMRet
from wxnet.sync.store import session_key_hash

pytestmark = pytest.mark.slow

ATTACKER, USER = "127.0.0.3", "127.0.0.2"

CONFIG = """
[server]
identify_timeout = 2.0
max_connections = 500
max_connections_per_address = 100
http_header_timeout = 1.0
http_body_timeout = 1.0
max_polls_per_session = 1
max_polls_per_account = 3
trusted_proxies = ["127.0.0.1"]
max_field_chars = 256

[sync]
durability = "NORMAL"
max_sessions_per_account = 3
login_workers = 1
login_queue = 2
login_backoff_base = 60.0
contacts = "open"
"""


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    srv = RealServer(tmp_path_factory.mktemp("abuse") / "var", CONFIG)
    srv.user_add("alice", "bob", "dave", "erin", "frank")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


async def connect(port: int, addr: str) -> LongClient:
    """A long link from the loopback address ``addr``."""
    _, proto = await asyncio.wait_for(
        asyncio.get_running_loop().create_connection(
            BasicLink, "127.0.0.1", port, local_addr=(addr, 0)
        ),
        WAIT,
    )
    return LongClient(proto)


async def login(
    port: int, user: str, addr: str = USER, device: str = "phone", identify: bool = True
) -> Device:
    link = await connect(port, addr)
    acc = Account(user, device_id=f"{user}-{device}")
    try:
        r = await link.call(
            "manualauth",
            pb.ManualAuthRequest(
                base=pb.BaseRequest(device_id=acc.device_id),
                user_name=user,
                password="secret1",
                device_name=device,
            ),
            pb.ManualAuthResponse,
        )
        assert r.base.ret == 0, r.base.err_msg
        acc.uin, acc.sid = r.uin, r.session_key
        if identify:
            ident = await link.call(
                "identify", pb.IdentifyRequest(base=acc.base()), pb.IdentifyResponse
            )
            assert ident.base.ret == 0, ident.base.err_msg
    except BaseException:
        await link.close()
        raise
    return Device(link, acc)


async def normal_user_works(real: RealServer) -> None:
    """alice (from the user's address) logs in, sends bob a message, bob gets the notify."""
    a = await login(real.long_port, "alice")
    b = await login(real.long_port, "bob")
    try:
        await a.call("verifyuser", pb.AddContactRequest(user_name="bob"), pb.AddContactResponse)
        await b.sync()
        r = await a.send("bob", "still here", f"ok-{os.urandom(4).hex()}")
        assert r.ret == 0, r.err_msg
        await b.link.next_notify()
        assert "still here" in [m.content for m in await b.messages()]
    finally:
        await a.close()
        await b.close()
    connector = aiohttp.TCPConnector(local_addr=(USER, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as s,
        s.get(f"{real.url}/healthz", timeout=aiohttp.ClientTimeout(total=WAIT)) as resp,
    ):
        assert resp.status == 200


# ------------------------------------------------------------------ connections
async def test_unidentified_links_are_closed_even_when_they_send_noops(real: RealServer) -> None:
    before = await real.metric("wxnet_identify_timeouts_total")
    links = [await connect(real.long_port, ATTACKER) for _ in range(5)]

    async def ping_until_closed(link: LongClient) -> None:
        # noop, wait for its reply, again: the link is never silent, yet it must go
        while not link.closed.is_set():
            try:
                await link.request(C.CMD_NOOP, b"")
            except TransportError:  # closed (LinkClosed) or no reply
                break

    await asyncio.wait_for(asyncio.gather(*(ping_until_closed(lk) for lk in links)), 15)
    assert all(lk.closed.is_set() for lk in links)
    for lk in links:
        await lk.close()
    assert await real.metric("wxnet_identify_timeouts_total") >= before + 5
    await normal_user_works(real)


async def test_one_address_cannot_take_every_connection(tmp_path: Path) -> None:
    # its own server: links that never identify must stay for this test (60 s deadline)
    real = RealServer(
        tmp_path / "var",
        "[server]\nmax_connections_per_address = 20\nidentify_timeout = 60.0\n"
        'http_header_timeout = 60.0\n[sync]\ndurability = "NORMAL"\ncontacts = "open"\n',
    )
    real.user_add("alice", "bob")
    real.start()
    held = []
    for _ in range(20):  # the per-address cap
        r, w = await asyncio.open_connection("127.0.0.1", real.long_port, local_addr=(ATTACKER, 0))
        held.append((r, w))
    try:
        # the 21st long link and an HTTP connection from the same address are refused
        r, w = await asyncio.open_connection("127.0.0.1", real.long_port, local_addr=(ATTACKER, 0))
        assert await wait_closed(r) == b""
        w.close()
        r, w = await asyncio.open_connection("127.0.0.1", real.http_port, local_addr=(ATTACKER, 0))
        w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await wait_closed(r)).startswith(b"HTTP/1.1 503")
        w.close()
        assert await real.metric("wxnet_connections_refused_total", 'reason="address"') == 2
        await normal_user_works(real)  # /healthz and logins from elsewhere still work
    finally:
        for _, w in held:
            w.close()
        real.stop()


async def test_slowloris_headers_and_stalled_bodies_are_cut_off(real: RealServer) -> None:
    before_h = await real.metric("wxnet_http_timeouts_total", 'phase="header"')
    before_b = await real.metric("wxnet_http_timeouts_total", 'phase="body"')
    # headers: one line every 0.3 s, for ever (each line alone would reset an idle timer)
    r1, w1 = await asyncio.open_connection("127.0.0.1", real.http_port, local_addr=(ATTACKER, 0))
    w1.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")

    async def trickle() -> None:
        i = 0
        while not r1.at_eof():
            w1.write(f"X-Slow-{i}: y\r\n".encode())
            i += 1
            await asyncio.sleep(0.3)  # the attacker's pace, not a wait for the server

    trickler = asyncio.ensure_future(trickle())
    # body: headers promise 1000 bytes, 10 arrive, then nothing
    r2, w2 = await asyncio.open_connection("127.0.0.1", real.http_port, local_addr=(ATTACKER, 0))
    w2.write(
        b"POST /cgi-bin/micromsg-bin/newsync HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10
    )
    try:
        assert await wait_closed(r1) == b""
        assert await wait_closed(r2) == b""
    finally:
        trickler.cancel()
        w1.close()
        w2.close()
    assert await real.metric("wxnet_http_timeouts_total", 'phase="header"') >= before_h + 1
    assert await real.metric("wxnet_http_timeouts_total", 'phase="body"') >= before_b + 1
    await normal_user_works(real)


async def test_pending_long_polls_are_capped_per_session_and_account(real: RealServer) -> None:
    # three sessions (the session cap), each identified on its own link
    devs = [await login(real.long_port, "erin", device=f"d{i}") for i in range(3)]
    for d in devs:
        await d.sync()  # up to date: a poll now waits
    link = devs[0].link  # every poll on one link: the server takes them in this order

    def poll(dev: Device) -> asyncio.Future[pb.SyncCheckResponse]:
        req = pb.SyncCheckRequest(
            base=dev.acc.base(), key_buf=dev.acc.key.to_bytes(), timeout_ms=20_000
        )
        return asyncio.ensure_future(link.call("newsynccheck", req, pb.SyncCheckResponse))

    first, second = poll(devs[0]), poll(devs[0])  # same session: the first ends, empty
    third, fourth = poll(devs[1]), poll(devs[2])
    refused = poll(devs[0])  # the account's 4th pending poll
    assert (await first).selector == 0
    assert (await refused).base.ret == MMRet.ERR_FREQ_LIMITED
    assert not (second.done() or third.done() or fourth.done())
    assert await real.metric("wxnet_long_polls_limited_total", 'scope="account"') >= 1
    assert await real.metric("wxnet_long_polls_limited_total", 'scope="session"') >= 1
    # the polls that were kept still work: news wakes them
    f = await login(real.long_port, "frank")
    await f.call("verifyuser", pb.AddContactRequest(user_name="erin"), pb.AddContactResponse)
    for fut in (second, third, fourth):
        assert (await fut).selector != 0
    for d in (*devs, f):
        await d.close()
    await normal_user_works(real)


# ------------------------------------------------------------------ logins
async def short_call(
    real: RealServer, name: str, req: Message, xff: str = "", addr: str = "127.0.0.1"
) -> pb.ManualAuthResponse:
    """A short-link call; the answer is read as a ManualAuthResponse (its ``base`` is
    field 1, as in every response)."""
    headers = {"Content-Type": "application/octet-stream"}
    if xff:
        headers["X-Forwarded-For"] = xff
    connector = aiohttp.TCPConnector(local_addr=(addr, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as s,
        s.post(
            f"{real.url}/cgi-bin/micromsg-bin/{name}",
            data=req.SerializeToString(),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=WAIT),
        ) as r,
    ):
        assert r.status == 200, await r.text()
        out = pb.ManualAuthResponse()
        out.ParseFromString(await r.read())
        return out


def auth(user: str, password: str, device: str = "d", sid: str = "") -> pb.ManualAuthRequest:
    return pb.ManualAuthRequest(
        base=pb.BaseRequest(device_id=device, session_key=sid),
        user_name=user,
        password=password,
        device_name=device,
    )


async def test_wrong_passwords_throttle_the_attacker_not_the_owner(real: RealServer) -> None:
    # bob's phone already holds a session, from the address the attacker will use
    phone = await short_call(real, "manualauth", auth("bob", "secret1", "bob-phone"), "10.9.9.9")
    assert phone.base.ret == 0
    # behind the trusted proxy (127.0.0.1), the attacker is 10.9.9.9
    codes = [
        (await short_call(real, "manualauth", auth("bob", "wrong!!"), "10.9.9.9")).base.ret
        for _ in range(8)
    ]
    assert codes[:5] == [MMRet.ERR_PASSWORD] * 5 and set(codes[5:]) == {MMRet.ERR_FREQ_LIMITED}
    # even the right password is refused from the attacker's address...
    again = await short_call(real, "manualauth", auth("bob", "secret1"), "10.9.9.9")
    assert again.base.ret == MMRet.ERR_FREQ_LIMITED
    # ...but the owner, from anywhere else, logs in at once
    owner = await short_call(real, "manualauth", auth("bob", "secret1"), "10.1.1.1")
    assert owner.base.ret == 0, owner.base.err_msg
    # and the device that holds a session is never locked out, even from there
    relog = await short_call(
        real, "manualauth", auth("bob", "secret1", "bob-phone", phone.session_key), "10.9.9.9"
    )
    assert relog.base.ret == 0, relog.base.err_msg
    # a client that is not a trusted proxy cannot pick its address with the header
    for _ in range(6):
        r = await short_call(real, "manualauth", auth("alice", "bad!!!"), "10.2.2.2", ATTACKER)
    assert r.base.ret == MMRet.ERR_FREQ_LIMITED
    fine = await short_call(real, "manualauth", auth("alice", "secret1"), "10.2.2.2", USER)
    assert fine.base.ret == 0
    assert await real.metric("wxnet_logins_throttled_total") >= 3
    await normal_user_works(real)


async def test_login_floods_are_bounded_and_sessions_capped(real: RealServer) -> None:
    # 12 logins in one write: at most workers + queue (3) hash at once, the rest get BUSY
    # (sent over a link identified by another account, so no identify deadline cuts in)
    attacker = await login(real.long_port, "frank", ATTACKER, device="flood")
    link = attacker.link
    sent = [
        link.link.send(C.BY_NAME["manualauth"], auth("dave", "secret1", f"flood-{i}"))
        for i in range(12)  # all written in this loop turn, before any reply can come
    ]
    codes = []
    for seq, fut in sent:
        r = pb.ManualAuthResponse.FromString(await link.link.wait_reply(seq, fut, WAIT))
        codes.append(r.base.ret)
    await link.close()
    assert MMRet.ERR_BUSY in codes and 0 in codes
    assert set(codes) <= {0, MMRet.ERR_BUSY}
    assert await real.metric("wxnet_logins_busy_total") >= 1
    # session cap 3: the oldest sessions die, their long links are closed, it is logged
    first = await login(real.long_port, "dave", device="old")
    later = [await login(real.long_port, "dave", device=f"new{i}") for i in range(3)]
    await asyncio.wait_for(first.link.closed.wait(), WAIT)
    prof = await later[0].call("getprofile", pb.GetProfileRequest(), pb.GetProfileResponse)
    assert prof.base.ret == 0
    for d in (first, *later):
        await d.close()
    assert await real.metric("wxnet_sessions_evicted_total") >= 1
    evictions = [json.loads(x) for x in real.log().splitlines() if "session evicted" in x]
    assert evictions and evictions[-1]["level"] == "warning"
    await normal_user_works(real)


async def test_oversized_strings_are_refused(real: RealServer) -> None:
    link = await connect(real.long_port, ATTACKER)
    big = await link.call(
        "manualauth",
        pb.ManualAuthRequest(
            base=pb.BaseRequest(device_id="d"),
            user_name="alice",
            password="secret1",
            device_name="x" * 500_000,
        ),
        pb.ManualAuthResponse,
    )
    assert big.base.ret == MMRet.ERR_TOO_LARGE and not big.session_key
    await link.close()
    a = await login(real.long_port, "alice")
    r = await a.call(
        "newsendmsg",
        pb.SendMsgRequest(
            list=[pb.MicroMsg(to_user="b" * 5000, content="hi", msg_type=1, client_msg_id="c")]
        ),
        pb.SendMsgResponse,
    )
    assert r.base.ret == MMRet.ERR_TOO_LARGE
    await a.close()
    await normal_user_works(real)


# ------------------------------------------------------------------ sessions, files
async def test_logout_over_http_closes_the_long_link(real: RealServer) -> None:
    dev = await login(real.long_port, "frank", device="laptop")
    other = await login(real.long_port, "frank", device="tablet")  # another session
    out = await short_call(real, "logout", pb.LogoutRequest(base=dev.acc.base()))
    assert out.base.ret == 0
    await asyncio.wait_for(dev.link.closed.wait(), WAIT)
    assert dev.link.notifies.empty()
    # only the link of the session that ended: the account's other one still serves
    # (a link knows its session by a tag of the key's hash, not the key)
    await other.sync()
    assert not other.link.closed.is_set()
    await dev.close()
    await other.close()
    await normal_user_works(real)


async def test_store_files_are_private_and_hold_no_session_key(real: RealServer) -> None:
    dev = await login(real.long_port, "alice", device="tablet")
    data = real.data
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for d in (data / "media", data / "media" / "partial", data / "media" / "files"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    for name in ("wxnet.db", "wxnet.db-wal", "wxnet.db-shm"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    raw = b"".join((data / n).read_bytes() for n in ("wxnet.db", "wxnet.db-wal"))
    assert dev.acc.sid.encode() not in raw
    assert session_key_hash(dev.acc.sid).encode() in raw
    await dev.close()


async def test_a_failed_write_is_a_failed_send_never_an_ack(real: RealServer) -> None:
    a = await login(real.long_port, "alice")
    b = await login(real.long_port, "bob")
    await a.call("verifyuser", pb.AddContactRequest(user_name="bob"), pb.AddContactResponse)
    await b.sync()
    # another process damages the store's message table under the running server
    db = sqlite3.connect(real.data / "wxnet.db", isolation_level=None)
    # (a function the server does not have: every insert into messages fails with an
    # SQLite error, as writes to a damaged page do)
    db.execute("CREATE TRIGGER damaged BEFORE INSERT ON messages BEGIN SELECT wxnet_damaged(); END")
    try:
        r = await a.call(
            "newsendmsg",
            pb.SendMsgRequest(
                list=[pb.MicroMsg(to_user="bob", content="lost?", msg_type=1, client_msg_id="x1")]
            ),
            pb.SendMsgResponse,
        )
        assert r.base.ret == MMRet.ERR_SYS and not r.list
    finally:
        db.execute("DROP TRIGGER damaged")
        db.close()
    assert "lost?" not in [m.content for m in await b.messages()]
    ok = await a.send("bob", "after", "x1")  # the same id: it was never stored
    assert ok.ret == 0
    assert [m.content for m in await b.messages()] == ["after"]
    await a.close()
    await b.close()


def test_a_damaged_store_is_refused_at_start_with_a_recovery_hint(tmp_path: Path) -> None:
    srv = RealServer(tmp_path / "var", '[sync]\ndurability = "NORMAL"\n')
    srv.user_add(*(f"user{i:03}" for i in range(3)))
    db = sqlite3.connect(srv.data / "wxnet.db")
    db.execute("CREATE TABLE filler (x BLOB)")
    db.executemany("INSERT INTO filler VALUES (?)", [(os.urandom(3000),) for _ in range(200)])
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    with (srv.data / "wxnet.db").open("r+b") as f:  # garble pages in the middle
        f.seek(4096 * 20)
        f.write(os.urandom(4096 * 10))
    with pytest.raises(AssertionError, match="server did not start"):
        srv.start()
    assert srv.proc is not None and srv.proc.wait(30) != 0
    log = srv.log()
    assert "is damaged" in log and ".recover" in log and 'integrity_check = "off"' in log
    srv.stop()
