"""Load generator for the wxnet server, built on the protocol core (the sans-IO
LongLinkConnection under the minimal :class:`~wxnet.client.basiclink.BasicLink`, and the
shared SyncDriver; one long link per simulated user) rather than the SDK, so that one
process can drive many connections cheaply.

M pairs of users: each sender sends to its receiver over its long link (newsendmsg);
each receiver syncs on notify (cmd 24) and commits its key (``--push``: takes the pushed
items, as below). The message content carries
its send time, so the receiver measures send-to-deliver latency. Reports delivered/s,
latency percentiles, duplicates and losses, and the CPU the generator itself used (so a
benchmark can tell when the generator, not the server, is the bottleneck).

Run against a running server whose accounts exist (``wxnet user add``)::

    python -m bench.loadgen --host 127.0.0.1 --long-port 8080 --pairs 50 --messages 5000

or let it start a throw-away server with the accounts it needs::

    python -m bench.loadgen --spawn --pairs 50 --messages 5000 [--rate 2000] [--json]

``--rate 0`` (default) sends flat out with ``--window`` requests in flight per sender;
``--rate R`` paces the sends at R per second in all, the pairs taking turns
(:func:`pair_send_time`).

``--users C`` switches to the random-pairs shape of the XMPP/MQTT benchmarks
(:func:`run_random`): C users, all contacts of each other, each on its own identified
long link, every message from a random user to a random other one, closed loop with
``--window`` (default 1000) in flight in total, ``--warmup`` untimed messages first
(the phases, pacing and exactly-once count are :class:`bench.pairs.PairsDriver`, which
the MQTT and XMPP generators, ``bench.mqtt_load`` and ``bench.xmpp_load``, share)::

    python -m bench.loadgen --spawn --users 200 --warmup 2000 --messages 100000

``--push`` asks for push with data (cmd 122) in identify: a message that follows the
user's key is taken from the push with no newsync, and the key is committed with one
``syncdone`` per user at most every ``--commit-every`` seconds (a push during a sync is
held and taken when the sync ends, against the key it reached; one after a gap is a
notify: the shared :class:`~wxnet.proto.syncdriver.PushInbox` rule, as in the SDK).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import Message

from bench.pairs import PairsDriver
from bench.spawn import ServerProcess, SpawnError, tree_cpu
from wxnet._compat import wait_for
from wxnet.client.basiclink import BasicLink
from wxnet.client.errors import TransportError
from wxnet.proto import wxnet_pb2 as pb
from wxnet.proto.enums import MsgType
from wxnet.proto.errors import MMError, WxnetError
from wxnet.proto.syncdriver import MAX_HELD_BYTES, Gap, Held, Page, PushInbox, SyncDriver

__all__ = ["LoadResult", "main", "pair_send_time", "percentile", "run_load"]

M = TypeVar("M", bound=Message)


class LoadError(WxnetError):
    """The load run could not be set up (login refused, server gone, ...)."""


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list; 0.0 for an empty one."""
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


@dataclass
class User:
    name: str
    link: BasicLink
    uin: int = 0
    sid: str = ""
    key: bytes = b""

    def base(self) -> pb.BaseRequest:
        return pb.BaseRequest(session_key=self.sid, uin=self.uin, device_id=f"lg-{self.name}")


