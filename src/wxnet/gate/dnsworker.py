"""More DNS filter processes: workers that share the DNS port with ``SO_REUSEPORT``.

One Python process answers about one core's worth of queries. With ``dns-workers = N``
the gateway process answers DNS itself and starts N - 1 workers
(``python -m wxnet.gate.dnsworker``); each binds the same addresses and port with
``SO_REUSEPORT`` (the kernel spreads clients over the sockets by address and port),
has its own upstream socket and its own libnftables context, and runs the same
:class:`~wxnet.gate.service.GateService` DNS path.

What must stay in the gateway process reaches it over a ``SOCK_SEQPACKET`` socket pair,
one pickled message per event: flow records and learned answers (the inspector's spoof
checks read them) are sent, with a blocking send, *before* the worker releases the
answer, so a record is never lost once its client has the answer, and a message is
delivered once or not at all (the kernel keeps whole messages; the gateway drains the
socket of a worker that died before it closes it). Counter deltas for ``/metrics``
follow every second.

The gateway supervises its workers: one that exits is restarted; more than
:data:`MAX_DEATHS` worker deaths within :data:`DEATH_WINDOW` seconds make the gateway fail
(``wxnet gate run`` exits non-zero and leaves the table in place, so allow-only groups
stay closed). Workers ignore SIGINT (Ctrl-C reaches the whole process group: the
gateway stops them itself), exit on SIGTERM, and exit when the gateway's end of the
socket closes (the gateway died).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import os
import pickle
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wxnet._compat import wait_for
from wxnet.gate.dnsfilter import Answer, Forward
from wxnet.gate.metrics import Metrics
from wxnet.gate.records import FlowRecord

if TYPE_CHECKING:
    from wxnet.gate.service import GateService

__all__ = ["DEATH_WINDOW", "MAX_DEATHS", "WorkerError", "WorkerPool", "main"]

log = logging.getLogger("wxnet.gate.dnsworker")
MAX_DEATHS = 5
DEATH_WINDOW = 60.0
READY_TIMEOUT = 30.0
SEND_TIMEOUT = 10.0  # a gateway that reads nothing for this long is stuck: the worker exits
METRICS_EVERY = 1.0
_ANSWERS = "wxnet_gate_dns_process_answers_total"
# A record crosses as the tuple of its fields (pickling the dataclass costs 3x more).
_fields = operator.attrgetter(*FlowRecord.__dataclass_fields__)


class WorkerError(RuntimeError):
    """A DNS worker could not be started."""


@dataclass
class _Slot:
    index: int
    proc: asyncio.subprocess.Process | None = None
    sock: socket.socket | None = None
    ready: asyncio.Future[None] | None = None
    watcher: asyncio.Task[None] | None = None
    starts: int = 0


class WorkerPool:
    """The gateway's side: starts ``count`` workers, feeds their messages to the
    service (records, learned answers, counters), replaces workers that die."""

    def __init__(self, service: GateService, count: int) -> None:
        self.service = service
        self.slots = [_Slot(i) for i in range(count)]
        self.payload = pickle.dumps((service.policy, service.classifier))
        self.stopping = False
        self._respawns: set[asyncio.Task[None]] = set()
        self.deaths: deque[float] = deque()  # monotonic times of unexpected exits

    def pids(self) -> list[int]:
        return [s.proc.pid for s in self.slots if s.proc is not None and s.proc.returncode is None]

    async def start(self) -> None:
        """Start every worker and wait until each listens.

        Raises:
            WorkerError: a worker exited or did not get ready in time.
        """
        await asyncio.gather(*(self._spawn(slot) for slot in self.slots))

    async def _spawn(self, slot: _Slot) -> None:
        loop = asyncio.get_running_loop()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "wxnet.gate.dnsworker", str(theirs.fileno()),
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(theirs.fileno(),),
            )  # fmt: skip
        except OSError as exc:
            mine.close()
            raise WorkerError(f"cannot start a DNS worker: {exc}") from None
        finally:
            theirs.close()
        mine.setblocking(False)
        slot.proc, slot.sock = proc, mine
        slot.ready = loop.create_future()
        slot.starts += 1
        loop.add_reader(mine.fileno(), self._readable, slot)
        assert proc.stdin is not None
        proc.stdin.write(self.payload)
        proc.stdin.close()
        slot.watcher = loop.create_task(self._watch(slot, proc))
        try:
            await wait_for(asyncio.shield(slot.ready), READY_TIMEOUT)
        except TimeoutError:
            raise WorkerError(
                f"DNS worker {slot.index} not ready in {READY_TIMEOUT:.0f} s"
            ) from None

    def poll(self) -> None:
        """Take in every message the workers have sent so far (the inspector calls this
        before it decides: an answer a worker released was sent here first)."""
        for slot in self.slots:
            self._readable(slot)

    def _readable(self, slot: _Slot) -> None:
        sock = slot.sock
        if sock is None:
            return
        while True:
            try:
                msg = sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                msg = b""
            if not msg:  # the worker's end closed: its exit is handled by _watch
                asyncio.get_running_loop().remove_reader(sock.fileno())
                return
            self._dispatch(slot, msg)

    def _dispatch(self, slot: _Slot, msg: bytes) -> None:
        try:
            kind, body = pickle.loads(msg)
        except Exception as exc:  # a worker is our own code: this is a bug, say so
            log.error("undecodable message from DNS worker %d: %s", slot.index, exc)
            return
        svc = self.service
        if kind == "answer":
            learned, attested, fields = body
            for client, name, addresses, ttl, now in learned:
                svc.memory.learn(client, name, addresses, ttl, now)
            svc.attest.add_many(attested)
            svc.sink(FlowRecord(*fields))
            svc.metrics.inc(_ANSWERS, labels={"process": str(slot.index + 1)})
        elif kind == "rec":
            svc.sink(FlowRecord(*body))
            svc.metrics.inc(_ANSWERS, labels={"process": str(slot.index + 1)})
        elif kind == "metrics":
            for name, labels, delta in body:
                svc.metrics.inc(name, delta, dict(labels) or None)
        elif kind == "ready" and slot.ready is not None and not slot.ready.done():
            slot.ready.set_result(None)

    def _drain(self, slot: _Slot) -> None:
        """Take every message still queued from ``slot``'s worker, then close its socket."""
        sock, slot.sock = slot.sock, None
        if sock is None:
            return
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(sock.fileno())
        while True:
            try:
                msg = sock.recv(1 << 16)
            except OSError:
                break
            if not msg:
                break
            self._dispatch(slot, msg)
        sock.close()

    async def _watch(self, slot: _Slot, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        self._drain(slot)
        if slot.ready is not None and not slot.ready.done():
            slot.ready.set_exception(WorkerError(f"DNS worker {slot.index} exited ({code})"))
        if self.stopping:
            return
        now = time.monotonic()
        self.deaths.append(now)
        while self.deaths and now - self.deaths[0] > DEATH_WINDOW:
            self.deaths.popleft()
        if len(self.deaths) > MAX_DEATHS:
            self.service.fail(
                f"DNS workers died {len(self.deaths)} times in {DEATH_WINDOW:.0f} s"
                f" (the last, worker {slot.index}, with exit status {code})"
            )
            return
        log.error(
            "DNS worker %d (pid %d) exited with %s: restarting it", slot.index, proc.pid, code
        )
        self.service.metrics.inc("wxnet_gate_dns_worker_restarts_total")
        task = asyncio.get_running_loop().create_task(self._respawn(slot))
        self._respawns.add(task)
        task.add_done_callback(self._respawns.discard)

    async def _respawn(self, slot: _Slot) -> None:
        try:
            await self._spawn(slot)
        except WorkerError as exc:
            if not self.stopping:
                self.service.fail(str(exc))
            return
        assert slot.proc is not None
        log.warning("DNS worker %d restarted (pid %d)", slot.index, slot.proc.pid)

    async def stop(self) -> None:
        """SIGTERM every worker, wait (bounded; then SIGKILL), keep their last messages."""
        self.stopping = True
        for task in list(self._respawns):
            task.cancel()
        for task in list(self._respawns):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for slot in self.slots:
            if slot.proc is not None and slot.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.terminate()
        for slot in self.slots:
            if slot.proc is None:
                continue
            try:
                await wait_for(slot.proc.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.kill()
                await slot.proc.wait()
            if slot.watcher is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await slot.watcher
            self._drain(slot)


# --- the worker process -------------------------------------------------------------


class _Link:
    """The worker's end: whole messages, blocking (bounded) sends."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.settimeout(SEND_TIMEOUT)

    def send(self, kind: str, body: Any) -> None:
        self.sock.send(pickle.dumps((kind, body), pickle.HIGHEST_PROTOCOL))


class _LinkSink:
    """Stands in for the RecordSink: records go to the gateway process."""

    def __init__(self, link: _Link) -> None:
        self.link = link

    def __call__(self, rec: FlowRecord) -> None:
        self.link.send("rec", _fields(rec))

    def flush(self) -> None:
        """Records are not buffered here."""

    def close(self) -> None:
        """The link is closed by the worker's main."""


def _worker_service(policy: Any, classifier: Any, link: _Link) -> GateService:
    from wxnet.gate.service import GateService, RecordSink

    class WorkerService(GateService):
        def record_answer(self, act: Forward, out: Answer, now: float) -> None:
            learned = [(act.client, x.name, x.addresses, x.ttl, now) for x in out.learned]
            attested = [(a.group, a.app, a.address, a.kind, now + a.ttl) for a in out.attested]
            link.send("answer", (learned, attested, _fields(out.record)))

    sink: Any = _LinkSink(link)
    svc = WorkerService(policy, classifier, sink=sink)
    assert not isinstance(svc.sink, RecordSink)
    return svc


def _metric_deltas(metrics: Metrics, sent: dict[Any, float]) -> list[Any]:
    out = []
    for key, value in metrics.counts(gauges=False).items():
        delta = value - sent.get(key, 0)
        if delta:
            out.append((key[0], key[1], delta))
            sent[key] = value
    return out


async def _serve(policy: Any, classifier: Any, link: _Link) -> int:
    loop = asyncio.get_running_loop()
    svc = _worker_service(policy, classifier, link)
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)

    def gateway_gone() -> None:  # readable: only EOF ever arrives from the gateway
        with contextlib.suppress(OSError):
            if link.sock.recv(1, socket.MSG_DONTWAIT) == b"":
                loop.remove_reader(link.sock.fileno())
                done.set()

    loop.add_reader(link.sock.fileno(), gateway_gone)
    await svc.start_dns(reuse_port=True)
    link.send("ready", None)
    sent: dict[Any, float] = {}
    try:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await wait_for(done.wait(), METRICS_EVERY)
            deltas = _metric_deltas(svc.metrics, sent)
            if deltas:
                link.send("metrics", deltas)
    finally:
        for srv in svc._servers:
            srv.close()
        for tr in svc._udp:
            tr.close()
        svc.upstreams.close()
    return 0


def main() -> int:
    """``python -m wxnet.gate.dnsworker FD``: the policy and classifier arrive pickled
    on stdin from the gateway process (its own code, over a pipe only it holds)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        print(
            "usage: python -m wxnet.gate.dnsworker FD (started by wxnet gate run)", file=sys.stderr
        )
        return 2
    sock = socket.socket(fileno=int(sys.argv[1]))
    policy, classifier = pickle.loads(sys.stdin.buffer.read())
    link = _Link(sock)
    runner: Any = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    try:
        return int(runner(_serve(policy, classifier, link)))
    except (BrokenPipeError, ConnectionError, TimeoutError) as exc:
        print(f"DNS worker {os.getpid()}: gateway unreachable ({exc}): exiting", file=sys.stderr)
        return 1
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
