"""The random-pairs load of :func:`bench.loadgen.run_random`, spoken in MQTT to a broker:
the baseline that the wxnet server's cost per delivered message is held against.

Same shape as ``python -m bench.loadgen --users C``: C distinct clients, each on its own
connection (client id ``c<i>``, clean session) subscribed at QoS 1 to its own topic
``u/<i>``; every message is a QoS 1 PUBLISH from a random client to a random *other*
client's topic; closed loop with ``--window`` in flight in total (a new send starts when
a message is delivered), ``--warmup`` untimed messages first, then ``--messages`` timed
ones; ``--rate R`` paces the sends at R/s instead (the window still a cap) for the
send-to-deliver latency. A message counts as acked on its PUBACK and as delivered when
the receiving client gets its PUBLISH (which it PUBACKs); the phases, the window, the
pacing and the count of duplicates and losses are those of the wxnet generator, one
driver for both (:class:`bench.pairs.PairsDriver`; ejabberd's :mod:`bench.xmpp_load`
uses it too).

By default the bench starts Debian's ``mosquitto`` itself, on loopback with a temporary
configuration (in memory, as the broker ships: no persistence), pins it to CPU 0 and the
generator to CPU 1, and reports the broker's CPU seconds per 10,000 deliveries::

    python -m bench.mqtt_load --users 200 --warmup 2000 --messages 100000
    python -m bench.mqtt_load --users 200 --warmup 2000 --messages 20000 --rate 2000

``--host``/``--port`` drive a broker that is already running instead (no CPU figure
unless ``--broker-pid`` is given).

The MQTT 3.1.1 packets it needs (CONNECT, SUBSCRIBE, PUBLISH and PUBACK at QoS 1) are
encoded here, on plain asyncio protocols, rather than through a client library: one
process has to drive a thousand connections cheaply, as ``bench.loadgen`` drives its
links from the sans-IO core instead of the SDK, so that the broker and not the generator
is what the run measures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import cast

from bench.loadgen import LoadResult, pin
from bench.pairs import (
    PairsDriver,
    add_load_arguments,
    load_arguments_ok,
    per_10k,
    report,
    run_generator,
)
from bench.spawn import proc_cpu
from wxnet._compat import wait_for

__all__ = [
    "Broker",
    "MqttClient",
    "MqttDecoder",
    "main",
    "per_10k",
    "publish",
    "run_mqtt",
]

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK = 1, 2, 3, 4, 8, 9
#: the broker's deliveries waited for after the last send (seconds)
DRAIN_TIMEOUT = 60.0


class MqttError(RuntimeError):
    """The broker refused, closed a connection, or sent what MQTT 3.1.1 does not allow."""


# ---- the MQTT 3.1.1 packets of this load --------------------------------------------------


def _remaining(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: bytes) -> bytes:
    return len(s).to_bytes(2, "big") + s


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _remaining(len(body)) + body


def connect(client_id: str) -> bytes:
    """CONNECT, protocol level 4 (3.1.1), clean session, no keep-alive."""
    return _packet(CONNECT << 4, _str(b"MQTT") + bytes([4, 0x02, 0, 0]) + _str(client_id.encode()))


def subscribe(packet_id: int, topic: str) -> bytes:
    """SUBSCRIBE to one topic at QoS 1."""
    return _packet(SUBSCRIBE << 4 | 2, packet_id.to_bytes(2, "big") + _str(topic.encode()) + b"\1")


def publish(packet_id: int, topic: bytes, payload: bytes) -> bytes:
    """PUBLISH at QoS 1 (no DUP, no RETAIN)."""
    return _packet(PUBLISH << 4 | 2, _str(topic) + packet_id.to_bytes(2, "big") + payload)


def puback(packet_id: int) -> bytes:
    return bytes([PUBACK << 4, 2]) + packet_id.to_bytes(2, "big")


class MqttDecoder:
    """Bytes in, whole packets out as (type, flags, body); raises :class:`MqttError` on a
    remaining length of more than four bytes."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def receive(self, data: bytes) -> list[tuple[int, int, bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[int, int, bytes]] = []
        pos = 0
        while len(buf) - pos >= 2:
            length, shift, i, whole = 0, 0, pos + 1, False
            while i < len(buf) and i - pos <= 4:
                b = buf[i]
                i += 1
                length |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    whole = True
                    break
            if not whole:
                if i - pos > 4:
                    raise MqttError("remaining length over four bytes")
                break
            if len(buf) - i < length:
                break
            first = buf[pos]
            out.append((first >> 4, first & 0x0F, bytes(buf[i : i + length])))
            pos = i + length
        del buf[:pos]
        return out


