from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wxnet.gate.ctevents import CtFlow, parse_destroy

TCP = (
    "[DESTROY] ipv4     2 tcp      6 119 TIME_WAIT src=10.77.0.2 dst=198.18.2.10 sport=34164 "
    "dport=80 packets=4 bytes=316 src=198.18.2.10 dst=10.77.0.2 sport=80 dport=34164 "
    "packets=4 bytes=216 [ASSURED] mark=1465384965 id=1444897721"
)
UDP6 = (
    "[DESTROY] ipv6     10 udp      17 29 src=fd77::2 dst=fd18::2 sport=36637 dport=9998 "
    "packets=1 bytes=30 [UNREPLIED] src=fd18::2 dst=fd77::2 sport=9998 dport=36637 "
    "packets=0 bytes=0 mark=0 id=184716119"
)


def test_golden_lines() -> None:
    assert parse_destroy(TCP) == CtFlow("tcp", "10.77.0.2", 34164, "198.18.2.10", 80, 316, 216,
                                        0x57580005)  # fmt: skip
    assert parse_destroy(UDP6) == CtFlow("udp", "fd77::2", 36637, "fd18::2", 9998, 30, 0, 0)
    assert parse_destroy(TCP.replace("[DESTROY]", "[NEW]")) is None
    assert parse_destroy("") is None
    assert parse_destroy("[DESTROY] ipv4 2 icmp 1 mark=3") is None


@given(st.text(max_size=200))
def test_garbage_is_ignored_or_parsed(line: str) -> None:
    out = parse_destroy("[DESTROY] ipv4 2 tcp 6 " + line)
    assert out is None or isinstance(out, CtFlow)
    assert parse_destroy(line) is None or line.startswith("[DESTROY]")
