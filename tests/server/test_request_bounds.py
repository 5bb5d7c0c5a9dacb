"""The request bounds (``max_field_chars``, ``max_list_items``): the short cut for short
bodies gives the same answer as the walk of every field, and oversized input gets the
same errors as before."""

from __future__ import annotations

from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from wxnet.proto import wxnet_pb2 as pb
from wxnet.server.dispatch import oversized

# any unicode (several bytes per character) and plain ASCII (one byte per character,
# the tightest case for the short cut)
texts = st.text(max_size=40) | st.text(alphabet="ab", max_size=40)
bounds = st.integers(min_value=0, max_value=45)


def send_msg(base: pb.BaseRequest, msgs: list[tuple[str, str, str]]) -> pb.SendMsgRequest:
    return pb.SendMsgRequest(
        base=base,
        list=[pb.MicroMsg(to_user=t, content=c, client_msg_id=i, msg_type=1) for t, c, i in msgs],
    )


bases = st.none() | st.builds(
    pb.BaseRequest, session_key=texts, device_id=texts, uin=st.integers(0, 2**32 - 1)
)
requests: st.SearchStrategy[Message] = st.one_of(
    st.builds(send_msg, bases, st.lists(st.tuples(texts, texts, texts), max_size=12)),
    st.builds(pb.GetContactRequest, base=bases, user_names=st.lists(texts, max_size=50)),
    st.builds(
        pb.CreateChatRoomRequest, base=bases, topic=texts, members=st.lists(st.text(max_size=2))
    ),
    st.builds(pb.ManualAuthRequest, base=bases, user_name=texts, device_name=texts),
    # one field: the body is little more than the string or the list
    st.builds(pb.ManualAuthRequest, device_name=texts),
    st.builds(pb.GetContactRequest, user_names=st.lists(st.text(alphabet="a", max_size=3))),
)


def longest(msg: Message) -> tuple[int, int]:
    """(characters of the longest string, entries of the longest list) in ``msg``."""
    chars = items = 0
    for fd, value in msg.ListFields():
        values = list(value) if fd.is_repeated else [value]
        if fd.is_repeated:
            items = max(items, len(values))
        for v in values:
            if isinstance(v, str):
                chars = max(chars, len(v))
            elif isinstance(v, Message):
                c, i = longest(v)
                chars, items = max(chars, c), max(items, i)
    return chars, items


@settings(max_examples=200, deadline=None)
@given(requests, st.data())
def test_short_cut_agrees_with_the_walk(req: Message, data: st.DataObject) -> None:
    wire = req.SerializeToString()
    parsed = type(req).FromString(wire)
    chars, items = longest(parsed)
    near_body = st.integers(max(0, len(wire) - 2), len(wire) + 1)
    # bounds anywhere, and just under the longest string / list, where the walk finds
    # something the short cut must not let through
    max_chars = data.draw(bounds | st.integers(max(0, chars - 2), chars + 1) | near_body, "chars")
    max_items = data.draw(bounds | st.integers(max(0, items - 2), items + 1) | near_body, "items")
    assert oversized(parsed, max_chars, max_items, len(wire)) == oversized(
        parsed, max_chars, max_items
    )


def test_errors_for_oversized_input_are_unchanged() -> None:
    name = pb.SendMsgRequest(list=[pb.MicroMsg(to_user="b" * 1025, content="hi")])
    assert oversized(name, 1024, 1000, name.ByteSize()) == (
        "to_user is longer than 1024 characters"
    )
    many = pb.GetContactRequest(user_names=["x"] * 1001)
    assert oversized(many, 1024, 1000, many.ByteSize()) == "user_names has more than 1000 entries"
    # message text is bounded elsewhere (max_content_bytes), not by max_field_chars
    text = pb.SendMsgRequest(list=[pb.MicroMsg(to_user="bob", content="x" * 5000)])
    assert oversized(text, 1024, 1000, text.ByteSize()) == ""


def test_a_string_at_the_bound_passes_and_one_more_character_does_not() -> None:
    at = pb.ManualAuthRequest(device_name="d" * 8)
    over = pb.ManualAuthRequest(device_name="d" * 9)
    assert oversized(at, 8, 8, at.ByteSize()) == ""
    assert oversized(over, 8, 8, over.ByteSize()) == "device_name is longer than 8 characters"


def test_short_cut_at_its_edge() -> None:
    """Every bound against bodies that are one string or one list and nothing else (the
    tightest case: the fewest bytes of wire per character or entry)."""
    for n in range(40):
        for req in (
            pb.ManualAuthRequest(device_name="d" * n),
            pb.GetContactRequest(user_names=[""] * n),
            pb.GetContactRequest(user_names=["u"] * n),
        ):
            wire = req.SerializeToString()
            for max_chars in range(45):
                for max_items in (max_chars, 1000):
                    walked = oversized(req, max_chars, max_items)
                    assert oversized(req, max_chars, max_items, len(wire)) == walked
                    assert oversized(req, max_items, max_chars, len(wire)) == oversized(
                        req, max_items, max_chars
                    )
