from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.errors import RemoteProtocolError
from wxnet.proto.synckey import SyncKey

# S26, verbatim from the seed's synccheck URL
SEED_QUERY = (
    "1_620943725|2_620943769|3_620943770|11_620942796|201_1393208420|202_1393209127|1000_1393203219"
)
# S27: the seed's webwxsync body (the list is cut in the seed after the first pair)
SEED_JSON = '{"Count":6,"List":[{"Key":1,"Val":620943725},{"Key":2,"Val":620943769},'
SEED_JSON += '{"Key":3,"Val":620943770},{"Key":11,"Val":620942796},'
SEED_JSON += '{"Key":201,"Val":1393208420},{"Key":1000,"Val":1393203219}]}'


def test_seed_query_form_round_trips() -> None:
    key = SyncKey.from_query(SEED_QUERY)
    assert key.get(1) == 620943725
    assert key.get(1000) == 1393203219
    assert key.to_query() == SEED_QUERY


def test_seed_json_form_round_trips() -> None:
    key = SyncKey.from_json(json.loads(SEED_JSON))
    assert key.get(11) == 620942796
    assert json.dumps(key.to_json(), separators=(",", ":")) == SEED_JSON


def test_forms_agree() -> None:
    key = SyncKey.from_query(SEED_QUERY)
    assert SyncKey.from_bytes(key.to_bytes()) == key
    assert SyncKey.from_json(key.to_json()) == key


def test_merge_applies_newer_pairs() -> None:
    old = SyncKey(((1, 5), (2, 7)))
    assert old.merged(SyncKey(((2, 9), (3, 1)))) == SyncKey(((1, 5), (2, 9), (3, 1)))


@pytest.mark.parametrize(
    "text", ["1_", "_5", "1-5", "1_5|", "a_1", "1_5|1_6", "1_" + "9" * 21, "1_5 |2_3"]
)
def test_bad_query_forms(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        SyncKey.from_query(text)


@pytest.mark.parametrize(
    "obj",
    [
        None,
        [],
        {"Count": 1},
        {"List": [1]},
        {"List": [{"Key": "1", "Val": 2}]},
        {"List": [{"Key": 1, "Val": True}]},
        {"Count": 2, "List": [{"Key": 1, "Val": 2}]},
        {"List": [{"Key": 1, "Val": -1}]},
    ],
)
def test_bad_json_forms(obj: object) -> None:
    with pytest.raises(RemoteProtocolError):
        SyncKey.from_json(obj)


def test_bad_binary_form() -> None:
    with pytest.raises(RemoteProtocolError):
        SyncKey.from_bytes(b"\xff\xff\xff")


pairs_st = st.dictionaries(st.integers(0, 0xFFFFFFFF), st.integers(0, (1 << 64) - 1), max_size=30)


@given(pairs_st)
def test_all_forms_round_trip(d: dict[int, int]) -> None:
    key = SyncKey.of(d)
    assert SyncKey.from_bytes(key.to_bytes()) == key
    assert SyncKey.from_json(json.loads(json.dumps(key.to_json()))) == key
    assert SyncKey.from_query(key.to_query()) == key


@given(st.binary(max_size=100))
def test_binary_garbage_decodes_or_raises(data: bytes) -> None:
    try:
        SyncKey.from_bytes(data)
    except RemoteProtocolError:
        pass


@given(st.dictionaries(st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1), max_size=8))
def test_binary_form_is_protobufs(d: dict[int, int]) -> None:
    # to_bytes writes the message itself: protobuf's bytes, byte for byte, every time
    pairs = list(d.items())
    key = SyncKey(tuple(pairs))
    expect = pb.SyncKey(list=[pb.KeyVal(key=k, val=v) for k, v in pairs]).SerializeToString()
    assert key.to_bytes() == expect
    assert key.to_bytes() == expect  # the kept copy
    assert SyncKey.from_bytes(expect).pairs == key.pairs


@pytest.mark.parametrize("pair", [(-1, 0), (0, -1), (2**32, 0), (0, 2**64)])
def test_binary_form_of_an_out_of_range_pair_raises(pair: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        SyncKey((pair,)).to_bytes()
