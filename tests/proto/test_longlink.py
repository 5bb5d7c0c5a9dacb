"""LongLinkConnection: bytes in, events out, through an in-memory client/server pair."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wxnet.proto import commands as C
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import LocalProtocolError, MMRet, RemoteProtocolError, WxnetError
from wxnet.proto.framing import MAX_PACKET, encode_packet
from wxnet.proto.longlink import (
    CLIENT,
    SERVER,
    Event,
    LongLinkConnection,
    Noop,
    NoopReply,
    Notify,
    Push,
    RemoteError,
    Reply,
    Request,
    SignalKeep,
    SyncPush,
    UnknownCommand,
    notify_packet,
    push_packet,
)

SYNC = C.BY_NAME["newsync"]
IDENTIFY = C.BY_NAME["identify"]
SEND = C.BY_NAME["newsendmsg"]


def pair() -> tuple[LongLinkConnection, LongLinkConnection]:
    return LongLinkConnection(CLIENT), LongLinkConnection(SERVER)


def split_feed(conn: LongLinkConnection, data: bytes, cuts: list[int]) -> list[Event]:
    events: list[Event] = []
    last = 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        events += conn.receive_data(data[last:cut])
        last = cut
    return events


# ---- golden bytes ---------------------------------------------------------------------------


def test_golden_noop_identify_notify_and_reply() -> None:
    client, server = pair()
    noop = client.send_noop()
    assert noop == bytes.fromhex("00000010 0010 0001 00000006 ffffffff")
    seq, ident = client.send_request(IDENTIFY, b"")
    assert seq == 0xFFFFFFFE
    assert ident == bytes.fromhex("00000010 0010 0001 000000cd fffffffe")
    seq, first = client.send_request(SYNC, b"\x0a\x00")
    assert seq == 1 and first == bytes.fromhex("00000012 0010 0001 00000079 00000001 0a00")
    assert server.receive_data(noop + ident + first) == [
        Noop(0xFFFFFFFF),
        Request(IDENTIFY, 0xFFFFFFFE, b""),
        Request(SYNC, 1, b"\x0a\x00"),
    ]
    assert server.noop_reply(0xFFFFFFFF) == bytes.fromhex("00000010 0010 0001 3b9aca06 ffffffff")
    assert server.notify(0x2) == bytes.fromhex("00000014 0010 0001 00000018 00000000 00000002")
    assert server.reply(1, b"") == bytes.fromhex("00000010 0010 0001 3b9aca79 00000001")


def test_seed_noop_with_an_ordinary_seq_is_accepted() -> None:
    server = LongLinkConnection(SERVER)
    seed = bytes.fromhex("00 00 00 10 00 10 00 01 00 00 00 06 00 00 00 0f")
    assert server.receive_data(seed) == [Noop(15)]
    assert server.noop_reply(15) == encode_packet(1_000_000_006, 15)


def test_round_trip_through_the_pair() -> None:
    client, server = pair()
    seq, data = client.send_request(SEND, pb.SendMsgRequest())
    (req,) = server.receive_data(data)
    assert isinstance(req, Request) and req.cgi is SEND and req.seq == seq
    assert server.in_flight == 1
    out = server.reply(seq, b"xyz") + server.notify(0x42)
    assert client.receive_data(out) == [Reply(seq, SEND.cmd, b"xyz", SEND), Notify(0x42)]
    assert client.in_flight == server.in_flight == 0


# ---- the server's seq rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cmd", "seq", "why"),
    [
        (121, 0, "seq 0"),
        (205, 7, "identify must use"),
        (121, 0xFFFFFFFE, "reserved"),
        (121, 0xFFFFFFFF, "reserved"),
        (121, 0xFFFFFFF3, "reserved"),
        (6, 0xFFFFFFFE, "reserved"),
    ],
)
def test_server_refuses_seqs_against_the_rules(cmd: int, seq: int, why: str) -> None:
    server = LongLinkConnection(SERVER)
    with pytest.raises(RemoteProtocolError, match=why):
        server.receive_data(encode_packet(cmd, seq))
    assert server.closed
    with pytest.raises(LocalProtocolError):
        server.receive_data(b"")
    body = server.protocol_error(MMRet.ERR_BAD_REQUEST, "bad seq")
    client = LongLinkConnection(CLIENT)
    assert client.receive_data(body) == [RemoteError(MMRet.ERR_BAD_REQUEST, "bad seq")]
    assert client.closed


def test_server_refuses_a_seq_already_in_flight_and_frees_it_on_reply() -> None:
    server = LongLinkConnection(SERVER)
    server.receive_data(encode_packet(121, 5))
    server.reply(5, b"")
    server.receive_data(encode_packet(121, 5))  # answered: free again
    with pytest.raises(RemoteProtocolError, match="in flight"):
        server.receive_data(encode_packet(522, 5))


def test_server_side_events_for_unknown_noop_and_signal_keep() -> None:
    server = LongLinkConnection(SERVER)
    events = server.receive_data(
        encode_packet(4242, 3) + encode_packet(243, 0xFFFFFFFD) + encode_packet(6, 0xFFFFFFFF)
    )
    assert events == [UnknownCommand(4242, 3), SignalKeep(0xFFFFFFFD), Noop(0xFFFFFFFF)]
    reply = server.reply_error(3, MMRet.ERR_UNKNOWN_CMD, "unknown cmd 4242")
    assert reply[8:12] == (1_000_004_242).to_bytes(4, "big")
    assert pb.LogoutResponse.FromString(reply[16:]).base.ret == MMRet.ERR_UNKNOWN_CMD


def test_illegal_sends_raise_local_protocol_error() -> None:
    client, server = pair()
    with pytest.raises(LocalProtocolError, match="no request"):
        server.reply(9, b"")
    server.receive_data(encode_packet(121, 9))
    server.reply(9, b"")
    with pytest.raises(LocalProtocolError, match="no request"):
        server.reply(9, b"")  # only once
    with pytest.raises(LocalProtocolError, match="selector"):
        server.notify(0)
    with pytest.raises(LocalProtocolError, match="server side"):
        client.reply(1, b"")
    with pytest.raises(LocalProtocolError, match="client side"):
        server.send_request(SYNC, b"")
    client.send_request(IDENTIFY, b"")
    with pytest.raises(LocalProtocolError, match="identify is already"):
        client.send_request(IDENTIFY, b"")
    with pytest.raises(LocalProtocolError, match="limit"):
        client.send_request(SEND, bytes(1 << 20))
    with pytest.raises(LocalProtocolError):
        client.send_raw(121, 0)
    assert issubclass(LocalProtocolError, WxnetError)


# ---- the client's view -------------------------------------------------------------------


def test_client_refuses_replies_it_did_not_ask_for() -> None:
    client = LongLinkConnection(CLIENT)
    with pytest.raises(RemoteProtocolError, match="not in flight"):
        client.receive_data(encode_packet(1_000_000_121, 4))
    client = LongLinkConnection(CLIENT)
    seq, _ = client.send_request(SYNC, b"")
    with pytest.raises(RemoteProtocolError, match="reply cmd"):
        client.receive_data(encode_packet(1_000_000_522, seq))
    client = LongLinkConnection(CLIENT)
    with pytest.raises(RemoteProtocolError, match="seq 0"):
        client.receive_data(encode_packet(1_000_000_121, 0))


def test_client_drops_a_late_reply_to_a_cancelled_request() -> None:
    client = LongLinkConnection(CLIENT)
    seq, _ = client.send_request(SYNC, b"")
    client.cancel(seq)
    assert client.receive_data(encode_packet(1_000_000_121, seq)) == []
    with pytest.raises(RemoteProtocolError):
        client.receive_data(encode_packet(1_000_000_121, seq))


def test_client_events_for_pushes_and_heartbeats() -> None:
    client = LongLinkConnection(CLIENT)
    data = (
        encode_packet(24, 0, b"")  # short notify: everything
        + encode_packet(24, 0, (0x6).to_bytes(4, "big"))
        + encode_packet(122, 0, b"data")
        + encode_packet(123, 0, b"other")
        + encode_packet(1_000_000_006, 0xFFFFFFFF)
    )
    assert client.receive_data(data) == [
        Notify(0xFFFFFFFF),
        Notify(6),
        SyncPush(b"data"),
        Push(123, b"other"),
        NoopReply(0xFFFFFFFF),
    ]


def test_seqs_increase_skip_in_flight_and_wrap_below_the_reserved_range() -> None:
    client = LongLinkConnection(CLIENT)
    seqs = [client.send_request(SYNC, b"")[0] for _ in range(3)]
    assert seqs == [1, 2, 3]
    client._next_seq = 0xFFFFFFEF
    a = client.send_request(SYNC, b"")[0]
    b = client.send_request(SYNC, b"")[0]  # wraps; 1..3 are still in flight
    assert (a, b) == (0xFFFFFFEF, 4)


# ---- hypothesis: arbitrary splits and orders --------------------------------------------------

_cgis = st.sampled_from([c for c in C.CGIS if c.name != "identify"])


@settings(deadline=None)
@given(
    st.lists(st.tuples(_cgis, st.binary(max_size=40)), min_size=1, max_size=12),
    st.lists(st.integers(0, 10_000), max_size=8),
    st.lists(st.integers(0, 10_000), max_size=8),
    st.randoms(use_true_random=False),
    st.lists(st.integers(1, 0xFFFF), max_size=4),
)
def test_any_split_and_any_reply_order(
    requests: list[tuple[C.CGI, bytes]],
    cuts_up: list[int],
    cuts_down: list[int],
    rnd: object,
    notifies: list[int],
) -> None:
    import random

    assert isinstance(rnd, random.Random)
    client, server = pair()
    sent: dict[int, tuple[C.CGI, bytes]] = {}
    up = b""
    for cgi, body in requests:
        seq, data = client.send_request(cgi, body)
        sent[seq] = (cgi, body)
        up += data
    up += client.send_noop()
    got = split_feed(server, up, cuts_up)
    assert got[-1] == Noop(0xFFFFFFFF)
    reqs = got[:-1]
    assert [(r.cgi, r.body) for r in reqs if isinstance(r, Request)] == requests
    rnd.shuffle(reqs)
    down = server.noop_reply(0xFFFFFFFF)
    for i, r in enumerate(reqs):
        assert isinstance(r, Request)
        down += server.reply(r.seq, r.body[::-1])
        if i < len(notifies):
            down += server.notify(notifies[i])
    events = split_feed(client, down, cuts_down)
    assert events[0] == NoopReply(0xFFFFFFFF)
    replies = [e for e in events if isinstance(e, Reply)]
    assert [e.seq for e in replies] == [r.seq for r in reqs if isinstance(r, Request)]
    for e in replies:
        cgi, body = sent[e.seq]
        assert e.cgi is cgi and e.body == body[::-1]
    assert [e.selector for e in events if isinstance(e, Notify)] == notifies[: len(reqs)]
    assert client.in_flight == server.in_flight == 0


@settings(deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(0, 300), max_size=5))
def test_garbage_decodes_or_raises_remote_protocol_error(data: bytes, cuts: list[int]) -> None:
    for role in (CLIENT, SERVER):
        conn = LongLinkConnection(role)
        try:
            split_feed(conn, data, cuts)
        except RemoteProtocolError:
            assert conn.closed
        except LocalProtocolError:  # fed again after a RemoteError event closed it
            assert conn.closed


def test_a_server_connection_is_idle_only_with_nothing_in_flight_or_buffered() -> None:
    client, server = pair()
    assert server.idle
    seq, req = client.send_request(SEND, pb.SendMsgRequest())
    server.receive_data(req[:5])  # part of a packet: the decoder holds it
    assert not server.idle and server.buffered == 5
    assert server.receive_data(req[5:]) == [Request(SEND, seq, b"")]
    assert not server.idle and server.buffered == 0 and server.in_flight == 1
    server.reply(seq, b"")
    assert server.idle
    server.receive_data(client.send_noop())  # a noop leaves nothing in flight
    assert server.idle
    server.protocol_error(MMRet.ERR_BAD_REQUEST, "bye")
    assert not server.idle  # closed: a new connection would not be the same


def test_server_packets_without_a_connection_match_the_connection_s() -> None:
    _client, server = pair()
    assert notify_packet(0x42) == server.notify(0x42)
    assert push_packet(b"items") == server.push_data(b"items")
    for bad in (0, 1 << 32):
        with pytest.raises(LocalProtocolError):
            notify_packet(bad)
    with pytest.raises(LocalProtocolError):
        push_packet(bytes(MAX_PACKET))
