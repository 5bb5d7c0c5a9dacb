"""Push with data (cmd 122) against pull (newsync): the same items, in the same order,
exactly once, whatever the interleaving of commits, pushes the server leaves out, pulls
(the client's own, failed ones, ones whose key the server refuses) and the replies and
pushes on the one ordered link. A push that comes during a pull is held and applied
when the pull ends (PushInbox), so it costs no pull of its own. A model server over
the real SyncDriver, PushInbox, SyncKey and the server's response encoder."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import MMRet
from wxnet.proto.longlink import SERVER, LongLinkConnection, SyncPush
from wxnet.proto.syncdriver import (
    MAX_HELD_BYTES,
    Gap,
    Held,
    KeyReset,
    Page,
    PushInbox,
    SyncDriver,
    apply_push,
)
from wxnet.proto.synckey import SyncKey
from wxnet.sync.items import newsync_response

KEYS = (2, 3)  # the message and contact logs
WINDOW = 3  # items per newsync page: small, so pulls take several pages


def _body(key: int, seq: int) -> bytes:
    return pb.CmdItem(cmd_id=5, add_msg=pb.AddMsg(content=f"{key}:{seq}")).SerializeToString()


@dataclass
class ModelServer:
    logs: dict[int, list[bytes]] = field(default_factory=lambda: {k: [] for k in KEYS})
    refuse_next: bool = False  # the next newsync's key cannot be served (-1001)

    def commit(self, counts: list[tuple[int, int]]) -> bytes:
        """Append items; return the push of what was appended (a NewSyncResponse)."""
        items = []
        for key, n in counts:
            for _ in range(n):
                seq = len(self.logs[key]) + 1
                self.logs[key].append(_body(key, seq))
                items.append((key, seq, _body(key, seq)))
        return newsync_response(items, b"", 0)

    def serve(self, req: pb.NewSyncRequest | pb.NewInitRequest) -> bytes:
        if isinstance(req, pb.NewInitRequest):  # the model's snapshot: every item
            items = [(k, i + 1, b) for k in KEYS for i, b in enumerate(self.logs[k])]
            head = SyncKey.of({k: len(self.logs[k]) for k in KEYS}).to_bytes()
            resp = pb.NewInitResponse(current_synckey=head)
            resp.cmd_list.extend(pb.CmdItem.FromString(b) for _k, _s, b in items)
            for item, (k, seq, _b) in zip(resp.cmd_list, items, strict=True):
                item.key, item.seq = k, seq
            return resp.SerializeToString()
        if self.refuse_next:
            self.refuse_next = False
            bad = pb.BaseResponse(ret=MMRet.ERR_SYNCKEY_INVALID, err_msg="key from before")
            return pb.NewSyncResponse(base=bad).SerializeToString()
        key = SyncKey.from_bytes(req.key_buf)
        vec = {k: key.get(k) for k in KEYS}
        out: list[tuple[int, int, bytes]] = []
        more = 0
        for k in KEYS:
            for seq in range(vec[k] + 1, len(self.logs[k]) + 1):
                if len(out) == WINDOW:
                    more |= 1
                    break
                out.append((k, seq, self.logs[k][seq - 1]))
                vec[k] = seq
        return newsync_response(out, SyncKey.of(vec).to_bytes(), more)


Request = pb.NewSyncRequest | pb.NewInitRequest


@dataclass
class ModelClient:
    """A client as the SDK and the load generator are: pushes through a PushInbox, pulls
    with a SyncDriver; ``wanted``: something asked for a pull (a notify, a gap, a drop)."""

    takes_pushes: bool
    hold_bytes: int = MAX_HELD_BYTES
    key: bytes = field(default_factory=lambda: SyncKey.of({k: 0 for k in KEYS}).to_bytes())
    got: list[tuple[int, int]] = field(default_factory=list)
    driver: SyncDriver | None = None
    wanted: bool = False
    pulls: int = 0  # pulls started
    wanted_pulls: int = 0  # of those, pulls that a push, notify or drop asked for
    serial: int = 0  # the pull under way; replies to an older (failed) one are ignored
    inbox: PushInbox = field(init=False)

    def __post_init__(self) -> None:
        self.inbox = PushInbox(self.hold_bytes)

    def on_push(self, body: bytes) -> None:
        if not self.takes_pushes:
            self.wanted = True  # a notify
            return
        got = self.inbox.push(self.key, pb.NewSyncResponse.FromString(body), len(body))
        if not isinstance(got, Held):
            self._took(got)

    def _took(self, got: Page | Gap) -> None:
        if isinstance(got, Gap):
            self.wanted = True
        else:
            self._take(got)

    def _take(self, page: Page) -> None:
        self.got += [(i.key, i.seq) for i in page.items]
        self.key = page.key

    def start_pull(self, own: bool) -> tuple[int, Request] | None:
        """A pull: the client's own (``own``: a user, a timer), or one it wants."""
        if self.driver is not None or not (own or self.wanted):
            return None
        if not own:
            self.wanted_pulls += 1
        self.wanted = False
        self.pulls += 1
        self.serial += 1
        self.driver = SyncDriver(self.key, commit=False)
        self.inbox.begin()
        return self._next()

    def _next(self) -> tuple[int, Request] | None:
        assert self.driver is not None
        call = self.driver.next_request()
        if call is None:
            self.key = self.driver.key
            self.driver = None
            for got in self.inbox.end(self.key):
                self._took(got)
            return None
        assert isinstance(call.request, pb.NewSyncRequest | pb.NewInitRequest)
        return self.serial, call.request

    def fail(self) -> None:
        """The pull under way fails (the link went down): the client tries again."""
        if self.driver is None:
            return
        self.driver = None
        self.inbox.abort()
        self.wanted = True

    def on_reply(self, serial: int, req: Request, body: bytes) -> tuple[int, Request] | None:
        if serial != self.serial or self.driver is None:
            return None  # the reply to a pull that failed
        resp: pb.NewSyncResponse | pb.NewInitResponse
        if isinstance(req, pb.NewInitRequest):
            resp = pb.NewInitResponse.FromString(body)
        else:
            resp = pb.NewSyncResponse.FromString(body)
        ev = self.driver.receive(resp)
        if isinstance(ev, KeyReset):
            self.got, self.key = [], b""  # drop local sync state: the snapshot brings it all
            self.inbox.reset()
        else:
            assert isinstance(ev, Page)
            self._take(ev)
        return self._next()


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("commit"),
            st.lists(st.tuples(st.sampled_from(KEYS), st.integers(1, 3)), min_size=1, max_size=2),
            st.booleans(),  # the server leaves this push out (a big item, a notify only)
        ),
        st.tuples(st.just("deliver")),
        st.tuples(st.just("serve")),
        st.tuples(st.just("pull")),
        st.tuples(st.just("fail")),
        st.tuples(st.just("refuse")),
    ),
    max_size=60,
)


