"""SyncDriver: responses in, requests and pages out, against a small fake server."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.enums import Selector
from wxnet.proto.errors import LocalProtocolError, MMError, MMRet, RemoteProtocolError
from wxnet.proto.syncdriver import (
    Committed,
    KeyReset,
    Page,
    SyncCall,
    SyncDriver,
    SyncEvent,
    SyncState,
    drive,
)


def key(n: int) -> bytes:
    return pb.SyncKey(list=[pb.KeyVal(key=2, val=n)]).SerializeToString()


def val(k: bytes) -> int:
    return pb.SyncKey.FromString(k).list[0].val if k else 0


class FakeServer:
    """A message log of ``n`` items served ``window`` at a time; keys beyond the head are
    invalid (-1001), as the real server's."""

    def __init__(self, n: int, window: int, snapshot: int = 3) -> None:
        self.n, self.window, self.snapshot = n, window, snapshot
        self.committed = 0
        self.calls: list[str] = []

    def item(self, i: int) -> pb.CmdItem:
        return pb.CmdItem(cmd_id=5, key=2, seq=i, add_msg=pb.AddMsg(msg_id=i))

    def handle(self, call: SyncCall) -> Message:
        self.calls.append(call.cgi.name)
        req = call.request
        if isinstance(req, pb.NewInitRequest):
            first = max(1, self.n - self.snapshot + 1)
            items = [self.item(i) for i in range(first, self.n + 1)]
            return pb.NewInitResponse(cmd_list=items, current_synckey=key(self.n))
        if isinstance(req, pb.NewSyncRequest):
            after = val(req.key_buf)
            if after > self.n:
                return pb.NewSyncResponse(
                    base=pb.BaseResponse(ret=MMRet.ERR_SYNCKEY_INVALID, err_msg="bad key")
                )
            last = min(self.n, after + self.window)
            items = [self.item(i) for i in range(after + 1, last + 1)]
            return pb.NewSyncResponse(
                cmd_list=items,
                key_buf=key(last),
                continue_flag=int(Selector.MSG) if last < self.n else 0,
            )
        assert isinstance(req, pb.SyncDoneRequest)
        self.committed = val(req.key_buf)
        return pb.SyncDoneResponse()


def run(driver: SyncDriver, server: FakeServer) -> list[SyncEvent]:
    events: list[SyncEvent] = []
    while (call := driver.next_request()) is not None:
        events.append(driver.receive(server.handle(call)))
    return events


def ids(events: list[SyncEvent]) -> list[int]:
    return [it.add_msg.msg_id for e in events if isinstance(e, Page) for it in e.items]


@settings(deadline=None)
@given(st.integers(0, 60), st.integers(1, 10), st.integers(0, 60), st.integers(1, 20))
def test_every_item_once_in_order_then_commit(n: int, window: int, start: int, pages: int) -> None:
    server = FakeServer(n, window)
    start = min(start, n)
    driver = SyncDriver(key(start) if start else b"", max_pages=pages)
    events = run(driver, server)
    assert driver.done
    got = ids(events)
    if start:
        expected = list(range(start + 1, min(n, start + window * pages) + 1))
        assert got == expected
        assert driver.more == (start + window * pages < n)
    else:
        assert got == list(range(max(1, n - 2), n + 1))
        assert not driver.more
    moved = val(driver.key) != start or not start
    assert isinstance(events[-1], Committed) == moved
    assert server.committed == (val(driver.key) if moved else 0)


def test_an_invalid_key_resets_to_newinit_once() -> None:
    server = FakeServer(10, 4)
    driver = SyncDriver(key(99), base=pb.BaseRequest(uin=7))
    events = run(driver, server)
    assert isinstance(events[0], KeyReset) and "bad key" in events[0].reason
    assert isinstance(events[1], Page) and events[1].init
    assert ids(events) == [8, 9, 10]
    assert server.calls == ["newsync", "newinit", "syncdone"]
    assert server.committed == 10 and driver.resets == 1


def test_a_second_invalid_key_and_other_errors_raise() -> None:
    driver = SyncDriver(key(5))
    driver.next_request()
    driver.receive_error(MMError(MMRet.ERR_SYNCKEY_INVALID, "x"))
    assert driver.state is SyncState.INIT
    driver.next_request()
    with pytest.raises(MMError) as exc:
        driver.receive_error(MMError(MMRet.ERR_SYNCKEY_INVALID, "again"))
    assert exc.value.code is MMRet.ERR_SYNCKEY_INVALID and driver.done
    driver = SyncDriver(key(5))
    driver.next_request()
    with pytest.raises(MMError) as exc:
        driver.receive(pb.NewSyncResponse(base=pb.BaseResponse(ret=-13)))
    assert exc.value.code is MMRet.ERR_SESSIONTIMEOUT


def test_misuse_is_a_local_protocol_error() -> None:
    driver = SyncDriver()
    with pytest.raises(LocalProtocolError):
        driver.receive(pb.NewInitResponse())
    call = driver.next_request()
    assert call is not None and call.cgi.name == "newinit"
    with pytest.raises(LocalProtocolError, match="still waiting"):
        driver.next_request()
    with pytest.raises(LocalProtocolError, match="NewInitResponse"):
        driver.receive(pb.NewSyncResponse())


def test_continue_without_progress_is_a_remote_protocol_error() -> None:
    driver = SyncDriver(key(3))
    driver.next_request()
    with pytest.raises(RemoteProtocolError, match="did not move"):
        driver.receive(pb.NewSyncResponse(key_buf=key(3), continue_flag=2))


def test_requests_carry_base_selector_and_scene() -> None:
    base = pb.BaseRequest(session_key="s", uin=9, device_id="d")
    driver = SyncDriver(key(1), base=base, selector=Selector.MSG, scene=7)
    call = driver.next_request()
    assert call is not None
    req = call.request
    assert isinstance(req, pb.NewSyncRequest)
    assert req.base == base and req.selector == 2 and req.scene == 7 and req.key_buf == key(1)


async def test_drive_over_an_async_transport() -> None:
    server = FakeServer(7, 3)

    async def call(c: SyncCall) -> Message:
        resp = server.handle(c)
        err = MMError.from_base(resp.base)  # type: ignore[attr-defined]
        if err is not None:
            raise err
        return resp

    events = [e async for e in drive(SyncDriver(key(100)), call)]
    assert isinstance(events[0], KeyReset)
    assert ids(events) == [5, 6, 7]
