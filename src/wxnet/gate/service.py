"""The running gateway: nftables table, DNS filter servers, inspector, records, web.

``GateService.start`` applies the ruleset (one transaction), then opens the DNS
filter (UDP and TCP), the inspector and, if configured, the web page with
``/metrics``. ``stop(remove_table=True)`` is the clean exit that deletes the table;
a process that dies leaves the table in place, which keeps allow-only groups closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from wxnet.classify import Classifier, DnsMemory
from wxnet.gate.dnsfilter import DnsFilter, Forward, MalformedQuery, Reply
from wxnet.gate.inspector import Inspector
from wxnet.gate.metrics import Metrics
from wxnet.gate.nft import Nft, NftError
from wxnet.gate.policy import Policy
from wxnet.gate.records import FlowRecord, JsonlWriter, RecordStore
from wxnet.gate.ruleset import render

__all__ = ["GateService", "Neighbours", "RecordSink", "Upstreams"]

log = logging.getLogger("wxnet.gate")
UPSTREAM_TIMEOUT = 2.0
TCP_IDLE = 10.0
MAX_PENDING = 4096


class Neighbours:
    """IPv4 address -> MAC from the kernel's ARP table (``/proc/net/arp``)."""

    def __init__(self, path: str = "/proc/net/arp", ttl: float = 5.0) -> None:
        self.path = path
        self.ttl = ttl
        self._table: dict[str, str] = {}
        self._read_at = -1e9

    def _reload(self) -> None:
        table: dict[str, str] = {}
        try:
            with open(self.path, encoding="ascii", errors="replace") as fh:
                next(fh, None)
                for line in fh:
                    parts = line.split()
                    if len(parts) >= 4 and parts[3] != "00:00:00:00:00:00":
                        table[parts[0]] = parts[3].lower()
        except OSError:
            pass
        self._table = table
        self._read_at = time.monotonic()

    def mac_for(self, ip: str) -> str | None:
        if ip.startswith("::ffff:"):
            ip = ip[7:]
        mac = self._table.get(ip)
        if (
            mac is None and time.monotonic() - self._read_at > 0.2
        ) or time.monotonic() - self._read_at > self.ttl:
            self._reload()
            mac = self._table.get(ip)
        return mac


class _UpstreamProtocol(asyncio.DatagramProtocol):
    def __init__(self, pending: dict[int, asyncio.Future[bytes]]) -> None:
        self.pending = pending

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) < 2:
            return
        fut = self.pending.pop(int.from_bytes(data[:2], "big"), None)
        if fut is not None and not fut.done():
            fut.set_result(data)


class Upstreams:
    """Forwards queries over UDP to the configured servers, one shared socket each,
    rewriting the query id so that answers find their query."""

    def __init__(self, servers: tuple[tuple[str, int], ...]) -> None:
        self.servers = servers
        self._sockets: dict[tuple[str, int], asyncio.DatagramTransport] = {}
        self._pending: dict[tuple[str, int], dict[int, asyncio.Future[bytes]]] = {}

    async def _transport(self, server: tuple[str, int]) -> asyncio.DatagramTransport:
        tr = self._sockets.get(server)
        if tr is None or tr.is_closing():
            pending: dict[int, asyncio.Future[bytes]] = {}
            loop = asyncio.get_running_loop()
            tr, _ = await loop.create_datagram_endpoint(
                lambda: _UpstreamProtocol(pending), remote_addr=server
            )
            self._sockets[server] = tr
            self._pending[server] = pending
        return tr

    async def query(self, data: bytes) -> bytes:
        """Ask each server in turn; returns the answer with the original id.

        Raises:
            TimeoutError: no server answered.
        """
        qid = data[:2]
        for server in self.servers:
            try:
                tr = await self._transport(server)
            except OSError:
                continue
            pending = self._pending[server]
            if len(pending) >= MAX_PENDING:
                continue
            new_id = random.randrange(65536)
            while new_id in pending:
                new_id = random.randrange(65536)
            fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            pending[new_id] = fut
            tr.sendto(new_id.to_bytes(2, "big") + data[2:])
            try:
                answer = await asyncio.wait_for(fut, UPSTREAM_TIMEOUT)
            except TimeoutError:
                pending.pop(new_id, None)
                continue
            return qid + answer[2:]
        raise TimeoutError("no upstream DNS server answered")

    def close(self) -> None:
        for tr in self._sockets.values():
            tr.close()
        self._sockets.clear()


class RecordSink:
    """Fans each finished flow out to the JSON-lines log, SQLite, metrics, and the
    recent-records buffer the dashboard draws from."""

    def __init__(
        self,
        metrics: Metrics,
        log_path: str | None = None,
        db_path: str | None = None,
        keep: int = 20000,
    ) -> None:
        self.metrics = metrics
        self.jsonl = JsonlWriter(log_path) if log_path else None
        self.store = RecordStore(db_path) if db_path else None
        self.recent: deque[FlowRecord] = deque(maxlen=keep)

    def __call__(self, rec: FlowRecord) -> None:
        self.recent.append(rec)
        self.metrics.flow(rec)
        if self.jsonl is not None:
            self.jsonl.write(rec)
        if self.store is not None:
            self.store.add(rec)

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        if self.store is not None:
            self.store.close()