@dataclass
class LoadResult:
    pairs: int
    messages: int
    sent: int = 0
    acked: int = 0
    delivered: int = 0
    duplicates: int = 0
    send_errors: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0
    server_cpu_seconds: float | None = None
    #: pushes with data taken / held during a sync (then taken) / that left a gap (and
    #: so a newsync)
    pushes: int = 0
    pushes_held: int = 0
    push_gaps: int = 0
    #: over the whole run (warm-up and login items too): the receivers' first deliveries,
    #: those of them that came in a push, and their newsync and syncdone requests
    taken: int = 0
    taken_by_push: int = 0
    requests: dict[str, int] = field(default_factory=lambda: {"newsync": 0, "syncdone": 0})
    #: the generator's own collector pauses over the run (a pause of the process that
    #: measures delays every delivery it would have timed meanwhile: part of the
    #: latencies above that is not the server's)
    gc_pauses: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        ms = {f"p{p}": round(percentile(lat, p) * 1000, 3) for p in (50, 90, 99)}
        ms["max"] = round(lat[-1] * 1000, 3) if lat else 0.0
        out: dict[str, Any] = {
            "pairs": self.pairs,
            "messages": self.messages,
            "sent": self.sent,
            "acked": self.acked,
            "delivered": self.delivered,
            "lost": self.acked - self.delivered,
            "duplicates": self.duplicates,
            "send_errors": self.send_errors,
            "elapsed_s": round(self.elapsed, 3),
            "delivered_per_s": round(self.delivered / self.elapsed, 1) if self.elapsed else 0.0,
            "latency_ms": ms,
            "loadgen_cpu_s": round(self.cpu_seconds, 3),
            "pushes": self.pushes,
            "pushes_held": self.pushes_held,
            "push_gaps": self.push_gaps,
            "push_share": round(self.taken_by_push / self.taken, 4) if self.taken else None,
            **{
                f"{name}_per_msg": round(n / self.taken, 4) if self.taken else None
                for name, n in self.requests.items()
            },
            "loadgen_cpu_us_per_msg": (
                round(self.cpu_seconds / self.delivered * 1e6, 1) if self.delivered else None
            ),
        }
        if self.server_cpu_seconds is not None:
            out["server_cpu_s"] = round(self.server_cpu_seconds, 3)
        return out


async def _sync(
    u: User,
    items: list[pb.CmdItem] | None = None,
    inbox: PushInbox | None = None,
    counts: dict[str, int] | None = None,
) -> None:
    """One run of the shared sync loop from ``u.key`` (newinit from none), committed."""
    driver = SyncDriver(u.key, base=u.base())
    while (call := driver.next_request()) is not None:
        if counts is not None:
            counts[call.cgi.name] = counts.get(call.cgi.name, 0) + 1
        try:
            resp = await u.link.call(call.cgi, call.request, call.cgi.response)
        except MMError as exc:
            driver.receive_error(exc)  # a KeyReset, or it raises
            if inbox is not None:
                inbox.reset()
            continue
        event = driver.receive(resp)
        if items is not None and isinstance(event, Page):
            items.extend(event.items)
    u.key = driver.key


async def _login(host: str, port: int, name: str, password: str, push: bool = False) -> User:
    try:
        u = User(name, await BasicLink.connect(host, port, timeout=10))
        resp = await u.link.call(
            "manualauth",
            pb.ManualAuthRequest(
                base=pb.BaseRequest(device_id=f"lg-{name}"),
                user_name=name,
                password=password,
                device_name="loadgen",
            ),
            pb.ManualAuthResponse,
        )
        u.uin, u.sid = resp.uin, resp.session_key
        await _sync(u)
        await u.link.call(
            "identify",
            pb.IdentifyRequest(base=u.base(), key_buf=u.key, push_data=int(push)),
            pb.IdentifyResponse,
        )
    except (MMError, TransportError) as exc:
        raise LoadError(f"login {name}: {exc}") from exc
    return u


async def _send_one(result: LoadResult, s: User, to: str, tag: str) -> None:
    msg = pb.MicroMsg(
        to_user=to,
        content=f"{tag}|{time.monotonic():.6f}",
        msg_type=MsgType.TEXT,
        client_msg_id=tag,
        create_time=int(time.time()),
    )
    result.sent += 1
    try:
        resp = await s.link.call(
            "newsendmsg", pb.SendMsgRequest(base=s.base(), list=[msg]), pb.SendMsgResponse
        )
    except (MMError, TransportError):
        result.send_errors += 1
        return
    if resp.list and resp.list[0].ret == 0:
        result.acked += 1
    else:
        result.send_errors += 1


def pair_send_time(start: float, pair: int, n: int, pairs: int, rate: float) -> float:
    """When pair ``pair`` (of ``pairs``) sends its ``n``-th message, paced at ``rate``
    per second in total: the pairs take turns, one send every ``1 / rate`` s, so the
    load is even (each pair from the same start would send all at once, a burst of
    ``pairs`` messages every ``pairs / rate`` s)."""
    return start + (n * pairs + pair) / rate


