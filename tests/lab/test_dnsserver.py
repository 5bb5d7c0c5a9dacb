from __future__ import annotations

import asyncio
import socket

import pytest
from dnslib import QTYPE, RCODE, DNSRecord
from hypothesis import given
from hypothesis import strategies as st

from wxnet.lab.dnsserver import answer, parse_record, start

ZONE = {"long.wxnet.lab": ("203.0.113.10", "203.0.113.11")}


def test_known_name_gets_its_addresses() -> None:
    q = DNSRecord.question("LONG.wxnet.lab.")
    reply = DNSRecord.parse(answer(q.pack(), ZONE) or b"")
    assert reply.header.id == q.header.id and reply.header.aa
    assert sorted(str(rr.rdata) for rr in reply.rr) == ["203.0.113.10", "203.0.113.11"]


def test_unknown_name_is_nxdomain_and_aaaa_is_empty() -> None:
    reply = DNSRecord.parse(answer(DNSRecord.question("www.example.com").pack(), ZONE) or b"")
    assert reply.header.rcode == RCODE.NXDOMAIN
    q = DNSRecord.question("long.wxnet.lab", "AAAA")
    reply = DNSRecord.parse(answer(q.pack(), ZONE) or b"")
    assert reply.header.rcode == RCODE.NOERROR and not reply.rr
    assert q.q.qtype == QTYPE.AAAA


def test_replies_are_not_answered() -> None:
    reply = answer(DNSRecord.question("long.wxnet.lab").pack(), ZONE) or b""
    assert answer(reply, ZONE) is None


@given(st.binary(max_size=300))
def test_garbage_never_crashes(data: bytes) -> None:
    out = answer(data, ZONE)
    assert out is None or isinstance(out, bytes)


def test_parse_record() -> None:
    assert parse_record("Long.Wxnet.Lab.=1.2.3.4, 5.6.7.8") == (
        "long.wxnet.lab",
        ("1.2.3.4", "5.6.7.8"),
    )
    for bad in ("x", "=1.2.3.4", "a=", "a=1.2.3"):
        with pytest.raises(ValueError):
            parse_record(bad)


async def test_serves_over_udp_on_loopback() -> None:
    transport = await start("127.0.0.1", 0, ZONE)
    port = transport.get_extra_info("sockname")[1]
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        q = DNSRecord.question("long.wxnet.lab")
        await loop.sock_sendto(sock, q.pack(), ("127.0.0.1", port))
        data = await asyncio.wait_for(loop.sock_recv(sock, 512), 5)
    finally:
        sock.close()
        transport.close()
    assert [str(rr.rdata) for rr in DNSRecord.parse(data).rr] == ["203.0.113.10", "203.0.113.11"]
