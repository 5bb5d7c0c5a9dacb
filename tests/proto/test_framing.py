from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wxnet.proto.errors import RemoteProtocolError
from wxnet.proto.framing import (
    HEADER_LEN,
    MAX_PACKET,
    Packet,
    PacketDecoder,
    encode_packet,
    split_packets,
)

SEED_NOOP = bytes.fromhex("00000010 00100001 00000006 0000000f".replace(" ", ""))


def test_seed_example_round_trips_byte_for_byte() -> None:
    # S32: "00 00 00 10 00 10 00 01 00 00 00 06 00 00 00 0f" = length 16, op 6, seq 15
    assert encode_packet(6, 15) == SEED_NOOP
    assert PacketDecoder().packets(SEED_NOOP) == [Packet(6, 15, b"")]


def test_several_packets_in_one_write() -> None:
    # S33: one TCP write may hold several packets, bodies may contain "\n"
    data = encode_packet(121, 1, b"a\nb") + SEED_NOOP + encode_packet(24, 0, b"\0\0\0\2")
    assert PacketDecoder().packets(data) == [
        Packet(121, 1, b"a\nb"),
        Packet(6, 15),
        Packet(24, 0, b"\0\0\0\2"),
    ]


def test_larger_header_length_is_skipped() -> None:
    raw = (24).to_bytes(4, "big") + (20).to_bytes(2, "big") + b"\0\1" + b"\0\0\0\x07" * 2
    raw += b"XXXX" + b"body"
    assert PacketDecoder().packets(raw) == [Packet(7, 7, b"body")]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\0\0\0\x10\0\x0f\0\1" + bytes(8), "header length 15"),
        (b"\0\0\0\x10\0\x10\0\2" + bytes(8), "protocol version 2"),
        (b"\0\0\0\x08\0\x10\0\1" + bytes(8), "shorter than its header"),
        ((MAX_PACKET + 1).to_bytes(4, "big") + b"\0\x10\0\1" + bytes(8), "limit"),
    ],
)
def test_malformed_headers_raise_and_stay_broken(raw: bytes, message: str) -> None:
    dec = PacketDecoder()
    with pytest.raises(RemoteProtocolError, match=message):
        dec.packets(raw)
    with pytest.raises(RemoteProtocolError):
        dec.packets(SEED_NOOP)


def test_oversized_packet_rejected_before_body_arrives() -> None:
    dec = PacketDecoder(max_packet=1000)
    with pytest.raises(RemoteProtocolError):
        dec.packets(encode_packet(1, 1, bytes(2000))[:HEADER_LEN])


def test_encode_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        encode_packet(1 << 32, 0)
    with pytest.raises(ValueError):
        encode_packet(1, 1, bytes(MAX_PACKET))


packets_st = st.lists(
    st.builds(
        Packet,
        st.integers(0, 0xFFFFFFFF),
        st.integers(0, 0xFFFFFFFF),
        st.binary(max_size=300),
    ),
    max_size=6,
)


@given(packets_st, st.data())
def test_any_split_yields_the_same_packets(packets: list[Packet], data: st.DataObject) -> None:
    wire = b"".join(p.encode() for p in packets)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    dec = PacketDecoder()
    out: list[Packet] = []
    prev = 0
    for cut in [*cuts, len(wire)]:
        out += dec.packets(wire[prev:cut])
        prev = cut
    assert out == packets
    assert dec.buffered == 0


def test_every_single_split_of_seed_pair() -> None:
    wire = SEED_NOOP + encode_packet(5, 9, b"xyz")
    for cut in range(len(wire) + 1):
        dec = PacketDecoder()
        got = dec.packets(wire[:cut]) + dec.packets(wire[cut:])
        assert got == [Packet(6, 15), Packet(5, 9, b"xyz")]


