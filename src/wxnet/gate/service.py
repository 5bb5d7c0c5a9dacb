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
import shutil
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from wxnet._compat import wait_for
from wxnet.classify import Classifier, DnsMemory
from wxnet.gate.attest import Attestations
from wxnet.gate.ctevents import parse_destroy
from wxnet.gate.dnsfilter import Answer, DnsFilter, Forward, MalformedQuery, Reply
from wxnet.gate.inspector import Inspector
from wxnet.gate.metrics import Metrics
from wxnet.gate.nft import Nft, NftError
from wxnet.gate.policy import Policy
from wxnet.gate.records import FlowRecord, JsonlWriter, RecordStore
from wxnet.gate.ruleset import MARK_BASE, MARK_MASK, app_of_mark, mark_epoch, render
from wxnet.gate.upstreams import Listeners, Neighbours, Upstreams, bind_listeners

__all__ = [
    "GateService",
    "Listeners",
    "Neighbours",
    "RecordSink",
    "Upstreams",
    "bind_listeners",
]

log = logging.getLogger("wxnet.gate")
TCP_IDLE = 10.0
_ALLOWED = Metrics.key("wxnet_gate_dns_queries_total", {"verdict": "allow"})
_BLOCKED = Metrics.key("wxnet_gate_dns_queries_total", {"verdict": "block"})
_ANSWERED_HERE = Metrics.key("wxnet_gate_dns_process_answers_total", {"process": "0"})


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
        if log.isEnabledFor(logging.INFO):
            log.info("flow %s", rec.to_json())
        self.recent.append(rec)
        self.metrics.flow(rec)
        if self.jsonl is not None:
            self.jsonl.write(rec)
        if self.store is not None:
            self.store.add(rec)

    def flush(self) -> None:
        if self.jsonl is not None:
            self.jsonl.flush()

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
        act = self.service.query(data, str(addr[0]), int(addr[1]), "udp")
        if isinstance(act, Forward):
            self.service.upstreams.send(act.data, lambda answer: self._answered(act, addr, answer))
        elif act is not None:
            self._send(act, addr)

    def _answered(self, act: Forward, addr: Any, answer: bytes | None) -> None:
        reply, elements = self.service.answered(act, answer)
        if elements:  # the addresses must be in the sets before the client hears of them
            self.service.spawn(self._release(act, addr, reply, elements))
        else:
            self._send(reply, addr)

    async def _release(self, act: Forward, addr: Any, reply: bytes, elements: list[Any]) -> None:
        self._send(await self.service.release(act, reply, elements), addr)

    def _send(self, data: bytes, addr: Any) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)


