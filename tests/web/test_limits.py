"""The web side's bounds as pure policies (fake clock), the spool's quotas and expiry
(on both stores, shared by two spools as by two processes),
the cross-site rule, and hypothesis over every JSON handler of a running server."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.web.conftest import CGI, WAIT, Mobile, WebClient, base_url
from tests.web.test_bad_input import JSON_ENDPOINTS
from wxnet.server.app import Server
from wxnet.server.web import csrf
from wxnet.server.web.config import WebConfig
from wxnet.server.web.limits import RateLimiter, address_key
from wxnet.server.web.spool import SpoolFull, SpoolTooLarge, Upload, WebSpool
from wxnet.sync.store import Store

T0 = 1_700_000_000.0


def test_rate_limiter_buckets() -> None:
    lim = RateLimiter(rate=0.5, burst=3, max_keys=2)
    assert [lim.allow("a", T0) for _ in range(4)] == [True, True, True, False]
    assert lim.retry_after("a") == 2.0
    assert not lim.allow("a", T0 + 1) and lim.allow("a", T0 + 2)
    assert lim.allow("b", T0) and lim.allow("c", T0)  # "a" forgotten: the oldest key
    assert len(lim) == 2 and lim.allow("a", T0 + 2)  # back with a full bucket
    assert lim.refused == 2
    assert lim.take("b", T0) == 0.0 and lim.take("b", T0) == 0.0
    assert lim.take("b", T0) == 0.0 and lim.take("b", T0) == 2.0  # its wait, nothing taken


def test_address_key() -> None:
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2:3:4:5:6") == address_key("2001:db8:1:2::ff")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("x" * 500) == "x" * 64


def test_cross_site_rule() -> None:
    h = "127.0.0.1:8000"
    ok = [
        ("GET", None, None, None),
        ("POST", "http://127.0.0.1:8000", None, "text/plain"),
        ("POST", None, None, None),  # itchat: no Content-Type, no Origin
        ("POST", None, None, "application/json;charset=utf-8"),  # wechat4u
        ("POST", None, "https://wx.qq.com/?&lang=zh_CN&target=t", "application/json"),
        ("POST", None, "http://127.0.0.1:8000/", "text/plain"),
    ]
    bad = [
        ("POST", "http://evil", None, "application/json"),
        ("POST", "null", None, None),
        ("POST", None, None, "text/plain"),
        ("POST", None, "http://evil/", "application/x-www-form-urlencoded"),
        ("POST", None, None, "multipart/form-data; boundary=x"),
        ("POST", "http://127.0.0.1:8000.evil", None, None),
    ]
    for method, origin, referer, ctype in ok:
        assert csrf.check(method, h, origin, referer, ctype) is None, (origin, referer, ctype)
    for method, origin, referer, ctype in bad:
        assert csrf.check(method, h, origin, referer, ctype) is not None, (origin, ctype)
    upload = frozenset({"multipart/form-data"})
    assert csrf.check("POST", h, None, None, "multipart/form-data; b=1", upload) is None


async def test_spool_quotas_and_expiry(tmp_path: Path, web_store: Store) -> None:
    cfg = WebConfig(max_pending_uploads=2, uploads_per_account=3, upload_ttl=60.0)
    spool = WebSpool(tmp_path / "spool", cfg, web_store)
    other = WebSpool(tmp_path / "spool", cfg, web_store)  # another process, same spool

    async def chunk(up_key: str, sid: str, data: bytes, now: float = T0) -> Upload:
        up = await spool.upload_for(sid, 1, up_key, len(data), 1, now)
        path, fd = spool.open_temp()
        os.write(fd, data)
        os.close(fd)
        spool.charge(1, len(data))
        return await spool.commit_chunk(up, 0, path, len(data))

    a = await chunk("a", "s1", b"x" * 10)
    await chunk("b", "s1", b"y" * 10)
    with pytest.raises(SpoolFull, match="session"):
        await other.upload_for("s1", 1, "c", 10, 1, T0)  # a third upload of the session
    await chunk("c", "s2", b"z" * 10)
    with pytest.raises(SpoolFull, match="account"):
        await other.upload_for("s2", 1, "d", 10, 1, T0)  # a fourth of the account
    found = await other.finished("s1", a.media_id)
    assert found is not None and b"".join(found.read()) == b"x" * 10
    assert await other.finished("s2", a.media_id) is None  # another session's
    await other.mark_sent(found)  # a sent upload makes room
    await other.upload_for("s1", 1, "e", 10, 1, T0 + 1)
    assert await spool.stored_bytes(1) == 20 and spool.inflight(1) == 0
    with pytest.raises(SpoolTooLarge):
        await spool.upload_for("s3", 2, "big", cfg.max_upload + 1, 1, T0)

    async def alive(uin: int, sid: str) -> bool:
        return sid == "s1"

    assert await spool.sweep(T0 + 30) == 0
    assert await spool.sweep(T0 + 30, alive) == 1  # s2's session ended
    assert await other.sweep(T0 + 62) == 2
    assert len(other) == 0 and other.total_bytes == 0
    assert list((tmp_path / "spool").iterdir()) == []


async def test_chunks_of_one_upload_through_two_processes(tmp_path: Path, web_store: Store) -> None:
    """Chunks that land on different processes make one upload, finished by the last
    one whichever process takes it."""
    cfg = WebConfig()
    a, b = (WebSpool(tmp_path / "spool", cfg, web_store) for _ in range(2))
    parts = [os.urandom(1000), os.urandom(1000), os.urandom(500)]
    total = sum(map(len, parts))
    for i, (spool, part) in enumerate(zip((a, b, a), parts, strict=True)):
        up = await spool.upload_for("s1", 1, "file:2500", total, 3, T0)
        path, fd = spool.open_temp()
        os.write(fd, part)
        os.close(fd)
        spool.charge(1, len(part))
        up = await spool.commit_chunk(up, i, path, len(part))
        assert up.row.done == (i == 2)
    done = await b.finished("s1", up.media_id)
    assert done is not None and b"".join(done.read()) == b"".join(parts)


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False),
        st.text(max_size=30),
        st.sampled_from(["@", "@@", "@@00", "filehelper", "@" + "61" * 3, "1_1|2_2"]),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
        ),
        max_leaves=12,
    )


FIELDS = (
    "Msg",
    "SyncKey",
    "List",
    "MemberList",
    "Topic",
    "ChatRoomName",
    "SvrMsgId",
    "ClientMsgId",
    "VerifyUserList",
    "Code",
    "ToUserName",
    "NewTopic",
)
MSG_FIELDS = ("ToUserName", "Content", "Type", "ClientMsgId", "LocalID", "MediaId")


async def test_handlers_never_fail_on_any_json(
    server: Server, alice: Mobile, http: aiohttp.ClientSession
) -> None:
    w = await WebClient(http, base_url(server)).login(alice)
    loop = asyncio.get_running_loop()
    statuses: list[int] = []

    async def post(ep: str, body: dict[str, Any]) -> None:
        data = json.dumps({"BaseRequest": w.br(), **body}).encode()
        async with http.post(f"{w.base}{CGI}/{ep}?fun=addmember", data=data) as r:
            statuses.append(r.status)
            out = json.loads(await r.text())
            assert isinstance(out["BaseResponse"]["Ret"], int), out

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        st.sampled_from(JSON_ENDPOINTS),
        st.dictionaries(st.sampled_from(FIELDS), json_values(), max_size=4),
        st.dictionaries(st.sampled_from(MSG_FIELDS), json_values(), max_size=5),
    )
    def run(ep: str, body: dict[str, Any], msg: dict[str, Any]) -> None:
        if msg:
            body = {**body, "Msg": msg}
        asyncio.run_coroutine_threadsafe(post(ep, body), loop).result(WAIT)

    await asyncio.to_thread(run)
    assert set(statuses) == {200}
    assert (await w.post("/webwxinit", {}))["BaseResponse"]["Ret"] == 0
