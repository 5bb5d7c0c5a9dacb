"""The dispatcher's two paths for one request: ``begin`` (a send or a syncdone served
from the engine's caches, answered by a callback) and ``handle`` (the coroutine path,
the short link's) give the same responses, errors and metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.sync.test_engine import Clock, login, make_engine, text
from wxnet.proto import commands as C
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.synckey import SyncKey
from wxnet.server.dispatch import Context, Dispatcher
from wxnet.server.metrics import Metrics
from wxnet.server.notify import Notifier
from wxnet.sync.engine import Engine, Session

SEND = C.BY_NAME["newsendmsg"]
DONE = C.BY_NAME["syncdone"]


async def by_begin(d: Dispatcher, cgi: C.CGI, body: bytes) -> tuple[bytes, bool]:
    """The response through ``begin``, and whether it came without a coroutine."""
    fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    out = d.begin(cgi, body, Context("10.0.0.1"), fut.set_result)
    if out is None:
        assert not fut.done()  # never answered from inside begin
        return await fut, True
    if isinstance(out, bytes):
        return out, True
    return await out, False


def send_body(s: Session, msgs: list[pb.MicroMsg], uin: int | None = None) -> bytes:
    base = pb.BaseRequest(session_key=s.sid, uin=s.uin if uin is None else uin)
    return pb.SendMsgRequest(base=base, list=msgs).SerializeToString()


def view(cgi: C.CGI, out: bytes, tag: str) -> object:
    """A response without what differs between two sends (ids, times, the cid's tag)."""
    if cgi is not SEND:
        return out
    r = pb.SendMsgResponse.FromString(out)
    return (
        r.base.ret,
        r.base.err_msg,
        [(x.ret, x.err_msg, x.client_msg_id.removeprefix(tag), x.to_user) for x in r.list],
        [bool(x.msg_id) for x in r.list],
    )


def metrics_of(d: Dispatcher) -> object:
    m = d.metrics
    return (dict(m.requests.values), dict(m.errors.values), dict(m.messages.values))


async def test_begin_and_handle_agree(tmp_path: Path) -> None:
    e: Engine = await make_engine(tmp_path, Clock(), contacts="open", max_send_batch=3)
    try:
        a = await login(e, "alice")
        await e.add_contact(a, "bob")
        await e.store.flush()
        key = SyncKey(((2, await e.store.head(a.uin, 2, fresh=True)),)).to_bytes()
        base = pb.BaseRequest(session_key=a.sid, uin=a.uin)
        cases: list[tuple[C.CGI, object]] = [
            (SEND, [text("bob", "hi", "1"), text("bob", "again", "1")]),  # a repeat
            (SEND, [text("bob", "hi", "2"), text("carol", "not a contact", "3")]),
            (SEND, [text("bob", "x", "")]),  # every message refused
            (SEND, [text("bob", "x", str(i)) for i in range(4)]),  # over the batch cap
            (SEND, [text("nobody", "unknown", "4")]),  # a name never cached: the slow path
            (SEND, ("wrong uin", [text("bob", "hi", "5")])),
            (DONE, pb.SyncDoneRequest(base=base, key_buf=key)),
            (DONE, pb.SyncDoneRequest(base=base, key_buf=SyncKey(((2, 10**9),)).to_bytes())),
            (DONE, pb.SyncDoneRequest(base=base, key_buf=b"\xff\xff")),
        ]
        for cgi, what in cases:
            answers = []
            for tag, fast in (("slow-", False), ("fast-", True)):
                d = Dispatcher(e, Notifier(), Metrics(), 25.0)
                if cgi is SEND:
                    if isinstance(what, tuple):
                        msgs, uin = what[1], a.uin + 1
                    else:
                        assert isinstance(what, list)
                        msgs, uin = what, a.uin
                    for m in msgs:
                        if m.client_msg_id:
                            m.client_msg_id = tag + m.client_msg_id.removeprefix("slow-")
                    body = send_body(a, msgs, uin)
                else:
                    assert isinstance(what, pb.SyncDoneRequest)
                    body = what.SerializeToString()
                if fast:
                    out, _ = await by_begin(d, cgi, body)
                else:
                    out = await d.handle(cgi, body, Context("10.0.0.1"))
                answers.append((view(cgi, out, tag), metrics_of(d)))
            assert answers[0] == answers[1], (cgi.name, what)
        # the cached cases did go without a coroutine, the uncached one did not
        d = Dispatcher(e, Notifier(), Metrics(), 25.0)
        assert (await by_begin(d, SEND, send_body(a, [text("bob", "hi", "6")])))[1]
        assert not (await by_begin(d, SEND, send_body(a, [text("nobody", "x", "7")])))[1]
        done = pb.SyncDoneRequest(base=base, key_buf=key).SerializeToString()
        assert (await by_begin(d, DONE, done))[1]
    finally:
        e.close()