async def _send_pair(
    result: LoadResult,
    s: User,
    to: str,
    count: int,
    rate: float,
    window: int,
    start: float,
    pair: int = 0,
    pairs: int = 1,
) -> None:
    """``count`` sends from ``s`` to ``to``, ``window`` in flight; with ``rate`` (per
    second, all pairs together) each send at :func:`pair_send_time`."""
    sem = asyncio.Semaphore(max(1, window))
    tasks = []
    for n in range(count):
        if rate:
            delay = pair_send_time(start, pair, n, pairs, rate) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await sem.acquire()
        t = asyncio.ensure_future(_send_one(result, s, to, f"{s.name}-{n}"))
        t.add_done_callback(lambda _t: sem.release())
        tasks.append(t)
    await asyncio.gather(*tasks)


async def run_load(
    host: str,
    long_port: int,
    pairs: int,
    messages: int,
    rate: float = 0.0,
    window: int = 8,
    prefix: str = "lg",
    password: str = "loadgen-pw",
    drain_timeout: float = 30.0,
    server_pid: int | None = None,
    push: bool = False,
    commit_every: float = 1.0,
    push_hold: int = MAX_HELD_BYTES,
) -> LoadResult:
    """Log in 2 x ``pairs`` users, make each pair contacts, send ``messages`` in total
    (spread over the pairs), and wait until every acknowledged message is delivered
    (or ``drain_timeout`` passes). With ``server_pid``, the CPU time of the server (and
    of its workers, if it is a supervisor) over the same span (logins excluded: argon2
    would dominate) goes in ``server_cpu_seconds``. With ``push`` the receivers take
    push with data (cmd 122), as :class:`Mailbox` does."""
    result = LoadResult(pairs, messages)
    senders = await asyncio.gather(
        *(_login(host, long_port, f"{prefix}s{i}", password) for i in range(pairs))
    )
    receivers = await asyncio.gather(
        *(_login(host, long_port, f"{prefix}r{i}", password, push) for i in range(pairs))
    )
    for s, r in zip(senders, receivers, strict=True):
        await s.link.call(
            "verifyuser",
            pb.AddContactRequest(base=s.base(), user_name=r.name),
            pb.AddContactResponse,
        )
    seen: set[str] = set()
    progress = asyncio.Event()

    def delivered(_tag: str, sent_at: str, now: float) -> None:
        result.delivered += 1
        progress.set()
        with contextlib.suppress(ValueError):
            result.latencies.append(now - float(sent_at))

    recv = [Mailbox(r, result, seen, delivered, push, commit_every, push_hold) for r in receivers]
    for rc in recv:
        rc.wanted.set()  # drain the contact items before timing starts
    per_pair = [messages // pairs + (1 if i < messages % pairs else 0) for i in range(pairs)]
    start = time.monotonic()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    server_cpu0 = tree_cpu(server_pid) if server_pid is not None else 0.0

    await asyncio.gather(
        *(
            _send_pair(
                result, senders[i], receivers[i].name, per_pair[i], rate, window, start, i, pairs
            )
            for i in range(pairs)
        )
    )
    deadline = time.monotonic() + drain_timeout
    while result.delivered < result.acked and time.monotonic() < deadline:
        progress.clear()
        with contextlib.suppress(TimeoutError):
            await wait_for(progress.wait(), max(0.0, deadline - time.monotonic()))
    result.elapsed = time.monotonic() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    result.cpu_seconds = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    if server_pid is not None:
        result.server_cpu_seconds = tree_cpu(server_pid) - server_cpu0
    await asyncio.gather(*(rc.stop() for rc in recv))
    for u in [*senders, *receivers]:
        await u.link.wait_closed()
    return result


class Mailbox:
    """A user of the random-pairs shape: syncs on every notify and counts the messages
    addressed to it (its own sent copies, if the server logs them, are not deliveries)."""

    def __init__(
        self,
        user: User,
        result: LoadResult,
        seen: set[str],
        done: Any,
        push: bool = False,
        commit_every: float = 1.0,
        push_hold: int = MAX_HELD_BYTES,
    ) -> None:
        self.user = user
        self.result = result
        self.seen = seen
        self.done = done  # called with (tag, rest of the text, now) for every first delivery
        self.wanted = asyncio.Event()
        self.need_sync = True
        self.need_commit = False
        self.inbox = PushInbox(push_hold)
        self.commit_every = commit_every
        self._commit_timer: asyncio.TimerHandle | None = None
        self.stopping = False
        self.task = asyncio.ensure_future(self._loop())
        user.link.on_notify = lambda _selector: self._kick()
        if push:
            user.link.on_push = self._pushed

    def _kick(self) -> None:
        self.need_sync = True
        self.wanted.set()

    def _pushed(self, body: bytes) -> None:
        got = self.inbox.push(self.user.key, pb.NewSyncResponse.FromString(body), len(body))
        if isinstance(got, Held):
            self.result.pushes_held += 1
        else:
            self._took(got)

    def _took(self, got: Page | Gap) -> None:
        if isinstance(got, Gap):
            self.result.push_gaps += 1
            self._kick()
            return
        self.result.pushes += 1
        if not got.items:
            return
        self.user.key = got.key
        self._take(got.items, time.monotonic(), by_push=True)
        if self._commit_timer is None:
            self._commit_timer = asyncio.get_running_loop().call_later(
                self.commit_every, self._commit_due
            )

    def _commit_due(self) -> None:
        self._commit_timer = None
        self.need_commit = True
        self.wanted.set()

    async def stop(self) -> None:
        self.stopping = True
        if self._commit_timer is not None:
            self._commit_timer.cancel()
        self.wanted.set()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, WxnetError, TimeoutError):
            await wait_for(self.task, 5)

    async def _loop(self) -> None:
        u = self.user
        while not self.stopping:
            await self.wanted.wait()
            self.wanted.clear()
            if self.stopping:
                return
            items: list[pb.CmdItem] = []
            try:
                if self.need_commit and not self.need_sync:
                    self.need_commit = False
                    self.result.requests["syncdone"] += 1
                    await u.link.call(
                        "syncdone",
                        pb.SyncDoneRequest(base=u.base(), key_buf=u.key),
                        pb.SyncDoneResponse,
                    )
                    continue
                self.need_sync = self.need_commit = False
                self.inbox.begin()
                try:
                    await _sync(u, items, self.inbox, self.result.requests)
                except BaseException:
                    self.inbox.abort()
                    raise
            except (MMError, TransportError):
                if self.stopping:
                    return
                raise
            self._take(items, time.monotonic())
            for got in self.inbox.end(u.key):
                self._took(got)

    def _take(self, items: Sequence[pb.CmdItem], now: float, by_push: bool = False) -> None:
        me = self.user.name
        result = self.result
        for item in items:
            if item.WhichOneof("body") != "add_msg" or item.add_msg.to_user != me:
                continue
            tag, _, rest = item.add_msg.content.partition("|")
            if tag in self.seen:
                result.duplicates += 1
            else:
                self.seen.add(tag)
                result.taken += 1
                result.taken_by_push += by_push
                self.done(tag, rest, now)


