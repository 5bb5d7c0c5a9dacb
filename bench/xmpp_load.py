"""The random-pairs load of :func:`bench.loadgen.run_random`, spoken in XMPP to ejabberd:
the second outside baseline beside Mosquitto (:mod:`bench.mqtt_load`).

Same shape and the same driver (:class:`bench.pairs.PairsDriver`): C users ``u<i>``,
each on its own client-to-server connection (in-band registration, SASL PLAIN, resource
bind, session, XEP-0198 stream management enabled, initial presence); every message is
a ``<message type='chat'/>`` from a random user to the bare JID of a random *other* user;
closed loop with ``--window`` in flight in total, ``--warmup`` untimed messages first,
then ``--messages`` timed ones; ``--rate R`` paces the sends at R/s (the window still a
cap) for the send-to-deliver latency.

The ack is **XEP-0198 stream management**: every message is followed by ``<r/>`` and
counts as acked when the server's ``<a h=.../>`` covers it, i.e. when ejabberd has taken
responsibility for it, and the receiving client answers the server's ``<r/>`` with its
own ``<a/>``. That is what MQTT QoS 1 does (PUBACK from the broker to the publisher, and
from the subscriber back to the broker) and what wxnet's acked ``newsendmsg`` means (the
server has it): hop-by-hop acks on both legs. XEP-0184 receipts are end to end (the
recipient sends a second ``<message/>`` back through the server), which would route two
stanzas per message and compare with nothing the other two servers do. A message
counts as delivered when its recipient's connection gets it; every acked message must
be delivered exactly once or the run fails.

By default the bench starts Debian's ``ejabberd`` itself (:class:`Ejabberd`): the
Erlang VM directly (``erl -s ejabberd``, not ``ejabberdctl``, so that no Erlang
distribution and no ``epmd`` are started), on loopback, with a temporary configuration,
its Mnesia spool in ``/dev/shm`` (the session and route tables are RAM tables; the
``passwd`` table of the registrations is written under /dev/shm, i.e. memory too), no
TLS, no shapers, no offline storage, no MAM, no roster; pinned to CPU 0 (it is started
with that affinity and ``+S 1:1``: one scheduler thread) and the generator to
CPU 1; scheduler busy-waiting is off (``+sbwt none``), so the VM's CPU time is work
and not spinning. The C registrations go in-band (XEP-0077) over the bench's own
connections before they authenticate: one round trip each, where ``ejabberdctl
register`` would start an Erlang node per user::

    python -m bench.xmpp_load --users 200 --warmup 2000 --messages 100000
    python -m bench.xmpp_load --users 200 --warmup 2000 --messages 20000 --rate 2000

``--host``/``--port``/``--domain`` drive a server that is already running instead (its
in-band registration open; no CPU figure unless ``--server-pid`` is given).

The XMPP it needs is written here, on asyncio protocols and the standard library's
expat-based ``XMLPullParser``, rather than with a client library (slixmpp, aioxmpp):
one process has to drive a thousand connections cheaply, as ``bench.loadgen`` drives
its links from the sans-IO core and ``bench.mqtt_load`` its packets by hand, so that
the server and not the generator is what the run measures; and no new dependency.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import queue
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
from xml.etree.ElementTree import Element, ParseError, XMLPullParser
from xml.sax.saxutils import escape, quoteattr

from bench.loadgen import LoadResult, pin
from bench.pairs import PairsDriver, add_load_arguments, load_arguments_ok, report, run_generator
from bench.spawn import proc_cpu
from wxnet._compat import wait_for

__all__ = ["Ejabberd", "StanzaReader", "XmppClient", "XmppError", "main", "run_xmpp"]

NS_STREAM = "http://etherx.jabber.org/streams"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_SM = "urn:xmpp:sm:3"
NS_REGISTER = "jabber:iq:register"
NS_CLIENT = "jabber:client"
#: seconds for one step of a client's log-in
STEP_TIMEOUT = 30.0
#: seconds for ejabberd to start listening
START_TIMEOUT = 60.0
PASSWORD = "loadgen-pw"


class XmppError(RuntimeError):
    """The server refused, closed a connection, or sent what the load does not expect."""


def _q(tag: str, ns: str = NS_CLIENT) -> str:
    return f"{{{ns}}}{tag}"


def stream_header(domain: str) -> bytes:
    return (
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        f"xmlns:stream='{NS_STREAM}' to={quoteattr(domain)} version='1.0'>"
    ).encode()


def message(to: str, tag: str, body: str) -> bytes:
    """A chat message to ``to`` with id ``tag``, and the XEP-0198 ack request after it."""
    return (
        f"<message to={quoteattr(to)} type='chat' id={quoteattr(tag)}>"
        f"<body>{escape(body)}</body></message><r xmlns='{NS_SM}'/>"
    ).encode()


class StanzaReader:
    """Bytes of one XML stream in, its top-level elements (stanzas and stream-level
    elements such as ``<a/>``) out, whole, however the bytes are cut; the stream
    header's attributes in :attr:`header`. Raises :class:`XmppError` on bad XML or on
    the server's ``</stream:stream>``."""

    def __init__(self) -> None:
        self._parser: XMLPullParser[Element] = XMLPullParser(events=("start", "end"))
        self._depth = 0
        self._root: Element | None = None
        self.header: dict[str, str] | None = None

    def receive(self, data: bytes) -> list[Element]:
        try:
            self._parser.feed(data)
            # only start and end events are asked for: (event, element) pairs
            events = cast(list[tuple[str, Element]], list(self._parser.read_events()))
        except ParseError as exc:
            raise XmppError(f"bad XML from the server: {exc}") from exc
        out: list[Element] = []
        for event, elem in events:
            if event == "start":
                self._depth += 1
                if self._depth == 1:
                    self._root = elem
                    self.header = dict(elem.attrib)
            else:
                self._depth -= 1
                if self._depth == 1:
                    out.append(elem)
                    assert self._root is not None
                    self._root.remove(elem)
                elif self._depth == 0:
                    raise XmppError("the server closed the stream")
        return out