def _run(
    script: list[tuple[object, ...]], takes_pushes: bool, hold_bytes: int = MAX_HELD_BYTES
) -> tuple[ModelServer, ModelClient]:
    server, client = ModelServer(), ModelClient(takes_pushes, hold_bytes)
    link: deque[tuple[str, int, Request | None, bytes]] = deque()  # server -> client
    inbox: deque[tuple[int, Request]] = deque()  # client -> server
    conn = LongLinkConnection(SERVER)

    def send(call: tuple[int, Request] | None) -> None:
        if call is not None:
            inbox.append(call)

    def serve() -> None:
        serial, req = inbox.popleft()
        link.append(("reply", serial, req, server.serve(req)))

    def deliver() -> None:
        kind, serial, req, body = link.popleft()
        if kind == "notify":
            client.wanted = True
        elif kind == "push":
            client.on_push(body)
        else:
            assert req is not None
            send(client.on_reply(serial, req, body))

    for op in script:
        if op[0] == "commit":
            counts, left_out = op[1], op[2]
            assert isinstance(counts, list)
            push = server.commit(counts)
            assert conn.push_data(push).endswith(push)  # on the wire: header + body
            link.append(("notify", 0, None, b"") if left_out else ("push", 0, None, push))
        elif op[0] == "deliver" and link:
            deliver()
        elif op[0] == "serve" and inbox:
            serve()
        elif op[0] == "pull":
            send(client.start_pull(own=True))
        elif op[0] == "fail":
            client.fail()
        elif op[0] == "refuse":
            server.refuse_next = True
    # quiesce: everything in flight arrives, then the client syncs until it wants nothing
    server.refuse_next = False
    for _ in range(1000):
        if inbox:
            serve()
        elif link:
            deliver()
        else:
            call = client.start_pull(own=False)
            if call is None:
                break
            inbox.append(call)
    return server, client


