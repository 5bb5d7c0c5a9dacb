"""Push with data (cmd 122) against pull (newsync): the same items, in the same order,
exactly once, whatever the interleaving of commits, pushes the server leaves out, pulls
and the replies and pushes on the one ordered link (a model server over the real
SyncDriver, apply_push, SyncKey and the server's response encoder)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.longlink import SERVER, LongLinkConnection, SyncPush
from wxnet.proto.syncdriver import Gap, Page, SyncDriver, apply_push
from wxnet.proto.synckey import SyncKey
from wxnet.sync.items import newsync_response

KEYS = (2, 3)  # the message and contact logs
WINDOW = 3  # items per newsync page: small, so pulls take several pages


def _body(key: int, seq: int) -> bytes:
    return pb.CmdItem(cmd_id=5, add_msg=pb.AddMsg(content=f"{key}:{seq}")).SerializeToString()


@dataclass
class ModelServer:
    logs: dict[int, list[bytes]] = field(default_factory=lambda: {k: [] for k in KEYS})

    def commit(self, counts: list[tuple[int, int]]) -> bytes:
        """Append items; return the push of what was appended (a NewSyncResponse)."""
        items = []
        for key, n in counts:
            for _ in range(n):
                seq = len(self.logs[key]) + 1
                self.logs[key].append(_body(key, seq))
                items.append((key, seq, _body(key, seq)))
        return newsync_response(items, b"", 0)

    def newsync(self, req: pb.NewSyncRequest) -> bytes:
        key = SyncKey.from_bytes(req.key_buf)
        vec = {k: key.get(k) for k in KEYS}
        items: list[tuple[int, int, bytes]] = []
        more = 0
        for k in KEYS:
            for seq in range(vec[k] + 1, len(self.logs[k]) + 1):
                if len(items) == WINDOW:
                    more |= 1
                    break
                items.append((k, seq, self.logs[k][seq - 1]))
                vec[k] = seq
        return newsync_response(items, SyncKey.of(vec).to_bytes(), more)


@dataclass
class ModelClient:
    takes_pushes: bool
    key: bytes = field(default_factory=lambda: SyncKey.of({k: 0 for k in KEYS}).to_bytes())
    got: list[tuple[int, int]] = field(default_factory=list)
    driver: SyncDriver | None = None
    wanted: bool = False
    pulls: int = 0

    def on_push(self, body: bytes) -> None:
        if not self.takes_pushes or self.driver is not None:
            self.wanted = True  # a notify, or a push during our own pull: sync again
            return
        resp = pb.NewSyncResponse.FromString(body)
        got = apply_push(self.key, resp)
        if isinstance(got, Gap):
            self.wanted = True
            return
        self._take(got)

    def _take(self, page: Page) -> None:
        self.got += [(i.key, i.seq) for i in page.items]
        self.key = page.key

    def start_pull(self) -> pb.NewSyncRequest | None:
        if self.driver is not None or not self.wanted:
            return None
        self.wanted = False
        self.pulls += 1
        self.driver = SyncDriver(self.key, commit=False)
        return self._next()

    def _next(self) -> pb.NewSyncRequest | None:
        assert self.driver is not None
        call = self.driver.next_request()
        if call is None:
            self.driver = None
            return None
        assert isinstance(call.request, pb.NewSyncRequest)
        return call.request

    def on_reply(self, body: bytes) -> pb.NewSyncRequest | None:
        assert self.driver is not None
        ev = self.driver.receive(pb.NewSyncResponse.FromString(body))
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
    ),
    max_size=60,
)


def _run(script: list[tuple[object, ...]], takes_pushes: bool) -> tuple[ModelServer, ModelClient]:
    server, client = ModelServer(), ModelClient(takes_pushes)
    link: deque[tuple[str, bytes]] = deque()  # server -> client, in order
    inbox: deque[pb.NewSyncRequest] = deque()  # client -> server
    conn = LongLinkConnection(SERVER)

    def deliver() -> None:
        kind, body = link.popleft()
        if kind == "push":
            client.on_push(body)
        else:
            req = client.on_reply(body)
            if req is not None:
                inbox.append(req)

    for op in script:
        if op[0] == "commit":
            counts, left_out = op[1], op[2]
            assert isinstance(counts, list)
            push = server.commit(counts)
            assert conn.push_data(push).endswith(push)  # on the wire: header + body
            link.append(("notify", b"") if left_out else ("push", push))
        elif op[0] == "deliver" and link:
            kind = link[0][0]
            if kind == "notify":
                link.popleft()
                client.wanted = True
            else:
                deliver()
        elif op[0] == "serve" and inbox:
            link.append(("reply", server.newsync(inbox.popleft())))
        elif op[0] == "pull":
            req = client.start_pull()
            if req is not None:
                inbox.append(req)
    # quiesce: everything in flight arrives, then the client syncs until it wants nothing
    for _ in range(1000):
        if inbox:
            link.append(("reply", server.newsync(inbox.popleft())))
        elif link:
            if link[0][0] == "notify":
                link.popleft()
                client.wanted = True
            else:
                deliver()
        else:
            req = client.start_pull()
            if req is None:
                break
            inbox.append(req)
    return server, client


def _expected(server: ModelServer) -> dict[int, list[int]]:
    return {k: list(range(1, len(server.logs[k]) + 1)) for k in KEYS}


def _per_log(got: list[tuple[int, int]]) -> dict[int, list[int]]:
    return {k: [s for kk, s in got if kk == k] for k in KEYS}


@settings(max_examples=300)
@given(ops)
def test_push_and_pull_deliver_the_same_items_in_order_exactly_once(
    script: list[tuple[object, ...]],
) -> None:
    server, pushed = _run(script, takes_pushes=True)
    _, pulled = _run(script, takes_pushes=False)
    assert _per_log(pushed.got) == _expected(server) == _per_log(pulled.got)
    assert len(pushed.got) == len(set(pushed.got))
    assert pushed.key == pulled.key


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