class _DnsUdp(asyncio.DatagramProtocol):
    def __init__(self, service: GateService) -> None:
        self.service = service
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.service.spawn(self._answer(data, addr))

    async def _answer(self, data: bytes, addr: Any) -> None:
        reply = await self.service.resolve(data, str(addr[0]), int(addr[1]), "udp")
        if reply is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)


class GateService:
    """Everything ``wxnet gate run`` runs (see module docstring)."""

    def __init__(
        self,
        policy: Policy,
        classifier: Classifier,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.classifier = classifier
        self.clock = clock
        s = policy.settings
        self.memory = DnsMemory()
        self.nft = Nft(s.table)
        self.metrics = Metrics()
        self.sink = RecordSink(self.metrics, s.log, s.db)
        labels = {k: v.label for k, v in policy.catalog.items()}
        self.filter = DnsFilter(policy, classifier.app_for_name, labels)
        self.neighbours = Neighbours()
        self.upstreams = Upstreams(s.upstreams)
        self.inspector = Inspector(
            policy,
            classifier,
            self.memory,
            self.teach,
            self.sink,
            self.neighbours.mac_for,
            clock,
        )
        self.active: frozenset[str] = frozenset()
        self._servers: list[asyncio.Server] = []
        self._udp: list[asyncio.DatagramTransport] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._web: Any = None
        self.http_port: int | None = None

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def teach(self, elements: list[tuple[str, str, int]], now: float) -> int:
        n = await self.nft.add(elements, now)
        self.metrics.inc("wxnet_gate_set_additions_total", n)
        return n

    async def apply_rules(self, fresh: bool) -> None:
        self.active = self.policy.active_groups(self.clock())
        await self.nft.run(render(self.policy, self.active, fresh=fresh))
        self.metrics.set("wxnet_gate_active_groups", len(self.active))

    async def resolve(self, data: bytes, client: str, port: int, transport: str) -> bytes | None:
        """The whole DNS path for one query; None: drop it (malformed)."""
        now = self.clock()
        if client.startswith("::ffff:"):
            client = client[7:]
        try:
            act = self.filter.on_query(
                data, client, port, now, self.neighbours.mac_for(client), transport
            )
        except MalformedQuery:
            self.metrics.inc("wxnet_gate_dns_malformed_total")
            return None
        if isinstance(act, Reply):
            self.metrics.inc("wxnet_gate_dns_queries_total", labels={"verdict": "block"})
            self.sink(act.record)
            return act.data
        assert isinstance(act, Forward)
        self.metrics.inc("wxnet_gate_dns_queries_total", labels={"verdict": "allow"})
        try:
            answer = await self.upstreams.query(act.data)
            out = self.filter.on_answer(act, answer, self.clock())
        except (TimeoutError, MalformedQuery):
            self.metrics.inc("wxnet_gate_dns_upstream_failures_total")
            return self.filter.servfail(act)
        if out.elements:
            try:
                await self.teach(list(out.elements), self.clock())
            except NftError as exc:
                log.error("cannot add addresses to the allow sets: %s", exc)
                return self.filter.servfail(act)
        for learned in out.learned:
            self.memory.learn(client, learned.name, learned.addresses, learned.ttl, now)
        self.sink(out.record)
        return out.data

    async def _dns_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                msg = await asyncio.wait_for(
                    reader.readexactly(int.from_bytes(head, "big")), TCP_IDLE
                )
                reply = await self.resolve(msg, str(peer[0]), int(peer[1]), "tcp")
                if reply is None:
                    break
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def start(self) -> None:
        """Apply the ruleset and open every listener.

        Raises:
            NftError: the ruleset was refused.
            OSError: a listener could not bind.
        """
        s = self.policy.settings
        await self.apply_rules(fresh=True)
        try:
            loop = asyncio.get_running_loop()
            for host in s.dns_listen:
                tr, _ = await loop.create_datagram_endpoint(
                    lambda: _DnsUdp(self), local_addr=(host, s.dns_port)
                )
                self._udp.append(tr)
            self._servers.append(
                await asyncio.start_server(self._dns_tcp, list(s.dns_listen), s.dns_port)
            )
            self._servers.append(
                await asyncio.start_server(
                    self.inspector.handle, ["0.0.0.0", "::"], s.inspector_port, backlog=1024
                )
            )
            if s.http:
                from wxnet.gate.web import start_web

                self._web, self.http_port = await start_web(self, s.http)
            self.spawn(self._schedule())
        except BaseException:
            await self.stop(remove_table=True)
            raise

    async def _schedule(self) -> None:
        """Re-apply the rules when the set of active groups changes (schedules)."""
        while True:
            now = self.clock()
            nxt = self.policy.next_change(now)
            await asyncio.sleep(60.0 if nxt is None else min(60.0, max(0.5, nxt - now)))
            if self.policy.active_groups(self.clock()) != self.active:
                try:
                    await self.apply_rules(fresh=False)
                    log.info("schedule: active groups now %s", sorted(self.active))
                except NftError as exc:
                    log.error("schedule change not applied: %s", exc)

    async def stop(self, remove_table: bool = True) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for srv in self._servers:
            srv.close()
        for tr in self._udp:
            tr.close()
        self.upstreams.close()
        if self._web is not None:
            await self._web.cleanup()
            self._web = None
        self._servers.clear()
        self._udp.clear()
        if remove_table:
            with contextlib.suppress(NftError):
                await self.nft.remove_table()
        self.sink.close()