def _expected(server: ModelServer) -> dict[int, list[int]]:
    return {k: list(range(1, len(server.logs[k]) + 1)) for k in KEYS}


def _per_log(got: list[tuple[int, int]]) -> dict[int, list[int]]:
    return {k: [s for kk, s in got if kk == k] for k in KEYS}


def _disturbed(script: list[tuple[object, ...]]) -> bool:
    """The script leaves a push out, fails a pull or refuses a key."""
    return any(op[0] in ("fail", "refuse") or (op[0] == "commit" and op[2]) for op in script)


@settings(max_examples=400)
@given(ops, st.sampled_from([MAX_HELD_BYTES, 40, 0]))
def test_push_and_pull_deliver_the_same_items_in_order_exactly_once(
    script: list[tuple[object, ...]], hold_bytes: int
) -> None:
    server, pushed = _run(script, takes_pushes=True, hold_bytes=hold_bytes)
    _, pulled = _run(script, takes_pushes=False)
    assert _per_log(pushed.got) == _expected(server) == _per_log(pulled.got)
    assert len(pushed.got) == len(set(pushed.got))
    assert pushed.key == pulled.key
    assert pushed.driver is None and pushed.inbox.held == 0 and not pushed.inbox.pulling
    if not _disturbed(script) and not pushed.inbox.dropped:
        # every push was taken at once or after the pull it came in: none asked for one
        assert pushed.wanted_pulls == 0, pushed


@settings(max_examples=200)
@given(ops)
def test_with_nothing_held_a_push_during_a_pull_costs_one_more_pull(
    script: list[tuple[object, ...]],
) -> None:
    """hold_bytes = 0 is the old rule (a push during a pull is a notify): still every
    item, and a dropped push costs a pull of its own, which the held rule never needs
    (the first property), so that property is not one that holds whatever the rule."""
    server, pushed = _run(script, takes_pushes=True, hold_bytes=0)
    assert _per_log(pushed.got) == _expected(server)
    if pushed.inbox.dropped and not _disturbed(script):
        assert pushed.wanted_pulls >= 1


def test_a_push_during_a_pull_is_held_and_taken_when_it_ends() -> None:
    server, client = ModelServer(), ModelClient(takes_pushes=True)
    server.commit([(2, 1)])  # before the pull, no push (the client was away)
    call = client.start_pull(own=True)
    assert call is not None
    serial, req = call
    reply = server.serve(req)  # the pull sees item 1
    client.on_push(server.commit([(2, 1), (3, 1)]))  # during it: held
    client.on_push(server.commit([(2, 1)]))
    assert client.inbox.held == 2 and client.got == []
    assert client.on_reply(serial, req, reply) is None  # the last page: the pull ends
    assert client.got == [(2, 1), (2, 2), (3, 1), (2, 3)]
    assert client.pulls == 1 and not client.wanted
    assert SyncKey.from_bytes(client.key).as_dict() == {2: 3, 3: 1}


