"""Transparent inspector: peek at the first bytes of a redirected TCP flow, classify it,
then splice it to its original destination or reset it.

nftables ``redirect`` rewrites the destination to this process; the original one comes
back through ``SO_ORIGINAL_DST`` (conntrack's NAT record). The peek is bounded in bytes
and time; the verdict is taught to the datapath (address sets) so later flows to the
same address stay in the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from wxnet.classify import Classifier, DnsMemory, FlowView, Verdict
from wxnet.gate.decide import Decision, decide
from wxnet.gate.policy import Policy
from wxnet.gate.records import FlowRecord

__all__ = ["Inspector", "NoOriginalDestination", "original_dst", "reset"]

log = logging.getLogger("wxnet.gate.inspector")
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
IP6T_SO_ORIGINAL_DST = 80  # linux/netfilter_ipv6/ip6_tables.h
CONNECT_TIMEOUT = 5.0
SPLICE_CHUNK = 65536


class NoOriginalDestination(OSError):
    """The connection was not redirected by netfilter (someone dialled us directly)."""


def original_dst(sock: socket.socket) -> tuple[str, int]:
    """The destination the client dialled before nftables redirected it here.

    Raises:
        NoOriginalDestination: no NAT record for this connection.
    """
    try:
        if sock.family == socket.AF_INET:
            raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            port = struct.unpack_from("!H", raw, 2)[0]
            return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
        raw = sock.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, 28)
        port = struct.unpack_from("!H", raw, 2)[0]
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    except OSError as exc:
        raise NoOriginalDestination(str(exc)) from None


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), so the client fails fast."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        writer.transport.abort()
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


@dataclass
class _Flow:
    client: str
    client_port: int
    server: str
    server_port: int
    bytes_up: int = 0
    bytes_down: int = 0


class Inspector:
    """One inspector per gateway; :meth:`handle` is the ``asyncio.start_server`` callback.

    Args:
        policy: loaded policy (peek limits, spoof mode, groups).
        classifier: the shared classifier.
        memory: what DNS told each client (filled by the DNS filter).
        teach: coroutine adding ``[(set, address, timeout)]`` to the nftables sets.
        emit: called with each finished flow's record.
        mac_for: neighbour lookup (IP -> MAC) for MAC-matched devices.
        clock: wall clock for records and DNS memory.
    """

    def __init__(
        self,
        policy: Policy,
        classifier: Classifier,
        memory: DnsMemory,
        teach: Callable[[list[tuple[str, str, int]], float], Awaitable[object]],
        emit: Callable[[FlowRecord], None],
        mac_for: Callable[[str], str | None] = lambda ip: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.classifier = classifier
        self.memory = memory
        self.teach = teach
        self.emit = emit
        self.mac_for = mac_for
        self.clock = clock
        self.active = 0

    async def peek(self, reader: asyncio.StreamReader, flow: _Flow) -> tuple[bytes, Verdict]:
        """Read client bytes until the verdict is final, the byte budget is used, the
        client stops sending, or the time budget runs out."""
        s = self.policy.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.peek_timeout
        buf = b""
        while True:
            view = FlowView(
                "tcp", flow.client, flow.client_port, flow.server, flow.server_port, buf
            )
            verdict = self.classifier.classify(view, self.memory, self.clock())
            if (verdict.final and buf) or len(buf) >= s.peek_bytes:
                return buf, verdict
            remaining = deadline - loop.time()
            if remaining <= 0:
                return buf, verdict
            try:
                chunk = await asyncio.wait_for(reader.read(s.peek_bytes - len(buf)), remaining)
            except TimeoutError:
                return buf, verdict
            if not chunk:
                return buf, verdict
            buf += chunk

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.active += 1
        try:
            await self._handle(reader, writer)
        except (ConnectionError, OSError):
            reset(writer)
        except Exception:  # a bug must cost one flow (reset), never the gateway
            log.exception("inspector failed on a flow; resetting it")
            reset(writer)
        finally:
            self.active -= 1

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock: socket.socket = writer.get_extra_info("socket")
        try:
            server, server_port = original_dst(sock)
        except NoOriginalDestination:
            reset(writer)
            return
        peer = writer.get_extra_info("peername")
        client, client_port = str(peer[0]), int(peer[1])
        flow = _Flow(client, client_port, server, server_port)
        now = self.clock()
        device, group = self.policy.group_for(client, self.mac_for(client), now)
        buf, verdict = await self.peek(reader, flow)
        decision = decide(group, verdict, self.policy.settings.spoof)
        if decision.cache is not None:
            s = self.policy.settings
            timeout = s.pass_timeout if decision.cache == "pass" else s.min_set_timeout
            await self.teach([(decision.cache, server, timeout)], self.clock())
        upstream: asyncio.StreamWriter | None = None
        up_reader: asyncio.StreamReader | None = None
        if decision.allow:
            try:
                up_reader, upstream = await asyncio.wait_for(
                    asyncio.open_connection(server, server_port), CONNECT_TIMEOUT
                )
            except (OSError, TimeoutError) as exc:
                decision = Decision(False, decision.cache, f"{decision.reason}; connect: {exc}")
        if not decision.allow or upstream is None or up_reader is None:
            reset(writer)
            flow.bytes_up = len(buf)
            self._record(flow, device, group.name if group else None, verdict, decision, now)
            return
        flow.bytes_up = len(buf)
        upstream.write(buf)
        await asyncio.gather(
            self._pipe(reader, upstream, flow, up=True),
            self._pipe(up_reader, writer, flow, up=False),
        )
        for w in (upstream, writer):
            w.close()
            with contextlib.suppress(OSError, ConnectionError):
                await w.wait_closed()
        self._record(flow, device, group.name if group else None, verdict, decision, now)

    @staticmethod
    async def _pipe(
        src: asyncio.StreamReader, dst: asyncio.StreamWriter, flow: _Flow, up: bool
    ) -> None:
        try:
            while True:
                data = await src.read(SPLICE_CHUNK)
                if not data:
                    break
                if up:
                    flow.bytes_up += len(data)
                else:
                    flow.bytes_down += len(data)
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()
        except (ConnectionError, OSError):
            dst.close()

    def _record(
        self,
        flow: _Flow,
        device: str,
        group: str | None,
        verdict: Verdict,
        decision: Decision,
        start: float,
    ) -> None:
        self.emit(
            FlowRecord(
                time=start,
                device=device,
                group=group,
                transport="tcp",
                client=flow.client,
                client_port=flow.client_port,
                server=flow.server,
                server_port=flow.server_port,
                app=verdict.app,
                label=verdict.label,
                evidence=tuple(f"{e.kind}: {e.detail}" for e in verdict.evidence)
                + (("spoof: claimed name, foreign address",) if verdict.spoofed else ()),
                verdict="allow" if decision.allow else "block",
                path="inspector",
                bytes_up=flow.bytes_up,
                bytes_down=flow.bytes_down,
                reason=decision.reason,
            )
        )