class XmppClient(asyncio.Protocol):
    """One c2s connection of user ``name``: registers (optionally), logs in, enables
    stream management, sends available presence; then sends messages with an ack
    request each and answers the server's ack requests.

    ``on_message(tag, now)`` runs for every chat message received (its body up to the
    first ``|``); ``on_ack(count)`` for every run of our messages the server acks."""

    def __init__(
        self,
        domain: str,
        name: str,
        on_message: Callable[[str, float], None],
        on_ack: Callable[[int], None],
    ) -> None:
        self.domain = domain
        self.name = name
        self.on_message = on_message
        self.on_ack = on_ack
        self.reader = StanzaReader()
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self._waiting: asyncio.Future[Element] | None = None
        self._inbox: deque[Element] = deque()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.error: XmppError | None = None
        self.sm = False  # stream management enabled: count and ack
        self.handled_in = 0  # stanzas received since <enabled/> (our h)
        self.acked_out = 0  # the server's last h
        self.outbound: deque[bool] = deque()  # stanzas sent since enable: is it a message?
        self._available = False  # our initial presence came back

    # ---- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(XmppError(f"{self.name}: the server closed the connection ({exc})"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        try:
            elems = self.reader.receive(data)
        except XmppError as exc:
            self._fail(exc)
            return
        for el in elems:
            tag = el.tag
            if self.sm and tag in _STANZAS:
                self.handled_in += 1
            if tag == _MESSAGE:
                body = el.findtext(_BODY)
                if body is not None and el.get("type") != "error":
                    self.on_message(body.partition("|")[0], now)
                    continue
                if el.get("type") == "error":
                    self._fail(XmppError(f"{self.name}: message error {_text(el)}"))
                    return
            elif tag == _R:
                assert self.transport is not None
                self.transport.write(b"<a xmlns='%s' h='%d'/>" % (NS_SM.encode(), self.handled_in))
                continue
            elif tag == _A:
                self._acked(int(el.get("h", "0")))
                continue
            elif tag == _PRESENCE and self.sm and self._available:
                continue  # presence after our own came back: not part of this load
            if self._waiting is not None and not self._waiting.done():
                self._waiting.set_result(el)
            else:
                self._inbox.append(el)

    def _acked(self, h: int) -> None:
        n = (h - self.acked_out) % (1 << 32)
        self.acked_out = h
        msgs = 0
        out = self.outbound
        for _ in range(min(n, len(out))):
            msgs += out.popleft()
        if msgs:
            self.on_ack(msgs)

    def _fail(self, exc: XmppError) -> None:
        if self.error is None:
            self.error = exc
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    # ---- the log-in ------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise self.error or XmppError(f"{self.name}: not connected")
        self.transport.write(data)

    async def _next(self) -> Element:
        if self._inbox:
            return self._inbox.popleft()
        if self.error is not None:
            raise self.error
        self._waiting = asyncio.get_running_loop().create_future()
        try:
            return await wait_for(self._waiting, STEP_TIMEOUT)
        finally:
            self._waiting = None

    async def _expect(self, tag: str, what: str) -> Element:
        el = await self._next()
        if el.tag != tag or el.get("type") == "error":
            raise XmppError(f"{self.name}: {what} refused: {_text(el)}")
        return el

    async def _restart(self) -> Element:
        """A new stream (the first one, or the one after SASL): its features."""
        self.reader = StanzaReader()
        self._write(stream_header(self.domain))
        return await self._expect(_q("features", NS_STREAM), "stream")

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        domain: str,
        name: str,
        on_message: Callable[[str, float], None],
        on_ack: Callable[[int], None],
        register: bool = True,
        password: str = PASSWORD,
    ) -> XmppClient:
        loop = asyncio.get_running_loop()
        _, c = await loop.create_connection(
            lambda: cls(domain, name, on_message, on_ack), host, port
        )
        try:
            await c._login(register, password)
        except BaseException:
            if c.transport is not None:
                c.transport.close()
            raise
        return c

    async def _login(self, register: bool, password: str) -> None:
        await self._restart()
        if register:  # XEP-0077 in-band registration, before authenticating
            self._write(
                f"<iq type='set' id='reg'><query xmlns='{NS_REGISTER}'><username>"
                f"{escape(self.name)}</username><password>{escape(password)}</password>"
                "</query></iq>".encode()
            )
            el = await self._next()
            if el.get("type") != "result" and el.find(".//{*}conflict") is None:
                raise XmppError(f"{self.name}: registration refused: {_text(el)}")
        plain = base64.b64encode(f"\0{self.name}\0{password}".encode()).decode()
        self._write(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{plain}</auth>".encode())
        await self._expect(_q("success", NS_SASL), "SASL PLAIN")
        await self._restart()
        self._write(
            f"<iq type='set' id='bind'><bind xmlns='{NS_BIND}'><resource>lg</resource>"
            "</bind></iq>".encode()
        )
        await self._expect(_IQ, "resource bind")
        self._write(f"<iq type='set' id='sess'><session xmlns='{NS_SESSION}'/></iq>".encode())
        await self._expect(_IQ, "session")
        self._write(f"<enable xmlns='{NS_SM}'/>".encode())
        await self._expect(_q("enabled", NS_SM), "stream management")
        self.sm = True
        self.outbound.append(False)
        self._write(b"<presence/>")
        # available once the server has processed it: it sends it back to this resource
        # (RFC 6121 4.2.2); before that a message to the bare JID finds no session
        await self._expect(_PRESENCE, "initial presence")
        self._available = True

    # ---- the load --------------------------------------------------------------------------

    def send(self, to: str, tag: str, body: str) -> None:
        """A chat message to ``to`` and an ack request; acked when the server's ``<a/>``
        covers it."""
        self.outbound.append(True)
        self._write(message(to, tag, body))

    @property
    def unacked(self) -> int:
        return sum(self.outbound)

    async def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"</stream:stream>")
            self.transport.close()
        await wait_for(asyncio.shield(self.closed), 5)


