"""The web side's bounds as pure policies (fake clock), the spool's quotas and expiry,
the cross-site rule, and hypothesis over every JSON handler of a running server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.web.conftest import CGI, WAIT, Mobile, WebClient, base_url
from tests.web.test_bad_input import JSON_ENDPOINTS
from wxnet.server.app import Server
from wxnet.server.web import csrf
from wxnet.server.web.config import WebConfig
from wxnet.server.web.limits import FairPending, RateLimiter, address_key
from wxnet.server.web.spool import SpoolFull, SpoolTooLarge, WebSpool

T0 = 1_700_000_000.0


def test_rate_limiter_buckets() -> None:
    lim = RateLimiter(rate=0.5, burst=3, max_keys=2)
    assert [lim.allow("a", T0) for _ in range(4)] == [True, True, True, False]
    assert lim.retry_after("a") == 2.0
    assert not lim.allow("a", T0 + 1) and lim.allow("a", T0 + 2)
    assert lim.allow("b", T0) and lim.allow("c", T0)  # "a" forgotten: the oldest key
    assert len(lim) == 2 and lim.allow("a", T0 + 2)  # back with a full bucket
    assert lim.refused == 2


def test_address_key() -> None:
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2:3:4:5:6") == address_key("2001:db8:1:2::ff")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("x" * 500) == "x" * 64


def test_fair_pending_evicts_the_heaviest_first() -> None:
    fair = FairPending(limit=6, per_address=3)
    for i in range(5):
        assert fair.make_room("flood") == ([f"f{i - 3}"] if i >= 3 else [])
        fair.add(f"f{i}", "flood")
    assert fair.make_room("user") == []
    fair.add("u0", "user")
    assert len(fair) == 4
    for i in range(3):  # a second flooder: room comes from the heavier holders first
        gone = fair.make_room(f"other{i}")
        fair.add(f"o{i}", f"other{i}")
        assert "u0" not in gone
    assert fair.held_by("user") == 1 and len(fair) == 6
    # when every address holds one, one of them goes: a newcomer still gets in
    for i in range(10):
        assert len(fair.make_room(f"late{i}")) == 1
        fair.add(f"l{i}", f"late{i}")
        assert fair.held_by(f"late{i}") == 1 and len(fair) == 6
    fair.discard("u0")
    fair.discard("nope")
    assert fair.held_by("user") == 0


@given(st.lists(st.tuples(st.sampled_from("abcde"), st.booleans()), max_size=200))
def test_fair_pending_never_over_its_caps(ops: list[tuple[str, bool]]) -> None:
    fair = FairPending(limit=7, per_address=3)
    n = 0
    for addr, drop in ops:
        if drop and fair.held_by(addr):
            fair.discard(next(i for i in fair._owner if fair._owner[i] == addr))
        else:
            fair.make_room(addr)
            fair.add(f"i{n}", addr)
            n += 1
        assert len(fair) <= 7 and all(fair.held_by(a) <= 3 for a in "abcde")
        assert sum(fair.held_by(a) for a in "abcde") == len(fair)


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


def test_spool_quotas_and_expiry(tmp_path: Path) -> None:
    cfg = WebConfig(max_pending_uploads=2, uploads_per_account=3, upload_ttl=60.0)
    spool = WebSpool(tmp_path / "spool", cfg)

    def chunk(up_key: str, sid: str, data: bytes, now: float = T0) -> None:
        up = spool.upload_for(sid, 1, up_key, len(data), 1, now)
        path, fd = spool.open_temp()
        import os

        os.write(fd, data)
        os.close(fd)
        spool.charge(1, len(data))
        spool.commit_chunk(up, 0, path, len(data))

    chunk("a", "s1", b"x" * 10)
    chunk("b", "s1", b"y" * 10)
    try:
        spool.upload_for("s1", 1, "c", 10, 1, T0)
        raise AssertionError("a third upload of the session")
    except SpoolFull as exc:
        assert "session" in str(exc)
    chunk("c", "s2", b"z" * 10)
    try:
        spool.upload_for("s2", 1, "d", 10, 1, T0)
        raise AssertionError("a fourth upload of the account")
    except SpoolFull as exc:
        assert "account" in str(exc)
    a = spool.uploads_of(sid="s1")[0]
    a.sent = True  # a sent upload makes room
    spool.upload_for("s1", 1, "e", 10, 1, T0 + 1)
    assert spool.account_bytes(1) == 20
    try:
        spool.upload_for("s3", 2, "big", cfg.max_upload + 1, 1, T0)
        raise AssertionError("over max_upload")
    except SpoolTooLarge:
        pass
    assert spool.sweep(T0 + 30) == 0
    assert spool.sweep(T0 + 30, alive={"s1"}) == 1  # s2's session ended
    assert spool.sweep(T0 + 61) == 2
    assert len(spool) == 0 and spool.total_bytes == 0
    assert list((tmp_path / "spool").iterdir()) == []


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
