"""The fast sync-item encoder (:mod:`wxnet.sync.items`) against protobuf's own
encoding: whatever it builds must parse to the message protobuf would build, for any
items, keys, seqs and flags."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wxnet.proto import wxnet_pb2 as pb
from wxnet.sync.items import (
    SendResult,
    TextBody,
    encode_varint,
    item_bytes,
    join_cmd_list,
    newsync_response,
    send_msg_response,
    stored,
)

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
text = st.text(max_size=40)
i32 = st.integers(-(2**31), 2**31 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)


@st.composite
def cmd_items(draw: st.DrawFn) -> pb.CmdItem:
    """A CmdItem with any one of its bodies (or none), key and seq."""
    body = draw(st.sampled_from(["add_msg", "contact", "revoke", "msg_status", "none"]))
    item = pb.CmdItem(cmd_id=draw(u32), key=draw(u32), seq=draw(u64))
    if body == "add_msg":
        item.add_msg.CopyFrom(
            pb.AddMsg(
                msg_id=draw(u64),
                from_user=draw(text),
                to_user=draw(text),
                msg_type=draw(u32),
                content=draw(text),
                create_time=draw(st.integers(-(2**63), 2**63 - 1)),
                client_msg_id=draw(text),
                img_buf=draw(st.binary(max_size=64)),
            )
        )
    elif body == "contact":
        item.contact.CopyFrom(
            pb.Contact(user_name=draw(text), nick_name=draw(text), members=draw(st.lists(text)))
        )
    elif body == "revoke":
        item.revoke.CopyFrom(pb.RevokeMsg(msg_id=draw(u64)))
    elif body == "msg_status":
        item.msg_status.CopyFrom(pb.ModMsgStatus(msg_id=draw(u64)))
    return item


def split(item: pb.CmdItem) -> tuple[int, int, bytes]:
    """What the sync log stores for ``item``: (key, seq, body without key and seq)."""
    copy = pb.CmdItem()
    copy.CopyFrom(item)
    return item.key, item.seq, stored(copy)


@given(u64)
def test_varint_is_protobufs(n: int) -> None:
    # CmdItem.seq is field 3, uint64: protobuf writes tag 0x18 then the varint (not 0).
    expect = pb.CmdItem(seq=n).SerializeToString()
    assert (b"\x18" + encode_varint(n) if n else b"") == expect


def test_varint_is_protobufs_at_every_length_boundary() -> None:
    for bits in range(0, 64, 7):
        for n in (2**bits - 1, 2**bits, 2**bits + 1):
            if 0 < n < 2**64:
                assert encode_varint(n) == pb.CmdItem(seq=n).SerializeToString()[1:], n


@given(cmd_items())
def test_item_bytes_parse_to_the_item(item: pb.CmdItem) -> None:
    key, seq, body = split(item)
    got = pb.CmdItem.FromString(item_bytes(key, seq, body))
    assert got == item
    assert got.SerializeToString() == item.SerializeToString()


@given(st.lists(cmd_items(), max_size=8), st.binary(max_size=80), u32)
def test_newsync_response_is_protobufs(items: list[pb.CmdItem], key: bytes, cont: int) -> None:
    expect = pb.NewSyncResponse(
        base=pb.BaseResponse(), cmd_list=items, key_buf=key, continue_flag=cont
    )
    raw = newsync_response([split(i) for i in items], key, cont)
    got = pb.NewSyncResponse.FromString(raw)
    assert got == expect
    # Same fields, same values: protobuf's canonical bytes agree too.
    assert got.SerializeToString() == expect.SerializeToString()


@given(st.lists(cmd_items(), max_size=8), st.binary(max_size=80), u32)
def test_newinit_response_with_joined_items(items: list[pb.CmdItem], key: bytes, cont: int) -> None:
    head = pb.NewInitResponse(base=pb.BaseResponse(), current_synckey=key, continue_flag=cont)
    raw = head.SerializeToString() + join_cmd_list([split(i) for i in items])
    expect = pb.NewInitResponse()
    expect.CopyFrom(head)
    expect.cmd_list.extend(items)
    assert pb.NewInitResponse.FromString(raw) == expect


@given(u64, text, text, u32, text, u32, i64, text, text)
def test_text_body_is_protobufs(
    msg_id: int,
    from_user: str,
    to_user: str,
    msg_type: int,
    content: str,
    status: int,
    create_time: int,
    client_msg_id: str,
    real_from: str,
) -> None:
    # the bytes the engine stored for a text before TextBody: protobuf's, byte for byte
    expect = stored(
        pb.CmdItem(
            cmd_id=5,
            add_msg=pb.AddMsg(
                msg_id=msg_id,
                from_user=from_user,
                to_user=to_user,
                msg_type=msg_type,
                content=content,
                status=status,
                create_time=create_time,
                client_msg_id=client_msg_id,
                real_from=real_from,
            ),
        )
    )
    body = TextBody(from_user, to_user, msg_type, content, status, client_msg_id, real_from)
    assert body(msg_id, create_time) == expect


@st.composite
def send_results(draw: st.DrawFn) -> SendResult:
    r = SendResult(draw(text), draw(text))
    r.ret, r.err_msg = draw(i32), draw(text)
    r.msg_id, r.create_time = draw(u64), draw(i64)
    return r


@given(st.lists(send_results(), max_size=10))
def test_send_msg_response_is_protobufs(results: list[SendResult]) -> None:
    expect = pb.SendMsgResponse(
        list=[
            pb.SendMsgResult(
                ret=r.ret,
                client_msg_id=r.client_msg_id,
                msg_id=r.msg_id,
                create_time=r.create_time,
                to_user=r.to_user,
                err_msg=r.err_msg,
            )
            for r in results
        ]
    )
    assert send_msg_response(results) == expect.SerializeToString()