_MESSAGE, _PRESENCE, _IQ, _BODY = _q("message"), _q("presence"), _q("iq"), _q("body")
_STANZAS = frozenset((_MESSAGE, _PRESENCE, _IQ))
_R, _A = _q("r", NS_SM), _q("a", NS_SM)


def _text(el: Element) -> str:
    from xml.etree.ElementTree import tostring

    return tostring(el, encoding="unicode")[:300]


# ---- the load -----------------------------------------------------------------------------


async def run_xmpp(
    host: str,
    port: int,
    users: int,
    messages: int,
    window: int = 1000,
    warmup: int = 0,
    rate: float = 0.0,
    server_pid: int | None = None,
    domain: str = "localhost",
    register: bool = True,
    drain_timeout: float = 60.0,
    seed: int = 1,
    login_slice: int = 50,
) -> LoadResult:
    """The random-pairs shape over XMPP (see the module docstring), driven by
    :class:`bench.pairs.PairsDriver`; the server's CPU over the timed span in
    ``server_cpu_seconds`` when ``server_pid`` is given."""
    result = LoadResult(users, messages)
    drv = PairsDriver(result, window, rate, drain_timeout, seed)
    clients: list[XmppClient] = []
    try:
        for k in range(0, users, login_slice):
            clients.extend(
                await asyncio.gather(
                    *(
                        XmppClient.open(
                            host, port, domain, f"u{i}", drv.arrived, drv.acked, register
                        )
                        for i in range(k, min(users, k + login_slice))
                    )
                )
            )
        jids = [f"u{i}@{domain}" for i in range(users)]

        def send(i: int, j: int, tag: str, now: float) -> None:
            clients[i].send(jids[j], tag, f"{tag}|{now:.6f}")

        cpu = None if server_pid is None else partial(proc_cpu, server_pid)
        await drv.run(send, warmup, cpu)
        errors = [c.error for c in clients if c.error is not None]
        if errors:
            raise errors[0]
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return result


