"""Runs inside a test network namespace (``ip netns exec NS python nshelper.py ...``).

``serve``: the "internet": DNS servers (a real one and a foreign one that lies), TCP
echo servers on 80/443/8080/853 and a UDP echo on 443 (QUIC). Every DNS query and every
connection is logged as a JSON line to ``--log``. Prints ``ready`` once bound; runs
until stdin closes.

``probe dns|tcp|udp``: one client action from the "phone"; prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import threading
from typing import Any, cast

from dnslib import QTYPE, RCODE, RR, A, DNSRecord

ZONE = {
    "short.weixin.qq.com": "198.18.2.10",
    "sgshort.wechat.com": "198.18.2.10",
    "long.weixin.qq.com": "198.18.2.10",
    "szlong.weixin.qq.com": "198.18.2.30",  # the real wxnet server (its own address)
    "video.example": "198.18.3.10",
    "connectivitycheck.gstatic.com": "198.18.3.20",
}
LIAR = "198.18.3.10"


def _log(path: str, obj: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(obj) + "\n")


class _Dns(asyncio.DatagramProtocol):
    def __init__(self, log: str, addr: str, liar: bool) -> None:
        self.log, self.addr, self.liar = log, addr, liar
        self.tr: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tr = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        q = DNSRecord.parse(data)
        name = str(q.q.qname).rstrip(".").lower()
        _log(self.log, {"event": "dns", "server": self.addr, "name": name})
        r = q.reply()
        ip = LIAR if self.liar else ZONE.get(name)
        if ip is None:
            r.header.rcode = RCODE.NXDOMAIN
        elif q.q.qtype == QTYPE.A:
            r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A(ip), ttl=60))
        assert self.tr is not None
        self.tr.sendto(r.pack(), addr)


class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tr = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.tr.sendto(b"echo:" + data, addr)


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(
        lambda: _Dns(args.log, args.dns, False), local_addr=(args.dns, 53)
    )
    await loop.create_datagram_endpoint(
        lambda: _Dns(args.log, args.foreign_dns, True), local_addr=(args.foreign_dns, 53)
    )
    echo_addrs = args.echo.split(",")
    for addr in echo_addrs:
        await loop.create_datagram_endpoint(_UdpEcho, local_addr=(addr, 443))

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        local = writer.get_extra_info("sockname")
        _log(args.log, {"event": "tcp", "server": local[0], "port": local[1]})
        try:
            while data := await reader.read(65536):
                writer.write(b"echo:" + data)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    for port in (80, 443, 8080, 853, 5201):
        await asyncio.start_server(echo, echo_addrs, port)
    print("ready", flush=True)
    done = asyncio.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(done.set))).start()
    await done.wait()


def _probe_many(args: argparse.Namespace) -> dict[str, Any]:
    """``--count N`` queries at once, each from its own socket (its own source port, as
    many phones would send them); reports the ports that got an answer."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(args.count)]
    try:
        for s in socks:
            s.bind(("0.0.0.0", 0))
            s.sendto(DNSRecord.question(args.name, "A").pack(), (args.host, 53))
        ports: list[int] = []
        rcodes: set[str] = set()
        for s in socks:
            s.settimeout(args.timeout)
            try:
                r = DNSRecord.parse(s.recv(65536))
            except TimeoutError:
                continue
            ports.append(s.getsockname()[1])
            rcodes.add(str(RCODE.get(r.header.rcode)))
        return {"ports": ports, "rcodes": sorted(rcodes)}
    finally:
        for s in socks:
            s.close()


def _probe(args: argparse.Namespace) -> dict[str, Any]:
    if args.kind == "dns" and args.count > 1:
        return _probe_many(args)
    if args.kind == "dns":
        q = DNSRecord.question(args.name, "A")
        if args.tcp:
            with socket.create_connection((args.host, 53), timeout=args.timeout) as s:
                data = q.pack()
                s.sendall(len(data).to_bytes(2, "big") + data)
                head = s.recv(2)
                n = int.from_bytes(head, "big")
                buf = b""
                while len(buf) < n:
                    chunk = s.recv(n - len(buf))
                    if not chunk:
                        break
                    buf += chunk
                r = DNSRecord.parse(buf)
        else:
            r = DNSRecord.parse(q.send(args.host, 53, timeout=args.timeout))
        return {
            "rcode": RCODE.get(r.header.rcode),
            "addresses": [str(rr.rdata) for rr in r.rr if rr.rtype == QTYPE.A],
        }
    payload = bytes.fromhex(args.send)
    if args.kind == "udp":
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(args.timeout)
            s.sendto(payload, (args.host, args.port))
            data, _ = s.recvfrom(65536)
            return {"reply": data.hex()}
    with socket.create_connection((args.host, args.port), timeout=args.timeout) as s:
        s.sendall(payload)
        want = len(payload) + 5
        buf = b""
        while len(buf) < want:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        if not buf:
            return {"error": "closed"}
        return {"reply": buf.hex()}


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--log", required=True)
    s.add_argument("--dns", required=True)
    s.add_argument("--foreign-dns", required=True)
    s.add_argument("--echo", required=True, help="comma-separated addresses of echo servers")
    pr = sub.add_parser("probe")
    pr.add_argument("kind", choices=("dns", "tcp", "udp"))
    pr.add_argument("--host", required=True)
    pr.add_argument("--port", type=int, default=53)
    pr.add_argument("--name", default="")
    pr.add_argument("--send", default="")
    pr.add_argument("--tcp", action="store_true")
    pr.add_argument("--timeout", type=float, default=3.0)
    pr.add_argument("--count", type=int, default=1, help="dns: queries from this many sockets")
    args = p.parse_args()
    if args.cmd == "serve":
        asyncio.run(_serve(args))
        return
    try:
        out = _probe(args)
    except (OSError, TimeoutError) as exc:
        out = {"error": type(exc).__name__ + ": " + str(exc)}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