def test_held_items_the_pull_already_brought_are_dropped() -> None:
    inbox = PushInbox()
    server = ModelServer()
    inbox.begin()
    p1 = pb.NewSyncResponse.FromString(server.commit([(2, 2)]))
    p2 = pb.NewSyncResponse.FromString(server.commit([(2, 1), (3, 1)]))
    assert inbox.push(b"", p1) == Held(1)
    assert inbox.push(b"", p2) == Held(2)
    # the pull reached 2:2 (both of p1, not p2)
    (page,) = inbox.end(SyncKey.of({2: 2, 3: 0}).to_bytes())
    assert isinstance(page, Page)
    assert [(i.key, i.seq) for i in page.items] == [(2, 3), (3, 1)]
    assert SyncKey.from_bytes(page.key).as_dict() == {2: 3, 3: 1}
    assert inbox.end(page.key) == []  # nothing is held twice


def test_a_held_gap_takes_what_comes_before_it_and_asks_for_a_pull() -> None:
    inbox = PushInbox()
    server = ModelServer()
    inbox.begin()
    inbox.push(b"", pb.NewSyncResponse.FromString(server.commit([(2, 1)])))
    server.commit([(2, 1)])  # left out (a big item)
    inbox.push(b"", pb.NewSyncResponse.FromString(server.commit([(2, 1)])))
    inbox.push(b"", pb.NewSyncResponse.FromString(server.commit([(2, 1)])))
    page, gap = inbox.end(SyncKey.of({2: 0, 3: 0}).to_bytes())
    assert isinstance(page, Page) and [i.seq for i in page.items] == [1]
    assert gap == Gap(2, 1, 3)
    assert inbox.held == 0


def test_the_bound_a_failed_pull_and_a_refused_key_drop_what_is_held() -> None:
    server = ModelServer()
    body = server.commit([(2, 1)])
    push = pb.NewSyncResponse.FromString(body)
    start = SyncKey.of({2: 0, 3: 0}).to_bytes()
    small = PushInbox(max_bytes=len(body) + 1)
    small.begin()
    assert small.push(start, push, len(body)) == Held(1)
    assert small.push(start, push, len(body)) == Held(0)  # over the bound: dropped
    assert small.push(start, push, len(body)) == Held(0)  # the pull goes on once more
    assert small.dropped == 1 and small.held == 0
    assert small.end(start) == [Gap(0, 0, 0)]
    assert small.end(start) == []
    assert isinstance(small.push(start, push), Page)  # no pull: applied at once

    inbox = PushInbox()
    inbox.begin()
    inbox.push(start, push)
    assert inbox.abort() is True and inbox.held == 0 and not inbox.pulling
    inbox.begin()
    assert inbox.abort() is False  # nothing was held: no pull needed for it
    inbox.begin()
    inbox.push(start, push)
    inbox.reset()  # -1001: the held pushes are of the old key's history
    assert inbox.held == 0
    assert inbox.end(start) == [Gap(0, 0, 0)]
    with pytest.raises(ValueError):
        PushInbox(-1)


def test_a_push_that_follows_the_key_needs_no_pull() -> None:
    server, client = ModelServer(), ModelClient(takes_pushes=True)
    client.on_push(server.commit([(2, 2), (3, 1)]))
    client.on_push(server.commit([(2, 1)]))
    assert client.got == [(2, 1), (2, 2), (3, 1), (2, 3)]
    assert not client.wanted and client.pulls == 0
    assert SyncKey.from_bytes(client.key).as_dict() == {2: 3, 3: 1}


def test_a_gap_or_no_key_takes_nothing() -> None:
    server = ModelServer()
    server.commit([(2, 1)])  # never pushed
    push = pb.NewSyncResponse.FromString(server.commit([(2, 1)]))
    key = SyncKey.of({2: 0, 3: 0}).to_bytes()
    assert apply_push(key, push) == Gap(2, 0, 2)
    assert isinstance(apply_push(b"", push), Gap)
    stale = apply_push(SyncKey.of({2: 5, 3: 0}).to_bytes(), push)
    assert isinstance(stale, Page) and not stale.items


def test_the_client_side_reads_cmd_122_as_a_sync_push() -> None:
    from wxnet.proto.longlink import CLIENT

    srv, cli = LongLinkConnection(SERVER), LongLinkConnection(CLIENT)
    body = newsync_response([(2, 1, _body(2, 1))], b"", 0)
    assert cli.receive_data(srv.push_data(body)) == [SyncPush(body)]