# ---- one client ---------------------------------------------------------------------------


class MqttClient(asyncio.Protocol):
    """One connection: subscribes to its topic, publishes at QoS 1, PUBACKs what it gets.

    ``on_message(payload, now)`` runs for every PUBLISH received; ``on_ack(ok)`` for every
    PUBACK of ours."""

    def __init__(
        self, on_message: Callable[[bytes, float], None], on_ack: Callable[[], None]
    ) -> None:
        self.on_message = on_message
        self.on_ack = on_ack
        self.decoder = MqttDecoder()
        self.transport: asyncio.Transport | None = None
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self._next_id = 0
        self.unacked: set[int] = set()

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        client_id: str,
        topic: str,
        on_message: Callable[[bytes, float], None],
        on_ack: Callable[[], None],
    ) -> MqttClient:
        loop = asyncio.get_running_loop()
        _, c = await loop.create_connection(lambda: cls(on_message, on_ack), host, port)
        assert c.transport is not None
        c.transport.write(connect(client_id))
        await wait_for(c.connected, 10)
        c.transport.write(subscribe(1, topic))
        await wait_for(c.subscribed, 10)
        return c

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        err = MqttError(f"the broker closed the connection ({exc})")
        for f in (self.connected, self.subscribed, self.closed):
            if not f.done():
                if f is self.closed:
                    f.set_result(None)
                else:
                    f.set_exception(err)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        t = self.transport
        assert t is not None
        try:
            packets = self.decoder.receive(data)
        except MqttError as exc:
            self._fail(exc)
            return
        for kind, _flags, body in packets:
            if kind == PUBLISH:
                tlen = int.from_bytes(body[:2], "big")
                pid = body[2 + tlen : 4 + tlen]
                t.write(bytes([PUBACK << 4, 2]) + pid)
                self.on_message(body[4 + tlen :], now)
            elif kind == PUBACK:
                self.unacked.discard(int.from_bytes(body[:2], "big"))
                self.on_ack()
            elif kind == CONNACK:
                if len(body) < 2 or body[1] != 0:
                    self._fail(MqttError(f"CONNACK refused: {body.hex()}"))
                    return
                self.connected.set_result(None)
            elif kind == SUBACK:
                if body[2:3] not in (b"\0", b"\1"):
                    self._fail(MqttError(f"SUBACK refused: {body.hex()}"))
                    return
                self.subscribed.set_result(None)

    def _fail(self, exc: MqttError) -> None:
        for f in (self.connected, self.subscribed):
            if not f.done():
                f.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def send(self, topic: bytes, payload: bytes) -> None:
        """PUBLISH ``payload`` at QoS 1 with the next free packet id."""
        self._next_id = self._next_id % 0xFFFF + 1
        while self._next_id in self.unacked:
            self._next_id = self._next_id % 0xFFFF + 1
        self.unacked.add(self._next_id)
        assert self.transport is not None
        self.transport.write(publish(self._next_id, topic, payload))

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.write(b"\xe0\x00")  # DISCONNECT
            self.transport.close()
            await wait_for(self.closed, 5)


# ---- the load -----------------------------------------------------------------------------


