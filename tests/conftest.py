"""Shared test helpers: where the captures are, and a tiny independent flow splitter.

The splitter is deliberately simpler than wxnet.analyze's engine (Ethernet + IPv4 only,
payloads concatenated in capture order), so classifier tests on real bytes do not depend
on the analyser's reassembly.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.browser import browser, chromium  # noqa: F401  (fixtures for every browser test)
from tests.engines import PostgresServer, RedisServer
from wxnet.analyze.capture import CaptureReader

# No time limit per example: the machine is shared, and a slow example is no failure
# (speed is measured by the benchmarks, never asserted in tests).
settings.register_profile("wxnet", deadline=None)
settings.load_profile("wxnet")

CAPTURES = Path(__file__).parent / "data" / "captures"

FlowKey = tuple[str, str, int, str, int]  # transport, client, client_port, server, server_port
FlowBytes = dict[FlowKey, tuple[bytes, bytes]]


def _ip(b: bytes) -> str:
    return ".".join(str(x) for x in b)


def split_flows(path: Path) -> FlowBytes:
    """Ethernet or Linux cooked, IPv4. The first-seen sender is the client; returns the
    payloads per direction (TCP: whole stream in capture order; UDP: first datagram)."""
    out: dict[FlowKey, list[bytearray]] = {}
    udp_seen: set[tuple[FlowKey, int]] = set()
    with open(path, "rb") as f:  # CaptureReader undoes gzip itself
        for pkt in CaptureReader(f):
            d = pkt[2]
            link = {1: 14, 113: 16}.get(pkt[1])  # Ethernet, Linux cooked
            if link is None or len(d) < link + 20 or d[link - 2 : link] != b"\x08\x00":
                continue
            ihl = (d[link] & 15) * 4
            total = struct.unpack_from(">H", d, link + 2)[0]
            proto = d[link + 9]
            src, dst = _ip(d[link + 12 : link + 16]), _ip(d[link + 16 : link + 20])
            l4 = link + ihl
            end = min(len(d), link + total)
            sp, dp = struct.unpack_from(">HH", d, l4)
            if proto == 6:
                payload = d[l4 + (d[l4 + 12] >> 4) * 4 : end]
                t = "tcp"
            elif proto == 17:
                payload = d[l4 + 8 : end]
                t = "udp"
            else:
                continue
            fwd: FlowKey = (t, src, sp, dst, dp)
            rev: FlowKey = (t, dst, dp, src, sp)
            if fwd in out:
                key, idx = fwd, 0
            elif rev in out:
                key, idx = rev, 1
            else:
                syn_ack = t == "tcp" and (d[l4 + 13] & 0x12) == 0x12
                key, idx = (rev, 1) if syn_ack else (fwd, 0)
                out[key] = [bytearray(), bytearray()]
            if t == "udp":
                if (key, idx) in udp_seen or not payload:
                    continue
                udp_seen.add((key, idx))
            out[key][idx] += payload
    return {k: (bytes(v[0]), bytes(v[1])) for k, v in out.items()}


_CACHE: dict[str, FlowBytes] = {}


@pytest.fixture
def capture_flows() -> Callable[[str], FlowBytes]:
    def load(name: str) -> FlowBytes:
        if name not in _CACHE:
            _CACHE[name] = split_flows(CAPTURES / name)
        return _CACHE[name]

    return load


# ---------------------------------------------------------------- engines (scale-out)
@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the whole session (tests take fresh databases)."""
    srv = PostgresServer()
    try:
        srv.start()
        yield srv
    finally:
        srv.close()


@pytest.fixture
def pg_dsn(pg_server: PostgresServer) -> str:
    """The DSN of a fresh, empty database on the shared PostgreSQL."""
    return pg_server.new_database()


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """A Redis of this test alone, which the test may stop or restart."""
    srv = RedisServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real Redis for the whole session."""
    srv = RedisServer()
    try:
        srv.start()
        yield srv
    finally:
        srv.close()