@contextlib.contextmanager
def gc_pauses(into: list[float]) -> Iterator[None]:
    """Append the duration of every collection of this process to ``into`` while the
    block runs."""
    started = [0.0]

    def cb(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            into.append(time.perf_counter() - started[0])

    gc.callbacks.append(cb)
    try:
        yield
    finally:
        gc.callbacks.remove(cb)


async def run_random(
    host: str,
    long_port: int,
    users: int,
    messages: int,
    window: int = 1000,
    warmup: int = 0,
    rate: float = 0.0,
    prefix: str = "lg",
    password: str = "loadgen-pw",
    drain_timeout: float = 60.0,
    server_pid: int | None = None,
    seed: int = 1,
    push: bool = False,
    commit_every: float = 1.0,
    push_hold: int = MAX_HELD_BYTES,
    login_slice: int = 8,
    freeze_gc: bool = True,
    on_span: Callable[[], object] | None = None,
) -> LoadResult:
    """The XMPP/MQTT benchmarks' shape: ``users`` accounts, each on its own identified
    long link, all contacts of each other (:func:`create_users` with ``mesh=True``).
    Each message goes from a random user to a random *other* user; closed loop: a new
    send starts when a message is delivered, ``window`` in flight (or, with ``rate``,
    paced at that many sends/s, the window still a cap). ``warmup`` messages run first
    and are not counted; then ``messages`` are timed (server CPU over the same span).
    ``login_slice`` users log in at once (the server's default login queue holds 16).
    ``freeze_gc``: after the logins, ``gc.freeze()`` this process and turn its collector
    off for the warm-up and the timed phase (both undone at the end, then one
    ``gc.collect()`` frees the cyclic garbage the run left): a collection here pauses
    every delivery it would time meanwhile, a delay that is not the server's
    (``LoadResult.gc_pauses`` has any that still ran). ``on_span``: called at the start
    and at the end of the timed phase, before the server's CPU is read (e.g. to take
    the server's /metrics and the processes' run-queue waits over that span only)."""
    result = LoadResult(users, messages)
    drv = PairsDriver(result, window, rate, drain_timeout, seed)
    names = [f"{prefix}u{i}" for i in range(users)]
    us: list[User] = []
    for k in range(0, users, login_slice):  # logins in slices, within the login queue
        us.extend(
            await asyncio.gather(
                *(_login(host, long_port, n, password, push) for n in names[k : k + login_slice])
            )
        )
    seen: set[str] = set()
    boxes = [
        Mailbox(
            u,
            result,
            seen,
            lambda tag, _rest, now: drv.first(tag, now),
            push,
            commit_every,
            push_hold,
        )
        for u in us
    ]
    for b in boxes:
        b.wanted.set()  # drain the login items first

    async def send_one(i: int, j: int, tag: str, now: float) -> None:
        s = us[i]
        msg = pb.MicroMsg(
            to_user=names[j],
            content=f"{tag}|{now:.6f}",
            msg_type=MsgType.TEXT,
            client_msg_id=tag,
            create_time=int(time.time()),
        )
        try:
            resp = await s.link.call(
                "newsendmsg", pb.SendMsgRequest(base=s.base(), list=[msg]), pb.SendMsgResponse
            )
            ok = bool(resp.list) and resp.list[0].ret == 0
        except (MMError, TransportError):
            ok = False
        if ok:
            drv.acked()
        else:
            drv.failed(tag)

    def span_clock() -> float:
        if on_span is not None:
            on_span()
        return tree_cpu(server_pid) if server_pid is not None else 0.0

    if freeze_gc:  # what the logins left is never walked again, and nothing collects
        gc.collect()
        gc.freeze()
        gc.disable()
    try:
        with gc_pauses(result.gc_pauses):
            await drv.run(
                send_one,
                warmup,
                span_clock if server_pid is not None or on_span is not None else None,
            )
    finally:
        if freeze_gc:
            gc.enable()
            gc.unfreeze()
            gc.collect()
    for b in boxes:
        b.stopping = True
    await asyncio.gather(*(b.stop() for b in boxes))
    for u in us:
        await u.link.wait_closed()
    return result


def pin(pid: int, cpus: set[int]) -> None:
    """Pin every thread of process ``pid`` (0: this one) to ``cpus``."""
    real = pid or os.getpid()
    for tid in os.listdir(f"/proc/{real}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), cpus)


# ---- a throw-away server ------------------------------------------------------------------


def bench_hash(password: str) -> str:
    """One argon2id hash of ``password`` at the lowest cost (one pass over 8 KiB), for
    every bench account. The server verifies a login with the parameters stored in the
    hash, so 1,000 logins take seconds instead of minutes; logins are outside every
    timed span."""
    from argon2 import PasswordHasher

    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(password)


def create_users(data: Path, names: Sequence[str], password: str, mesh: bool = False) -> None:
    """Accounts ``names`` in a new store, all with one cheap hash of ``password``
    (:func:`bench_hash`); with ``mesh``, all contacts of each other (rows written
    straight into the store: a bench set-up, not the verifyuser path)."""
    from unittest import mock

    from wxnet.sync import model
    from wxnet.sync.db import connect
    from wxnet.sync.schema import init_schema

    data.mkdir(parents=True, exist_ok=True)
    conn = connect(data / "wxnet.db", synchronous="OFF")
    pw_hash = bench_hash(password)
    try:
        init_schema(conn)
        with mock.patch.object(model, "hash_password", lambda _password: pw_hash):
            for n in names:
                with contextlib.suppress(Exception):  # already there from an earlier run
                    model.add_user_sync(conn, n, password, None, time.time())
        if mesh:
            mesh_contacts(conn)
    finally:
        conn.close()


def mesh_contacts(conn: sqlite3.Connection) -> None:
    """Make every account of the store a contact of every other one (bench set-up)."""
    accounts = conn.execute("SELECT uin, user_name FROM accounts").fetchall()
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT OR IGNORE INTO contacts VALUES (?,?,0)",
        [(u, peer) for u, me in accounts for _, peer in accounts if peer != me],
    )
    conn.execute("COMMIT")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.loadgen",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--long-port", type=int, default=8080)
    p.add_argument(
        "--spawn",
        action="store_true",
        help="start a throw-away `wxnet serve` with the accounts it needs",
    )
    p.add_argument("--pairs", type=int, default=10, help="sender/receiver pairs (M)")
    p.add_argument(
        "--users",
        type=int,
        default=0,
        help="random-pairs shape: C users, random sender to random other user, closed"
        " loop (--window in flight in total; default 1000 there); 0 = fixed pairs",
    )
    p.add_argument("--warmup", type=int, default=0, help="untimed messages first (--users)")
    p.add_argument("--messages", type=int, default=1000, help="messages in total (N)")
    p.add_argument("--rate", type=float, default=0.0, help="messages/s in total; 0 = flat out")
    p.add_argument(
        "--window", type=int, default=0, help="sends in flight per sender (8) or in total (1000)"
    )
    p.add_argument("--prefix", default="lg", help="account names: PREFIXs0.., PREFIXr0..")
    p.add_argument("--password", default="loadgen-pw")
    p.add_argument(
        "--push", action="store_true", help="take push with data (cmd 122); pairs: the receivers"
    )
    p.add_argument(
        "--commit-every", type=float, default=1.0, help="seconds between syncdones (--push)"
    )
    p.add_argument(
        "--push-hold",
        type=int,
        default=MAX_HELD_BYTES,
        help="bytes of pushes held during a receiver's own sync (--push); 0: none, a push"
        " during a sync means one more sync (the rule before PushInbox)",
    )
    p.add_argument("--uvloop", action="store_true", help="run the generator on uvloop")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.window = args.window or (1000 if args.users else 8)
    if args.pairs < 1 or args.messages < 1 or args.window < 1 or args.rate < 0:
        print("loadgen: pairs, messages and window must be >= 1, rate >= 0", file=sys.stderr)
        return 2
    server: ServerProcess | None = None
    tmp: str | None = None
    host, port = args.host, args.long_port
    try:
        if args.spawn:
            tmp = tempfile.mkdtemp(prefix="wxnet-loadgen-")
            if args.users:
                names = [f"{args.prefix}u{i}" for i in range(args.users)]
            else:
                names = [f"{args.prefix}{k}{i}" for i in range(args.pairs) for k in "sr"]
            create_users(Path(tmp), names, args.password, mesh=bool(args.users))
            server = ServerProcess.on_data(Path(tmp), "--contacts", "open").start()
            host, port = "127.0.0.1", server.long_port
        spid = server.pid if server is not None else None
        coro = (
            run_random(
                host,
                port,
                args.users,
                args.messages,
                args.window,
                args.warmup,
                args.rate,
                args.prefix,
                args.password,
                server_pid=spid,
                push=args.push,
                commit_every=args.commit_every,
                push_hold=args.push_hold,
            )
            if args.users
            else run_load(
                host,
                port,
                args.pairs,
                args.messages,
                args.rate,
                args.window,
                args.prefix,
                args.password,
                server_pid=spid,
                push=args.push,
                commit_every=args.commit_every,
                push_hold=args.push_hold,
            )
        )
        if args.uvloop:
            import uvloop

            result = uvloop.run(coro)
        else:
            result = asyncio.run(coro)
    except (LoadError, SpawnError, OSError, sqlite3.Error) as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    s = result.summary()
    if args.json:
        print(json.dumps(s, sort_keys=True))
    else:
        lat = s["latency_ms"]
        print(
            f"{s['delivered']}/{s['acked']} delivered ({s['duplicates']} duplicates, "
            f"{s['lost']} lost, {s['send_errors']} send errors) in {s['elapsed_s']} s: "
            f"{s['delivered_per_s']} msg/s"
        )
        print(
            f"send->deliver latency ms: p50 {lat['p50']}  p90 {lat['p90']}  "
            f"p99 {lat['p99']}  max {lat['max']}"
        )
        print(
            f"loadgen CPU {s['loadgen_cpu_s']} s ({s['loadgen_cpu_us_per_msg']} us/msg)"
            + (f"; server CPU {s['server_cpu_s']} s" if "server_cpu_s" in s else "")
        )
    return 0 if result.delivered == result.acked and result.send_errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
