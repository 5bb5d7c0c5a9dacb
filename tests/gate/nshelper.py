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

from dnslib import AAAA, CNAME, QTYPE, RCODE, RR, A, DNSRecord

ZONE = {
    "short.weixin.qq.com": "198.18.2.10",
    "sgshort.wechat.com": "198.18.2.10",
    "long.weixin.qq.com": "198.18.2.10",
    "szlong.weixin.qq.com": "198.18.2.30",  # the real wxnet server (its own address)
    "video.example": "198.18.3.10",
    "connectivitycheck.gstatic.com": "198.18.3.20",
    "edge.cdn.example": "198.18.3.30",  # a shared CDN
    "huge.weixin.qq.com": "198.18.2.11",  # answered with a TTL of 2^31
}
ZONE6 = {"short.weixin.qq.com": "fd18:2::10", "video.example": "fd18:3::10"}
CNAMES = {"mmbiz.qpic.cn": "edge.cdn.example"}  # a WeChat name served by a shared CDN
#: answers that smuggle a record for another name (it must not be learned)
EXTRA = {"extra.weixin.qq.com": ("198.18.2.10", "video.example", "198.18.3.10")}
LIAR = "198.18.3.10"
NEWGETDNS = (
    b'<?xml version="1.0" encoding="utf-8"?><dns><retcode>0</retcode><domainlist>'
    b'<domain name="szlong.weixin.qq.com" timeout="600" ports="8080">'
    b"<ip>198.18.2.40</ip><ip>fd18:2::40</ip></domain></domainlist>"
    b"<clientip>10.77.0.2</clientip><timestamp>0</timestamp></dns>"
)


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
        target = None if self.liar else CNAMES.get(name)
        if target is not None:
            r.add_answer(RR(q.q.qname, QTYPE.CNAME, rdata=CNAME(target), ttl=60))
            if q.q.qtype == QTYPE.A:
                r.add_answer(RR(target, QTYPE.A, rdata=A(ZONE[target]), ttl=60))
        elif not self.liar and name in EXTRA:
            own, other, other_ip = EXTRA[name]
            r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A(own), ttl=60))
            r.add_answer(RR(other, QTYPE.A, rdata=A(other_ip), ttl=60))
        elif q.q.qtype == QTYPE.AAAA and not self.liar and name in ZONE6:
            r.add_answer(RR(q.q.qname, QTYPE.AAAA, rdata=AAAA(ZONE6[name]), ttl=60))
        elif ip is None:
            r.header.rcode = RCODE.NXDOMAIN
        elif q.q.qtype == QTYPE.A:
            ttl = 2**31 if name.startswith("huge.") else 60
            r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A(ip), ttl=ttl))
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
        for uport in (443, 8000):
            await loop.create_datagram_endpoint(_UdpEcho, local_addr=(addr, uport))

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        local = writer.get_extra_info("sockname")
        _log(args.log, {"event": "tcp", "server": local[0], "port": local[1]})
        try:
            while data := await reader.read(65536):
                if data.startswith(b"GET /cgi-bin/micromsg-bin/newgetdns"):  # HTTP-DNS (S10)
                    head = "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n"
                    head += f"Content-Length: {len(NEWGETDNS)}\r\n\r\n"
                    writer.write(head.encode() + NEWGETDNS)
                else:
                    writer.write(b"echo:" + data)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    for port in (80, 443, 8080, 853, 5201, 22):
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
        q = DNSRecord.question(args.name, args.qtype)
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
            r = DNSRecord.parse(q.send(args.host, 53, timeout=args.timeout, ipv6=":" in args.host))
        return {
            "rcode": RCODE.get(r.header.rcode),
            "addresses": [str(rr.rdata) for rr in r.rr if rr.rtype in (QTYPE.A, QTYPE.AAAA)],
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
        if args.silent:  # say nothing until the server gives up (or this times out)
            try:
                if s.recv(1) == b"":
                    return {"error": "closed"}
            except TimeoutError:
                pass
        s.sendall(payload)
        if args.hold:  # a long-lived flow: one exchange, then wait for a line on stdin
            first = s.recv(65536)
            print(json.dumps({"first": first.hex()}), flush=True)
            sys.stdin.readline()
            s.settimeout(args.timeout)
            try:
                s.sendall(payload)
                again = s.recv(65536)
            except OSError as exc:
                return {"error": type(exc).__name__}
            return {"reply": again.hex()} if again else {"error": "closed"}
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
    pr.add_argument("--qtype", default="A", help="dns: A or AAAA")
    pr.add_argument("--silent", action="store_true", help="tcp: wait before sending")
    pr.add_argument("--hold", action="store_true", help="tcp: keep the flow open (stdin)")
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