class GateService:
    """Everything ``wxnet gate run`` runs (see module docstring)."""

    def __init__(
        self,
        policy: Policy,
        classifier: Classifier,
        clock: Callable[[], float] = time.time,
        sink: RecordSink | None = None,
    ) -> None:
        self.policy = policy
        self.classifier = classifier
        self.clock = clock
        s = policy.settings
        self.memory = DnsMemory()
        self.nft = Nft(s.table)
        self.metrics = Metrics()
        self.sink = sink if sink is not None else RecordSink(self.metrics, s.log, s.db)
        labels = {k: v.label for k, v in policy.catalog.items()}
        self.filter = DnsFilter(policy, classifier.app_for_name, labels)
        self.neighbours = Neighbours()
        self.upstreams = Upstreams(s.upstreams)
        self.attest = Attestations(policy)
        self.epoch = random.SystemRandom().randrange(1, 256)  # this run's conntrack marks
        self.table_applied = False  # this run installed the table (a failed start must
        # not delete a table it did not install: that would open the network)
        self.inspector = Inspector(
            policy,
            classifier,
            self.memory,
            self.teach,
            self.sink,
            self.neighbours.mac_for,
            clock,
            attest=self.attest,
            sync=self._sync_workers,
        )
        self.active: frozenset[str] = frozenset()
        self._servers: list[asyncio.Server] = []
        self._udp: list[asyncio.DatagramTransport] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._web: Any = None
        self._conntrack: asyncio.subprocess.Process | None = None
        self.http_port: int | None = None
        self.workers: Any = None  # a dnsworker.WorkerPool when dns-workers > 1
        self.failure = asyncio.Event()  # set (with failure_reason) when the gate must exit
        self.failure_reason = ""

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def teach(self, elements: list[tuple[str, str, int]], now: float) -> int:
        n = await self.nft.add(elements, now)
        self.metrics.inc("wxnet_gate_set_additions_total", n)
        return n

    def _sync_workers(self) -> None:
        if self.workers is not None:
            self.workers.poll()

    async def apply_rules(self, fresh: bool) -> None:
        self.active = self.policy.active_groups(self.clock())
        await self.nft.run(render(self.policy, self.active, fresh=fresh, epoch=self.epoch))
        self.metrics.set("wxnet_gate_active_groups", len(self.active))

    def query(self, data: bytes, client: str, port: int, transport: str) -> bytes | Forward | None:
        """The synchronous half of the DNS path: a reply to send now, a query to forward
        (then :meth:`forward`), or None to drop it (malformed)."""
        now = self.clock()
        if client.startswith("::ffff:"):
            client = client[7:]
        client = client.split("%", 1)[0]
        try:
            act = self.filter.on_query(
                data, client, port, now, self.neighbours.mac_for(client), transport
            )
        except MalformedQuery:
            self.metrics.inc("wxnet_gate_dns_malformed_total")
            return None
        if isinstance(act, Reply):
            self.metrics.add(_BLOCKED)
            self.sink(act.record)
            if self.workers is not None:
                self.metrics.add(_ANSWERED_HERE)
            return act.data
        self.metrics.add(_ALLOWED)
        return act

    def answered(self, act: Forward, answer: bytes | None) -> tuple[bytes, list[Any]]:
        """Process an upstream answer: (reply, set elements still to add). When the list
        is empty the reply may be sent at once; otherwise call :meth:`release` after
        adding them."""
        if answer is None:
            self.metrics.inc("wxnet_gate_dns_upstream_failures_total")
            return self.filter.servfail(act), []
        try:
            out = self.filter.on_answer(act, answer, self.clock())
        except MalformedQuery:
            self.metrics.inc("wxnet_gate_dns_upstream_failures_total")
            return self.filter.servfail(act), []
        now = self.clock()
        self.record_answer(act, out, now)
        return out.data, self.nft.needed(out.elements, now)

    def record_answer(self, act: Forward, out: Answer, now: float) -> None:
        """Learn the answer's addresses (spoof checks) and record the flow; a DNS worker
        process sends both to the gateway process instead."""
        for learned in out.learned:
            self.memory.learn(act.client, learned.name, learned.addresses, learned.ttl, now)
        for a in out.attested:
            self.attest.add(a.group, a.app, a.address, a.kind, now + a.ttl)
        self.sink(out.record)
        if self.workers is not None:
            self.metrics.add(_ANSWERED_HERE)

    def fail(self, reason: str) -> None:
        """Tell whoever runs the service that it cannot go on (``wxnet gate run`` exits
        with an error and leaves the table in place: allow-only groups stay closed)."""
        if not self.failure.is_set():
            log.error("gate failing: %s", reason)
            self.failure_reason = reason
            self.failure.set()

    async def release(self, act: Forward, reply: bytes, elements: list[Any]) -> bytes:
        """Add ``elements`` to the sets, then return ``reply`` (SERVFAIL if that failed)."""
        try:
            await self.teach(elements, self.clock())
        except NftError as exc:
            log.error("cannot add addresses to the allow sets: %s", exc)
            return self.filter.servfail(act)
        return reply

    async def forward(self, act: Forward) -> bytes:
        """Ask upstream, put the answer's addresses into the sets, then return the reply
        (SERVFAIL when no upstream answered or the sets could not be filled)."""
        try:
            answer: bytes | None = await self.upstreams.query(act.data)
        except TimeoutError:
            answer = None
        reply, elements = self.answered(act, answer)
        if elements:
            reply = await self.release(act, reply, elements)
        return reply

    async def resolve(self, data: bytes, client: str, port: int, transport: str) -> bytes | None:
        """The whole DNS path for one query; None: drop it (malformed)."""
        act = self.query(data, client, port, transport)
        if isinstance(act, Forward):
            return await self.forward(act)
        return act

    async def _dns_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            while True:
                head = await wait_for(reader.readexactly(2), TCP_IDLE)
                msg = await wait_for(reader.readexactly(int.from_bytes(head, "big")), TCP_IDLE)
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
        """Open every listener, then apply the ruleset, then start the rest.

        Fails closed: a listener that cannot bind stops the start *before* the table is
        touched (a table a crashed run left stays in place); the ruleset replaces the
        old table in one transaction; a failure after that leaves the new table in
        place (``table_applied``) rather than opening the network.

        Raises:
            NftError: the ruleset was refused.
            OSError: a listener could not bind.
            WorkerError: a DNS worker would not start.
        """
        s = self.policy.settings
        try:
            socks = bind_listeners(self.policy, reuse_port=s.dns_workers > 1)
        except OSError:
            raise
        try:
            await self.start_dns(reuse_port=s.dns_workers > 1, socks=socks)
            self._servers.append(
                await asyncio.start_server(self.inspector.handle, sock=socks.inspector[0])
            )
            for extra in socks.inspector[1:]:
                self._servers.append(await asyncio.start_server(self.inspector.handle, sock=extra))
            if s.http:
                from wxnet.gate.web import start_web

                self._web, self.http_port = await start_web(self, s.http)
            await self.apply_rules(fresh=True)
        except BaseException:
            socks.close()
            await self.stop(remove_table=False)
            raise
        self.table_applied = True
        try:
            await self._flush_old_conntrack()
            if s.dns_workers > 1:
                from wxnet.gate.dnsworker import WorkerPool

                self.workers = WorkerPool(self, s.dns_workers - 1)
                await self.workers.start()
            self.spawn(self._schedule())
            self.spawn(self._flush_records())
            await self._start_conntrack()
        except BaseException:
            await self.stop(remove_table=False)  # fail closed: the table stays
            raise

    async def start_dns(self, reuse_port: bool = False, socks: Listeners | None = None) -> None:
        """Open the upstream sockets and the DNS listeners (UDP and TCP). With
        ``reuse_port`` several processes share the port (``SO_REUSEPORT``: the kernel
        spreads clients over them)."""
        if socks is None:
            socks = bind_listeners(self.policy, reuse_port=reuse_port, inspector=False)
        await self.upstreams.open()
        loop = asyncio.get_running_loop()
        for sock in socks.dns_udp:
            tr, _ = await loop.create_datagram_endpoint(lambda: _DnsUdp(self), sock=sock)
            self._udp.append(tr)
        for sock in socks.dns_tcp:
            self._servers.append(await asyncio.start_server(self._dns_tcp, sock=sock))

    async def _flush_old_conntrack(self) -> None:
        """Delete conntrack entries that carry an earlier run's marks: their verdicts
        were taken under another policy (a tunnel must not survive a restart)."""
        exe = shutil.which("conntrack")
        if exe is None:
            return
        proc = await asyncio.create_subprocess_exec(
            exe, "-L", "-m", f"0x{MARK_BASE:08x}/0x{MARK_MASK:08x}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        out, _ = await proc.communicate()
        marks = set()
        for token in out.decode("ascii", "replace").split():
            if token.startswith("mark="):
                with contextlib.suppress(ValueError):
                    mark = int(token[5:])
                    if mark_epoch(mark) not in (None, self.epoch):
                        marks.add(mark)
        for mark in sorted(marks):
            proc = await asyncio.create_subprocess_exec(
                exe, "-D", "-m", str(mark),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            await proc.wait()
        if marks:
            log.warning("flushed conntrack entries of earlier runs (%d marks)", len(marks))
        self.metrics.inc("wxnet_gate_conntrack_flushes_total", len(marks))

    async def _start_conntrack(self) -> None:
        """Follow conntrack DESTROY events to record flows the kernel passed on its own
        (needs the ``conntrack`` tool; without it those flows go unrecorded)."""
        exe = shutil.which("conntrack")
        if exe is None:
            log.warning("conntrack tool missing: kernel-path flows will not be recorded")
            return
        try:
            with open("/proc/sys/net/netfilter/nf_conntrack_acct", "w") as fh:
                fh.write("1")  # byte counters per flow
        except OSError as exc:
            log.warning("cannot enable conntrack accounting: %s", exc)
        self._conntrack = await asyncio.create_subprocess_exec(
            exe, "-E", "-e", "DESTROY", "-o", "extended",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        self.spawn(self._conntrack_events(self._conntrack))

    async def _conntrack_events(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            self.kernel_flow(line.decode("ascii", errors="replace"))

    def kernel_flow(self, line: str) -> FlowRecord | None:
        """Record one conntrack DESTROY event if its mark says wxnet decided the flow."""
        flow = parse_destroy(line)
        if flow is None or flow.mark & MARK_MASK != MARK_BASE:
            return None
        hit = app_of_mark(self.policy, flow.mark, self.epoch)
        if hit is None:
            return None
        app: str | None = hit[0]
        kind: str | None = hit[1]
        now = self.clock()
        mac = self.neighbours.mac_for(flow.client)
        device, group = self.policy.group_for(flow.client, mac, now, mac_known=mac is not None)
        info = self.policy.catalog.get(app) if app is not None else None
        if app == "pass":
            app, label, kind = None, "not blocked", None
        else:
            label = info.label if info is not None else str(app)
        rec = FlowRecord(
            time=now,
            device=device,
            group=group.name if group else None,
            transport=flow.transport,
            client=flow.client,
            client_port=flow.client_port,
            server=flow.server,
            server_port=flow.server_port,
            app=app,
            label=label,
            evidence=(f"conntrack mark 0x{flow.mark:08x}: verdict cached in the kernel",),
            verdict="allow",
            path="kernel",
            bytes_up=flow.bytes_up,
            bytes_down=flow.bytes_down,
            admitted_by=kind,
        )
        self.sink(rec)
        return rec

    async def _flush_records(self) -> None:
        """The JSON-lines log is block-buffered; push it to the file every second."""
        while True:
            await asyncio.sleep(1.0)
            self.sink.flush()

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
        if self.workers is not None:
            await self.workers.stop()  # their last records reach the sink below
            self.workers = None
        if self._conntrack is not None and self._conntrack.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._conntrack.terminate()
            with contextlib.suppress(Exception):
                await wait_for(self._conntrack.wait(), 5)
        self.inspector.close_all()
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
        if remove_table and self.table_applied:
            with contextlib.suppress(NftError):
                await self.nft.remove_table()
        self.sink.close()
