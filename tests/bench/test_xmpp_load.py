"""bench/xmpp_load.py: its stanza reader, and a small random-pairs load through a real
ejabberd (installed by ``make sysdeps``/``make bench-deps``), started by the bench."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.mqtt_load import per_10k
from bench.xmpp_load import (
    NS_SM,
    Ejabberd,
    StanzaReader,
    XmppError,
    main,
    message,
    run_xmpp,
    stream_header,
)


@settings(max_examples=40)
@given(
    st.lists(
        st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Cn")), max_size=30),
        max_size=8,
    ),
    st.lists(st.integers(1, 64), max_size=40),
)
def test_stanzas_come_out_whole_however_the_bytes_are_cut(
    bodies: list[str], cuts: list[int]
) -> None:
    wire = (
        b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        b"xmlns:stream='http://etherx.jabber.org/streams' id='s1' version='1.0'>"
        + b"".join(message(f"u{n}@localhost", f"m{n}", b) for n, b in enumerate(bodies))
        + b"<a xmlns='urn:xmpp:sm:3' h='7'/>"
    )
    reader = StanzaReader()
    got = []
    pos = 0
    for c in cuts:
        got += reader.receive(wire[pos : pos + c])
        pos += c
    got += reader.receive(wire[pos:])
    assert reader.header is not None and reader.header["id"] == "s1"
    msgs = [el for el in got if el.tag == "{jabber:client}message"]
    assert [m.findtext("{jabber:client}body") for m in msgs] == bodies
    assert [m.get("id") for m in msgs] == [f"m{n}" for n in range(len(bodies))]
    acks = [el for el in got if el.tag == f"{{{NS_SM}}}a"]
    assert [a.get("h") for a in acks] == ["7"]
    assert len(got) == 2 * len(bodies) + 1  # each message, its <r/>, and the <a/>


def test_the_end_of_the_stream_and_bad_xml_are_errors() -> None:
    reader = StanzaReader()
    reader.receive(stream_header("localhost"))
    with pytest.raises(XmppError, match="closed the stream"):
        reader.receive(b"</stream:stream>")
    with pytest.raises(XmppError, match="bad XML"):
        StanzaReader().receive(b"<stream><a></b>")


def test_random_pairs_through_ejabberd_deliver_every_message_once() -> None:
    with Ejabberd() as server:
        res = asyncio.run(
            run_xmpp("127.0.0.1", server.port, 5, 300, window=20, warmup=20, server_pid=server.pid)
        )
        paced = asyncio.run(
            run_xmpp("127.0.0.1", server.port, 4, 40, window=10, rate=400.0, seed=2)
        )  # the same users again: registered already, which is not an error
    s = res.summary()
    assert s["sent"] == s["acked"] == s["delivered"] == 300
    assert s["duplicates"] == 0 and s["send_errors"] == 0
    assert len(res.latencies) == 300 and all(x >= 0 for x in res.latencies)
    cost = per_10k(res)
    assert cost is not None and cost >= 0
    p = paced.summary()
    assert p["sent"] == p["acked"] == p["delivered"] == 40 and p["duplicates"] == 0


def test_a_server_that_is_not_there_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["--host", "127.0.0.1", "--port", str(port), "--users", "2"]) == 1
    assert "xmpp_load:" in capsys.readouterr().err


def test_bad_arguments_are_refused() -> None:
    assert main(["--users", "1"]) == 2