async def run_mqtt(
    host: str,
    port: int,
    users: int,
    messages: int,
    window: int = 1000,
    warmup: int = 0,
    rate: float = 0.0,
    broker_pid: int | None = None,
    drain_timeout: float = DRAIN_TIMEOUT,
    seed: int = 1,
) -> LoadResult:
    """The random-pairs shape over MQTT (see the module docstring), driven by
    :class:`bench.pairs.PairsDriver`; the broker's CPU over the timed span in
    ``server_cpu_seconds`` when ``broker_pid`` is given."""
    result = LoadResult(users, messages)
    drv = PairsDriver(result, window, rate, drain_timeout, seed)

    def delivered(payload: bytes, now: float) -> None:
        drv.arrived(payload.partition(b"|")[0].decode(), now)

    clients: list[MqttClient] = []
    for k in range(0, users, 50):
        clients.extend(
            await asyncio.gather(
                *(
                    MqttClient.open(host, port, f"c{i}", f"u/{i}", delivered, drv.acked)
                    for i in range(k, min(users, k + 50))
                )
            )
        )
    topics = [f"u/{i}".encode() for i in range(users)]

    def send(i: int, j: int, tag: str, now: float) -> None:
        clients[i].send(topics[j], b"%s|%.6f" % (tag.encode(), now))

    await drv.run(send, warmup, None if broker_pid is None else partial(proc_cpu, broker_pid))
    await asyncio.gather(*(c.close() for c in clients))
    return result


# ---- a throw-away mosquitto ---------------------------------------------------------------


class Broker:
    """Debian's ``mosquitto`` on 127.0.0.1, a free port, a temporary configuration (no
    persistence, default queue limits), stopped on exit."""

    def __init__(self, binary: str = "mosquitto") -> None:
        found = shutil.which(binary) or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
        )
        if found is None:
            raise MqttError("mosquitto is not installed (make bench-deps installs it)")
        self.binary = found
        self.tmp = tempfile.mkdtemp(prefix="wxnet-mqtt-")
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.output: deque[str] = deque(maxlen=40)
        self._drainer: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> Broker:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = Path(self.tmp, "mosquitto.conf")
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "set_tcp_nodelay true\n"
            "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n"
            "log_type information\n"
        )
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        for line in self.proc.stderr:  # its line "mosquitto version X running": listening
            self.output.append(line.rstrip())
            if line.rstrip().endswith(" running"):
                break
        else:  # it exited
            self.__exit__(None, None, None)
            raise MqttError("mosquitto did not start: " + " | ".join(self.output))
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()
        return self

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.output.append(line.rstrip())

    def __exit__(self, *_exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._drainer is not None:
            self._drainer.join(5)  # the pipe ends with the process
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---- command line -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.mqtt_load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="", help="a running broker (default: start mosquitto)")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--broker-pid", type=int, default=None, help="its pid, for the CPU figure")
    add_load_arguments(p, "broker")
    return p


def _run(args: argparse.Namespace, host: str, port: int, pid: int | None) -> LoadResult:
    coro = run_mqtt(host, port, args.users, args.messages, args.window, args.warmup, args.rate, pid)
    return run_generator(coro, args.uvloop)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not load_arguments_ok(args, "mqtt_load"):
        return 2
    all_cpus = set(range(os.cpu_count() or 1))
    try:
        if args.host:
            result = _run(args, args.host, args.port, args.broker_pid)
        else:
            with Broker() as broker:
                if not args.no_pin and len(all_cpus) > 1:
                    pin(broker.pid, {0})
                    pin(0, {1})
                try:
                    result = _run(args, "127.0.0.1", broker.port, broker.pid)
                finally:
                    pin(0, all_cpus)
    except (MqttError, OSError, TimeoutError) as exc:
        print(f"mqtt_load: {exc}", file=sys.stderr)
        return 1
    return report(result, args.json, "broker")


if __name__ == "__main__":
    sys.exit(main())
