"""The lab's "smart DNS" (S9): answers the service's names from a fixed zone.

:func:`answer` is pure (query bytes in, reply bytes out, through
:mod:`wxnet.proto.dnswire`); :func:`main`
runs it on UDP inside the lab's internet namespace, started by the lab as
``python -m wxnet.lab.dnsserver --listen ADDR --record NAME=IP[,IP...] ...``. It prints
``ready <addr> <port>`` on stdout once bound, so its starter can wait for that line
instead of sleeping.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address
from typing import cast

from wxnet.proto.dnswire import NXDOMAIN, DnsWireError, addresses_reply, error_reply, parse_query

__all__ = ["Zone", "answer", "main", "parse_record", "serve", "start"]

Zone = Mapping[str, tuple[str, ...]]
TTL = 60


def _norm(name: str) -> str:
    return name.lower().rstrip(".")


def parse_record(text: str) -> tuple[str, tuple[str, ...]]:
    """``NAME=IP[,IP...]`` -> (name, addresses).

    Raises:
        ValueError: not that shape, or an address that is not IPv4.
    """
    name, sep, ips = text.partition("=")
    if not sep or not name.strip() or not ips.strip():
        raise ValueError(f"a record is NAME=IP[,IP...], not {text!r}")
    addrs = tuple(str(IPv4Address(ip.strip())) for ip in ips.split(","))
    return _norm(name.strip()), addrs


def answer(query: bytes, zone: Zone) -> bytes | None:
    """The reply to one DNS query, or ``None`` for bytes that are not a query.

    A name in ``zone`` gets its A records (other types: no data); any other name gets
    NXDOMAIN; we are authoritative for everything and recurse for nothing.
    """
    try:
        q = parse_query(query)
    except DnsWireError:
        return None
    if q.is_response:
        return None
    addrs = {_norm(k): v for k, v in zone.items()}.get(q.name)
    if addrs is None:
        return error_reply(query, q, NXDOMAIN, authoritative=True, recursion_available=False)
    return addresses_reply(query, q, addrs, TTL, authoritative=True, recursion_available=False)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        reply = answer(data, self.zone)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


async def start(host: str, port: int, zone: Zone) -> asyncio.DatagramTransport:
    """Answer queries on UDP ``host:port`` (0: any free port) until the transport is
    closed."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Protocol(zone), local_addr=(host, port)
    )
    return transport


async def serve(host: str, port: int, zone: Zone) -> None:
    transport = await start(host, port, zone)
    sockname = transport.get_extra_info("sockname")
    print(f"ready {sockname[0]} {sockname[1]}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        transport.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wxnet.lab.dnsserver")
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--record", action="append", default=[], metavar="NAME=IP[,IP]")
    args = parser.parse_args(argv)
    try:
        zone = dict(parse_record(r) for r in args.record)
    except ValueError as exc:
        print(f"dnsserver: error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(args.listen, args.port, zone))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"dnsserver: error: cannot listen on {args.listen}:{args.port}: {exc}",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
