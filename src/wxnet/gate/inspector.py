"""Transparent inspector: peek at the first bytes of a redirected TCP flow, classify it,
decide (:mod:`wxnet.gate.decide`), then splice it to its original destination or reset it.

nftables ``redirect`` rewrites the destination to this process; the original one comes
back through ``SO_ORIGINAL_DST`` (conntrack's NAT record). The peek is bounded in bytes
and time. Payload only labels or denies: allow-only flows pass when their destination
is attested for the device's group. On an admitted flow to a newgetdns port the
inspector reads the answers to ``GET .../newgetdns`` (S10) and admits their addresses
for that group before the client sees them. Long flows get a record every
``record-every`` seconds, and every open flow one when the gateway stops.
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

from wxnet._compat import wait_for
from wxnet.classify import Classifier, DnsMemory, FlowView, Verdict
from wxnet.gate.attest import Attestations
from wxnet.gate.decide import Decision, decide
from wxnet.gate.policy import ALLOW_ONLY, Group, Policy
from wxnet.gate.records import FlowRecord
from wxnet.gate.ruleset import newgetdns_set
from wxnet.proto.errors import RemoteProtocolError
from wxnet.proto.newgetdns import MAX_DOCUMENT, parse_newgetdns

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


HTTP_HEAD_MAX = 16384


@dataclass
class _Flow:
    client: str
    client_port: int
    server: str
    server_port: int
    bytes_up: int = 0
    bytes_down: int = 0
    reported_up: int = 0
    reported_down: int = 0
    newgetdns_pending: int = 0  # GETs of newgetdns seen whose answer is still to come


def http_response(buf: bytes, eof: bool = False) -> tuple[int, bytes, int] | None:
    """(status, body, bytes used) of one complete HTTP/1.x response at the start of
    ``buf``; None when more bytes are needed.

    Raises:
        ValueError: not an HTTP response (or one too large to read).
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > HTTP_HEAD_MAX:
            raise ValueError("response head too large")
        if eof:
            raise ValueError("truncated response head")
        return None
    head = buf[:end].decode("latin-1").split("\r\n")
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError("not an HTTP/1 response")
    headers = {}
    for line in head[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    start = end + 4
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body, pos = b"", start
        while True:
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                _need(eof)
                return None
            size = int(buf[pos:nl].split(b";")[0].strip() or b"0", 16)
            if size > MAX_DOCUMENT or len(body) + size > MAX_DOCUMENT:
                raise ValueError("response body too large")
            if size == 0:
                trailer = buf.find(b"\r\n", nl + 2)
                if trailer < 0:
                    _need(eof)
                    return None
                return int(parts[1]), body, trailer + 2
            if len(buf) < nl + 2 + size + 2:
                _need(eof)
                return None
            body += buf[nl + 2 : nl + 2 + size]
            pos = nl + 2 + size + 2
    if "content-length" in headers:
        n = int(headers["content-length"])
        if n > MAX_DOCUMENT:
            raise ValueError("response body too large")
        if len(buf) - start < n:
            _need(eof)
            return None
        return int(parts[1]), buf[start : start + n], start + n
    if not eof:
        if len(buf) - start > MAX_DOCUMENT:
            raise ValueError("response body too large")
        return None
    return int(parts[1]), buf[start:], len(buf)


def _need(eof: bool) -> None:
    """More bytes are needed: None, unless the stream ended (then the answer is cut)."""
    if eof:
        raise ValueError("truncated response")


def _flow_of(writer: asyncio.StreamWriter) -> _Flow | None:
    """The redirected connection's flow (its original destination), or ``None`` when
    it has none (not redirected to us)."""
    sock: socket.socket = writer.get_extra_info("socket")
    try:
        server, server_port = original_dst(sock)
    except NoOriginalDestination:
        return None
    peer = writer.get_extra_info("peername")
    client, client_port = str(peer[0]), int(peer[1])
    if client.startswith("::ffff:"):
        client = client[7:]
    if server.startswith("::ffff:"):
        server = server[7:]
    return _Flow(client, client_port, server, server_port)


class Inspector:
    """One inspector per gateway; :meth:`handle` is the ``asyncio.start_server`` callback.

    Args:
        policy: loaded policy (peek limits, spoof mode, groups).
        classifier: the shared classifier.
        memory: what DNS told each client (filled by the DNS filter).
        attest: what admits destinations, per group.
        teach: coroutine adding ``[(set, key, timeout)]`` to the nftables sets.
        emit: called with each flow's records.
        mac_for: neighbour lookup (IP -> MAC) for MAC-matched devices.
        clock: wall clock for records and DNS memory.
        sync: called before a decision (takes in what DNS workers sent).
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
        attest: Attestations | None = None,
        sync: Callable[[], None] = lambda: None,
    ) -> None:
        self.policy = policy
        self.classifier = classifier
        self.memory = memory
        self.attest = attest if attest is not None else Attestations(policy)
        self.teach = teach
        self.emit = emit
        self.mac_for = mac_for
        self.clock = clock
        self.sync = sync
        self.active = 0
        self.newgetdns_learned = 0
        self._open: dict[int, tuple[_Flow, str, str | None, Verdict, Decision, float]] = {}

    async def peek(
        self, reader: asyncio.StreamReader, flow: _Flow, any_port: bool = False
    ) -> tuple[bytes, Verdict, str]:
        """Read client bytes until the verdict is final, the byte budget is used, the
        client stops sending, or the time budget runs out; returns why it stopped
        (``final``, ``budget``, ``eof`` or ``timeout``) with the bytes and verdict."""
        s = self.policy.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.peek_timeout
        buf = b""
        while True:
            view = FlowView(
                "tcp", flow.client, flow.client_port, flow.server, flow.server_port, buf
            )
            verdict = self.classifier.classify(view, self.memory, self.clock(), any_port=any_port)
            if verdict.final and buf:
                return buf, verdict, "final"
            if len(buf) >= s.peek_bytes:
                return buf, verdict, "budget"
            remaining = deadline - loop.time()
            if remaining <= 0:
                return buf, verdict, "timeout"
            try:
                chunk = await wait_for(reader.read(s.peek_bytes - len(buf)), remaining)
            except TimeoutError:
                return buf, verdict, "timeout"
            if not chunk:
                return buf, verdict, "eof"
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

    def group_of(self, client: str, now: float) -> tuple[str, Group | None]:
        mac = self.mac_for(client)
        return self.policy.group_for(client, mac, now, mac_known=mac is not None)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        flow = _flow_of(writer)
        if flow is None:
            reset(writer)
            return
        client, server, server_port = flow.client, flow.server, flow.server_port
        now = self.clock()
        device, group = self.group_of(client, now)
        # block groups: a blocked app's payload head counts on every port
        buf, verdict, ended = await self.peek(
            reader, flow, any_port=group is not None and group.mode != ALLOW_ONLY
        )
        self.sync()
        attests = self.attest.lookup(group.name, server, self.clock()) if group else []
        decision = decide(
            self.policy, group, verdict, client, server, server_port, attests, ended,
            self.classifier.app_for_name,
        )  # fmt: skip
        if decision.teach:
            await self.teach(list(decision.teach), self.clock())
        gname = group.name if group else None
        upstream: asyncio.StreamWriter | None = None
        up_reader: asyncio.StreamReader | None = None
        if decision.allow:
            try:
                up_reader, upstream = await wait_for(
                    asyncio.open_connection(server, server_port), CONNECT_TIMEOUT
                )
            except (OSError, TimeoutError) as exc:
                decision = Decision(False, f"{decision.reason}; connect: {exc}")
        flow.bytes_up = len(buf)
        if not decision.allow or upstream is None or up_reader is None:
            reset(writer)
            self._record(flow, device, gname, verdict, decision, now)
            return
        key = id(flow)
        self._open[key] = (flow, device, gname, verdict, decision, now)
        ticker = asyncio.get_running_loop().create_task(self._tick(key))
        try:
            watch = decision.watch_newgetdns and group is not None
            if watch:
                self._saw_request(flow, buf, decision)
            upstream.write(buf)
            await asyncio.gather(
                self._pipe(reader, upstream, flow, True, decision if watch else None),
                self._pipe(up_reader, writer, flow, False, decision if watch else None, gname),
            )
            for w in (upstream, writer):
                w.close()
                with contextlib.suppress(OSError, ConnectionError):
                    await w.wait_closed()
        finally:
            ticker.cancel()
            if self._open.pop(key, None) is not None:
                self._record(flow, device, gname, verdict, decision, now)

    def _saw_request(self, flow: _Flow, data: bytes, decision: Decision) -> None:
        """Count ``GET <newgetdns path>`` requests starting in a client chunk."""
        if decision.app is None or not data.startswith(b"GET "):
            return
        line = data.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        path = parts[1] if len(parts) > 1 else ""
        if "://" in path:  # absolute form
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        paths = self.policy.catalog[decision.app].newgetdns_paths
        if any(path.split("?", 1)[0] == p for p in paths):
            flow.newgetdns_pending += 1

    async def _tick(self, key: int) -> None:
        every = self.policy.settings.record_every
        while True:
            await asyncio.sleep(every)
            entry = self._open.get(key)
            if entry is None:
                return
            flow, device, gname, verdict, decision, start = entry
            self._record(flow, device, gname, verdict, decision, start, ongoing=True)

    def close_all(self) -> None:
        """Record every flow still open (a clean stop)."""
        for key in list(self._open):
            flow, device, gname, verdict, decision, start = self._open.pop(key)
            self._record(flow, device, gname, verdict, decision, start)

    async def _pipe(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        flow: _Flow,
        up: bool,
        watch: Decision | None = None,
        group: str | None = None,
    ) -> None:
        pending = b""
        try:
            while True:
                data = await src.read(SPLICE_CHUNK)
                if up:
                    if data:
                        flow.bytes_up += len(data)
                        if watch is not None:
                            self._saw_request(flow, data, watch)
                elif data:
                    flow.bytes_down += len(data)
                if not up and watch is not None and (flow.newgetdns_pending or pending):
                    pending += data
                    try:
                        got = http_response(pending, eof=not data)
                    except ValueError as exc:
                        log.info("newgetdns answer from %s not read: %s", flow.server, exc)
                        got, flow.newgetdns_pending = None, 0
                        data, pending = pending, b""
                    else:
                        if got is None and data:
                            continue  # hold the answer until it is complete
                        data, pending = pending, b""
                    if got is not None:
                        flow.newgetdns_pending = max(0, flow.newgetdns_pending - 1)
                        await self._learn_newgetdns(flow, watch, group, got)
                if not data:
                    break
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()
        except (ConnectionError, OSError):
            dst.close()

    async def _learn_newgetdns(
        self, flow: _Flow, decision: Decision, group: str | None, got: tuple[int, bytes, int]
    ) -> None:
        status, body, _used = got
        if status != 200 or group is None or decision.app is None:
            return
        try:
            doc = parse_newgetdns(body)
        except RemoteProtocolError as exc:
            log.info("newgetdns answer from %s not used: %s", flow.server, exc)
            return
        if doc.retcode != 0:
            return
        s = self.policy.settings
        now = self.clock()
        base = newgetdns_set(group, decision.app)
        elements: list[tuple[str, str, int]] = []
        listed = [(d.ttl, ip) for d in doc.domains for ip in d.ips]
        listed += [(doc.ttl, b.ip) for b in doc.builtin]
        for raw_ttl, addr in listed:
            ttl = int(min(max(raw_ttl, s.min_set_timeout), s.max_set_timeout))
            self.attest.add(group, decision.app, addr, "newgetdns", now + ttl)
            elements.append((base, addr, ttl))
        if elements:
            await self.teach(elements, now)
            self.newgetdns_learned += len(elements)

    def _record(
        self,
        flow: _Flow,
        device: str,
        group: str | None,
        verdict: Verdict,
        decision: Decision,
        start: float,
        ongoing: bool = False,
    ) -> None:
        up, down = flow.bytes_up - flow.reported_up, flow.bytes_down - flow.reported_down
        flow.reported_up, flow.reported_down = flow.bytes_up, flow.bytes_down
        self.emit(
            FlowRecord(
                time=self.clock() if ongoing else start,
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
                bytes_up=up,
                bytes_down=down,
                reason=decision.reason,
                admitted_by=decision.admitted_by,
                ongoing=ongoing,
            )
        )
