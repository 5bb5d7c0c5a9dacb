"""The gateway's I/O helpers below the service: the neighbour table (which MAC an
address has, for per-device policy), the DNS upstreams (UDP forwarding with one
callback per answer, timeouts and failover) and the bound listener sockets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wxnet.gate.attest import normalise
from wxnet.gate.policy import Policy

__all__ = ["Listeners", "Neighbours", "Upstreams", "bind_listeners"]

log = logging.getLogger("wxnet.gate")
UPSTREAM_TIMEOUT = 2.0
MAX_PENDING = 4096


class Neighbours:
    """Address -> MAC from the kernel's neighbour tables of both families: IPv4 from
    ``/proc/net/arp`` (read in process), IPv6 from ``ip -j -6 neigh`` (read only when an
    IPv6 source is looked up). A miss reloads that family at most every
    ``miss_every`` seconds; each table is re-read every ``ttl`` seconds."""

    def __init__(
        self, path: str = "/proc/net/arp", ttl: float = 5.0, miss_every: float = 0.5
    ) -> None:
        self.path = path
        self.ttl = ttl
        self.miss_every = miss_every
        self._tables: dict[int, dict[str, str]] = {4: {}, 6: {}}
        self._read_at = {4: -1e9, 6: -1e9}
        self._ip = shutil.which("ip")

    def _read4(self) -> dict[str, str]:
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
        return table

    def _read6(self) -> dict[str, str]:
        table: dict[str, str] = {}
        if self._ip is None:
            return table
        try:
            out = subprocess.run(
                [self._ip, "-j", "-6", "neigh", "show"],
                capture_output=True, text=True, timeout=2, check=False,
            ).stdout  # fmt: skip
            for entry in json.loads(out or "[]"):
                mac = str(entry.get("lladdr") or "").lower()
                dst = normalise(str(entry.get("dst") or ""))
                states = entry.get("state") or []
                if dst and mac and "FAILED" not in states and "INCOMPLETE" not in states:
                    table[dst] = mac
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
        return table

    def mac_for(self, ip: str) -> str | None:
        family = 6 if ":" in ip and not ip.startswith("::ffff:") else 4
        key = ip[7:] if ip.startswith("::ffff:") else ip
        table = self._tables[family]
        mac = table.get(key)
        age = time.monotonic() - self._read_at[family]
        if (mac is None and age > self.miss_every) or age > self.ttl:
            table = self._read4() if family == 4 else self._read6()
            self._tables[family] = table
            self._read_at[family] = time.monotonic()
            mac = table.get(key)
            if mac is None and family == 6:
                mac = table.get(normalise(key) or key)
        return mac


AnswerCallback = Callable[[bytes | None], None]


@dataclass
class _Pending:
    data: bytes  # the client's query (original id)
    callback: AnswerCallback
    server: int  # index of the server asked
    timer: asyncio.TimerHandle | None = None


class _UpstreamProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: Upstreams, server: int) -> None:
        self.owner = owner
        self.server = server

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) >= 2:
            self.owner._answered(self.server, int.from_bytes(data[:2], "big"), data)


class Upstreams:
    """Forwards queries over UDP to the configured servers (one shared socket each),
    rewriting the query id so that answers find their query; tries the next server
    when one does not answer within :data:`UPSTREAM_TIMEOUT`. Callback-based, so a
    forwarded query costs no task."""

    def __init__(self, servers: tuple[tuple[str, int], ...]) -> None:
        self.servers = servers
        self._sockets: list[asyncio.DatagramTransport | None] = [None] * len(servers)
        self._pending: list[dict[int, _Pending]] = [{} for _ in servers]
        self._rng = random.SystemRandom()
        self._ids = [self._rng.randrange(65536) for _ in servers]
        self._entropy = b""
        self._epos = 0

    def _step(self) -> int:
        """1..64, from a pool of kernel randomness (one getrandom call per 4096 ids)."""
        if self._epos >= len(self._entropy):
            self._entropy = os.urandom(4096)
            self._epos = 0
        self._epos += 1
        return (self._entropy[self._epos - 1] & 0x3F) + 1

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for i, server in enumerate(self.servers):
            try:
                tr, _ = await loop.create_datagram_endpoint(
                    lambda i=i: _UpstreamProtocol(self, i),  # type: ignore[misc]
                    remote_addr=server,
                )
            except OSError as exc:
                log.warning("upstream %s:%d unusable: %s", server[0], server[1], exc)
                continue
            self._sockets[i] = tr

    def send(self, data: bytes, callback: AnswerCallback, first: int = 0) -> None:
        """Forward ``data``; ``callback`` gets the answer (original id) or None."""
        for i in range(first, len(self.servers)):
            tr = self._sockets[i]
            pending = self._pending[i]
            if tr is None or tr.is_closing() or len(pending) >= MAX_PENDING:
                continue
            # Ids come from a per-server sequence that starts at a random point and
            # skips ids in flight; the random start keeps off-path guessing costly.
            new_id = self._ids[i]
            while new_id in pending:
                new_id = (new_id + 1) & 0xFFFF
            self._ids[i] = (new_id + self._step()) & 0xFFFF
            entry = _Pending(data, callback, i)
            entry.timer = asyncio.get_running_loop().call_later(
                UPSTREAM_TIMEOUT, self._timeout, i, new_id
            )
            pending[new_id] = entry
            tr.sendto(new_id.to_bytes(2, "big") + data[2:])
            return
        callback(None)

    def _timeout(self, server: int, qid: int) -> None:
        entry = self._pending[server].pop(qid, None)
        if entry is not None:
            self.send(entry.data, entry.callback, server + 1)

    def _answered(self, server: int, qid: int, answer: bytes) -> None:
        entry = self._pending[server].pop(qid, None)
        if entry is None:
            return
        if entry.timer is not None:
            entry.timer.cancel()
        entry.callback(entry.data[:2] + answer[2:])

    async def query(self, data: bytes) -> bytes:
        """Awaitable form of :meth:`send`.

        Raises:
            TimeoutError: no server answered.
        """
        fut: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()

        def done(answer: bytes | None) -> None:
            if not fut.done():
                fut.set_result(answer)

        self.send(data, done)
        answer = await fut
        if answer is None:
            raise TimeoutError("no upstream DNS server answered")
        return answer

    def close(self) -> None:
        for i, tr in enumerate(self._sockets):
            if tr is not None:
                tr.close()
            for entry in self._pending[i].values():
                if entry.timer is not None:
                    entry.timer.cancel()
            self._pending[i].clear()
            self._sockets[i] = None


@dataclass
class Listeners:
    """Bound (not yet serving) sockets of one gateway process."""

    dns_udp: list[socket.socket]
    dns_tcp: list[socket.socket]
    inspector: list[socket.socket]

    def close(self) -> None:
        for sock in (*self.dns_udp, *self.dns_tcp, *self.inspector):
            sock.close()


def _bind(host: str, port: int, kind: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if family == socket.AF_INET6:  # "::" beside "0.0.0.0": one socket per family
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        what = "UDP" if kind == socket.SOCK_DGRAM else "TCP"
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise OSError(exc.errno, f"cannot bind {what} {where}: {exc.strerror}") from None
    return sock


def bind_listeners(policy: Policy, reuse_port: bool = False, inspector: bool = True) -> Listeners:
    """Bind the DNS filter's UDP and TCP sockets and the inspector's (v4 and v6).

    Raises:
        OSError: one would not bind (the message names which); none stays open.
    """
    s = policy.settings
    out = Listeners([], [], [])
    try:
        for host in s.dns_listen:
            out.dns_udp.append(_bind(host, s.dns_port, socket.SOCK_DGRAM, reuse_port))
            out.dns_tcp.append(_bind(host, s.dns_port, socket.SOCK_STREAM, reuse_port))
        if inspector:
            for host in ("0.0.0.0", "::"):
                out.inspector.append(_bind(host, s.inspector_port, socket.SOCK_STREAM, False))
    except OSError:
        out.close()
        raise
    return out
