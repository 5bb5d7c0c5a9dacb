"""bench/mqtt_load.py: its MQTT packets, and a small random-pairs load through a real
mosquitto (installed by ``make sysdeps``/``make bench-deps``)."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from bench.mqtt_load import (
    PUBLISH,
    Broker,
    MqttDecoder,
    main,
    per_10k,
    puback,
    publish,
    run_mqtt,
)


@given(
    st.lists(st.tuples(st.integers(1, 0xFFFF), st.binary(max_size=300)), min_size=1, max_size=8),
    st.lists(st.integers(1, 64), max_size=30),
)
def test_publishes_decode_whole_however_the_bytes_are_cut(
    msgs: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    wire = b"".join(publish(pid, b"u/7", payload) for pid, payload in msgs) + puback(9)
    dec = MqttDecoder()
    got: list[tuple[int, int, bytes]] = []
    pos = 0
    for c in cuts:
        got += dec.receive(wire[pos : pos + c])
        pos += c
    got += dec.receive(wire[pos:])
    assert [k for k, _, _ in got] == [PUBLISH] * len(msgs) + [4]
    for (_, flags, body), (pid, payload) in zip(got, msgs, strict=False):
        assert flags == 2  # QoS 1
        assert body[:5] == b"\0\3u/7" and int.from_bytes(body[5:7], "big") == pid
        assert body[7:] == payload
    assert got[-1][2] == b"\0\x09"


def test_random_pairs_through_mosquitto_deliver_every_message_once() -> None:
    with Broker() as broker:
        res = asyncio.run(
            run_mqtt("127.0.0.1", broker.port, 5, 300, window=20, warmup=20, broker_pid=broker.pid)
        )
    s = res.summary()
    assert s["sent"] == s["acked"] == s["delivered"] == 300
    assert s["duplicates"] == 0 and s["send_errors"] == 0
    assert len(res.latencies) == 300 and all(x >= 0 for x in res.latencies)
    cost = per_10k(res)
    assert cost is not None and cost >= 0


def test_bad_arguments_are_refused() -> None:
    assert main(["--users", "1"]) == 2