# ---- a throw-away ejabberd ----------------------------------------------------------------

_CONFIG = """\
hosts: ["{domain}"]
loglevel: info
hide_sensitive_log_data: true
certfiles: []
listen:
  - port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: false
    shaper: none
    access: all
    backlog: 4096
    max_stanza_size: 65536
    max_fsm_queue: 100000
auth_method: [internal]
auth_password_format: plain
default_db: mnesia
registration_timeout: infinity
acl:
  local:
    user_regexp: ""
access_rules:
  register:
    allow: all
shaper_rules:
  max_user_sessions: 10
modules:
  mod_register:
    ip_access: all
    access: register
  mod_stream_mgmt:
    resend_on_timeout: false
    max_ack_queue: 100000
"""


class Ejabberd:
    """Debian's ejabberd on 127.0.0.1, a free port, a temporary configuration and spool
    (see the module docstring), stopped and removed on exit; ``cpus`` is the affinity
    it starts with (None: no pinning). It runs as the calling user: the VM does not
    refuse root (only ``ejabberdctl`` switches to the ``ejabberd`` user), and it opens
    no port but its c2s listener (no distribution, no epmd)."""

    def __init__(self, domain: str = "localhost", cpus: set[int] | None = None) -> None:
        self.erl = shutil.which("erl") or "/usr/bin/erl"
        libs = Path("/usr/lib") / f"{os.uname().machine}-linux-gnu"
        if not (Path(self.erl).exists() and any(libs.glob("ejabberd-*/ebin/ejabberd.app"))):
            raise XmppError("ejabberd is not installed (make bench-deps installs it)")
        self.libs = libs
        self.domain = domain
        self.cpus = cpus
        self.tmp = tempfile.mkdtemp(prefix="wxnet-xmpp-")
        shm = Path("/dev/shm")
        spool_root = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else self.tmp
        self.spool = tempfile.mkdtemp(prefix="wxnet-xmpp-spool-", dir=spool_root)
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.output: deque[str] = deque(maxlen=60)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._drainer: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> Ejabberd:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = Path(self.tmp, "ejabberd.yml")
        conf.write_text(_CONFIG.format(domain=self.domain, port=self.port))
        env = {
            **os.environ,
            "EJABBERD_CONFIG_PATH": str(conf),
            "EJABBERD_LOG_PATH": str(Path(self.tmp, "ejabberd.log")),
            "ERL_LIBS": str(self.libs),
            "HOME": self.tmp,  # the VM's .erlang.cookie and history, if any
        }
        cpus = self.cpus
        mine = os.sched_getaffinity(0)
        if cpus:  # the child inherits this thread's affinity: no preexec_fn (threads)
            os.sched_setaffinity(0, cpus)
        try:
            self.proc = subprocess.Popen(
                [
                    self.erl, "-noinput", "-noshell", "+K", "true", "+P", "250000",
                    "+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none",
                    "-mnesia", "dir", f'"{self.spool}"', "-s", "ejabberd",
                    *(("+S", f"{len(cpus)}:{len(cpus)}", "+SDcpu", f"{len(cpus)}:{len(cpus)}")
                      if cpus else ()),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                cwd=self.tmp,
            )  # fmt: skip
        finally:
            os.sched_setaffinity(0, mine)
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()
        ready = f"Start accepting TCP connections at 127.0.0.1:{self.port} for ejabberd_c2s"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:  # it exited, or the deadline passed
                self.__exit__(None, None, None)
                raise XmppError("ejabberd did not start: " + " | ".join(self.output))
            if ready in line:
                break
        if cpus:
            pin(self.pid, cpus)  # every thread, as for mosquitto
        return self

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line.rstrip())
            self._lines.put(line)
        self._lines.put(None)

    def __exit__(self, *_exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # the VM stops on SIGTERM
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._drainer is not None:
            self._drainer.join(5)  # the pipe ends with the process
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        shutil.rmtree(self.spool, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---- command line -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.xmpp_load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="", help="a running server (default: start ejabberd)")
    p.add_argument("--port", type=int, default=5222)
    p.add_argument("--domain", default="localhost", help="its XMPP domain")
    p.add_argument("--server-pid", type=int, default=None, help="its pid, for the CPU figure")
    add_load_arguments(p, "server")
    return p


def _run(args: argparse.Namespace, host: str, port: int, pid: int | None) -> LoadResult:
    coro = run_xmpp(
        host, port, args.users, args.messages, args.window, args.warmup, args.rate, pid,
        args.domain,
    )  # fmt: skip
    return run_generator(coro, args.uvloop)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not load_arguments_ok(args, "xmpp_load"):
        return 2
    all_cpus = set(range(os.cpu_count() or 1))
    pinning = not args.no_pin and len(all_cpus) > 1
    try:
        if args.host:
            result = _run(args, args.host, args.port, args.server_pid)
        else:
            with Ejabberd(args.domain, {0} if pinning else None) as server:
                if pinning:
                    pin(0, {1})
                try:
                    result = _run(args, "127.0.0.1", server.port, server.pid)
                finally:
                    pin(0, all_cpus)
    except (XmppError, OSError, TimeoutError) as exc:
        print(f"xmpp_load: {exc}", file=sys.stderr)
        return 1
    return report(result, args.json, "server")


if __name__ == "__main__":
    sys.exit(main())