@given(st.binary(max_size=200))
def test_garbage_decodes_or_raises_remote_protocol_error(garbage: bytes) -> None:
    dec = PacketDecoder(max_packet=4096)
    try:
        for p in dec.packets(garbage):
            assert isinstance(p, Packet)
    except RemoteProtocolError:
        pass


@settings(deadline=None)
@given(packets_st, st.data())
def test_receive_fast_path_matches_feed_and_next_fields(
    packets: list[Packet], data: st.DataObject
) -> None:
    """receive() reads whole packets straight from the read when nothing is buffered;
    at any split it gives what the buffered path gives."""
    wire = b"".join(p.encode() for p in packets)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    fast, slow = PacketDecoder(), PacketDecoder()
    got: list[tuple[int, int, bytes]] = []
    want: list[tuple[int, int, bytes]] = []
    prev = 0
    for cut in [*cuts, len(wire)]:
        got += fast.receive(wire[prev:cut])
        slow.feed(wire[prev:cut])
        while (f := slow.next_fields()) is not None:
            want.append(f)
        prev = cut
    assert got == want == [(p.cmd, p.seq, p.body) for p in packets]
    assert all(type(b) is bytes for _c, _s, b in got)
    assert fast.buffered == 0


@settings(deadline=None)
@given(st.binary(max_size=200), st.integers(0, 200))
def test_receive_and_packets_agree_on_garbage(garbage: bytes, cut: int) -> None:
    results: list[object] = []
    for use_fast in (True, False):
        dec = PacketDecoder(max_packet=4096)
        try:
            if use_fast:
                out = dec.receive(garbage[:cut]) + dec.receive(garbage[cut:])
            else:
                out = [(p.cmd, p.seq, p.body) for p in dec.packets(garbage[:cut])]
                out += [(p.cmd, p.seq, p.body) for p in dec.packets(garbage[cut:])]
            results.append(("ok", out))
        except RemoteProtocolError as exc:
            results.append(("error", str(exc)))
    assert results[0] == results[1]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\0\0\0\x10\0\x0f\0\1" + bytes(8), "header length 15"),
        (b"\0\0\0\x10\0\x10\0\2" + bytes(8), "protocol version 2"),
        (b"\0\0\0\x08\0\x10\0\1" + bytes(8), "shorter than its header"),
        (b"\0\0\0\x12\0\x14\0\1" + bytes(8), "shorter than its header"),
        ((MAX_PACKET + 1).to_bytes(4, "big") + b"\0\x10\0\1" + bytes(8), "limit"),
    ],
)
def test_split_packets_refuses_what_the_decoder_refuses(raw: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        split_packets(SEED_NOOP + raw)
    dec = PacketDecoder()  # the decoder's fast path (nothing buffered) is split_packets
    with pytest.raises(RemoteProtocolError, match=message):
        dec.receive(raw)
    with pytest.raises(RemoteProtocolError):
        dec.receive(SEED_NOOP)


def test_split_packets_stops_at_a_part_packet() -> None:
    first = encode_packet(121, 1, b"abc")
    second = encode_packet(122, 2, b"defg")
    assert split_packets(first + second[:7]) == ([(121, 1, b"abc")], len(first))
    assert split_packets(second[:7]) == ([], 0)
    assert split_packets(b"") == ([], 0)
    raw = (24).to_bytes(4, "big") + (20).to_bytes(2, "big") + b"\0\1" + b"\0\0\0\x07" * 2
    assert split_packets(bytearray(raw + b"XXXXbody")) == ([(7, 7, b"body")], 24)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=40)), max_size=6), st.data()
)
def test_receive_at_any_split_gives_the_packets(
    packets: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    wire = b"".join(encode_packet(cmd, i, body) for i, (cmd, body) in enumerate(packets))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=5)))
    dec, got, last = PacketDecoder(), [], 0
    for cut in [*cuts, len(wire)]:
        got += dec.receive(wire[last:cut])
        last = cut
    assert got == [(cmd, i, body) for i, (cmd, body) in enumerate(packets)]
    assert dec.buffered == 0
