"""Real fault injection on loopback: a TCP proxy that can pass, refuse, drop or stall
connections, and a UDP DNS server that can answer, fail or stay silent."""

from __future__ import annotations

import asyncio
import contextlib
from enum import Enum

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class Mode(Enum):
    PASS = "pass"
    REFUSE = "refuse"  # accept, then close at once
    DROP_REPLIES = "drop_replies"  # forward requests; close when the first reply byte comes
    STALL = "stall"  # accept and read, forward nothing


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of ``target_port``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = Mode.PASS
        self.port = 0
        self.accepted = 0
        #: Bytes from clients (forwarded or not), for :meth:`wait_for_request`.
        self.received = bytearray()
        self._data = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, port: int = 0) -> Proxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _note(self, data: bytes) -> None:
        self.received += data[:4096]
        del self.received[: max(0, len(self.received) - 65536)]
        self._data.set()

    async def wait_for_request(self, needle: bytes, timeout: float) -> None:
        """Wait until ``needle`` (e.g. a CGI path) shows up in the client's bytes."""

        async def wait() -> None:
            while needle not in self.received:
                self._data.clear()
                await self._data.wait()

        await asyncio.wait_for(wait(), timeout)

    async def stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def drop_all(self) -> None:
        for w in list(self._conns):
            w.transport.abort()
        self._conns.clear()

    async def close(self) -> None:
        await self.stop_listening()
        self.drop_all()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks)  # never swallows the caller's own cancel

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._conns.add(writer)
        mode = self.mode
        if mode is Mode.REFUSE:
            writer.transport.abort()
            return
        if mode is Mode.STALL:
            with contextlib.suppress(Exception):
                while data := await reader.read(65536):
                    self._note(data)
            writer.close()
            return
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._conns.add(uw)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, replies: bool) -> None:
            try:
                while data := await src.read(65536):
                    if not replies:
                        self._note(data)
                    if self.mode is Mode.STALL:
                        continue
                    if replies and self.mode is Mode.DROP_REPLIES:
                        writer.transport.abort()
                        uw.transport.abort()
                        return
                    dst.write(data)
                    await dst.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        t1 = asyncio.ensure_future(pipe(reader, uw, False))
        t2 = asyncio.ensure_future(pipe(ur, writer, True))
        for t in (t1, t2):
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)


class DnsMode(Enum):
    ANSWER = "answer"
    SERVFAIL = "servfail"
    SILENT = "silent"


class DnsServer(asyncio.DatagramProtocol):
    """A UDP DNS server on 127.0.0.1 answering A queries from ``records``."""

    def __init__(self, records: dict[str, str]) -> None:
        self.records = {k.rstrip(".").lower(): v for k, v in records.items()}
        self.mode = DnsMode.ANSWER
        self.queries = 0
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    async def start(self) -> DnsServer:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, ("127.0.0.1", 0))
        self.port = transport.get_extra_info("sockname")[1]
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queries += 1
        if self.mode is DnsMode.SILENT or self.transport is None:
            return
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return
        resp = dns.message.make_response(query)
        if self.mode is DnsMode.SERVFAIL:
            resp.set_rcode(dns.rcode.SERVFAIL)
        else:
            q = query.question[0]
            name = q.name.to_text().rstrip(".").lower()
            ip = self.records.get(name)
            if ip is None:
                resp.set_rcode(dns.rcode.NXDOMAIN)
            elif q.rdtype == dns.rdatatype.A:
                resp.answer.append(dns.rrset.from_text(q.name, 60, "IN", "A", ip))
            resp.flags |= dns.flags.AA
        self.transport.sendto(resp.to_wire(), addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
