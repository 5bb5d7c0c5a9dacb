"""Runs the lab: builds the network, starts the services, plays every case, tears down.

Per run (:func:`run_lab`): a :class:`~wxnet.lab.topology.Topology`; in the internet
namespace the lab's DNS server (:mod:`wxnet.lab.dnsserver`), ``wxnet serve`` (long link
8080, short link 80, and the extra long-link port 14000 of S14) and an ordinary web
site; two accounts that are contacts.

Per case (:func:`run_case`): the gateway gets the case's fault rules; the peer agent (in
the internet namespace, never behind the faults) logs in and sends its texts; then the
phone agent starts fresh behind the gateway with the case's time limit. Their JSON lines
become one :class:`~wxnet.lab.results.CaseResult`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import ip_interface
from pathlib import Path
from types import FrameType
from typing import Any

from wxnet._compat import wait_for
from wxnet.lab.agent import AgentConfig
from wxnet.lab.expectations import evaluate
from wxnet.lab.faults import BlockMode, Case
from wxnet.lab.report import Report
from wxnet.lab.results import CaseResult, Link, Outcome, Source
from wxnet.lab.topology import WEB_PORT, Addressing, LabError, Names, Topology

__all__ = ["LabConfig", "gate_toml", "run_lab", "server_toml", "terminate_on_signals"]

PHONE_USER, PEER_USER = "alice", "bob"
_CLIENT_NAMES = {
    "sdk": "wxnet.client.sdk (wxnet's client SDK)",
    "core": "wxnet.lab.probe (the lab's own client on the protocol core)",
}


@dataclass(frozen=True)
class LabConfig:
    cases: Sequence[Case]
    workdir: Path
    time_limit: float = 20.0
    messages: int = 3
    block: BlockMode = BlockMode.REJECT
    extra_port: int | None = 14000
    long_name: str = "long.wxnet.lab"
    short_name: str = "short.wxnet.lab"
    dns_name: str = "dns.wxnet.lab"
    web_name: str = "www.example.lab"
    python: str = sys.executable
    #: extra arguments for ``wxnet serve``
    serve_args: tuple[str, ...] = ()
    run_id: str | None = None
    #: who plays the phone: "sdk" (wxnet's client SDK) or "core" (the lab's own client)
    client: str = "sdk"
    #: run ``wxnet gate`` (allow-only WeChat) on the gateway and browse the web site
    with_gate: bool = False
    #: start every case from a profile that cached newgetdns in a fault-free login
    #: (an installed app restarting) instead of a fresh install; SDK only
    warm: bool = False


@dataclass
class _Agent:
    proc: asyncio.subprocess.Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    events: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    stderr: bytes = b""
    pump: asyncio.Task[None] | None = None


def terminate_on_signals() -> Callable[[], None]:
    """Make SIGTERM and SIGHUP behave like Ctrl-C (KeyboardInterrupt), so the lab's
    ``finally`` blocks tear everything down. Returns a function restoring the old
    handlers."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)

    return restore


def run_lab(cfg: LabConfig, progress: Callable[[CaseResult], None] = lambda r: None) -> Report:
    """Build the lab, run every case of ``cfg.cases``, tear down; return the report
    (results and the checks of :mod:`wxnet.lab.expectations`).

    Raises:
        LabError: the lab could not be built or its services did not start.
    """
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    with Topology.build(cfg.workdir, cfg.run_id) as topo:
        _start_services(cfg, topo)
        if cfg.with_gate:
            _start_gate(cfg, topo)
        if cfg.warm:
            _warm_profile(cfg, topo)
        results = asyncio.run(_run_cases(cfg, topo, progress))
        topo.apply_case(Case())
    meta = (
        ("started", started),
        ("run id", topo.names.run_id),
        ("block mode", str(cfg.block)),
        ("time limit per case", f"{cfg.time_limit:g} s"),
        ("messages each way", str(cfg.messages)),
        ("extra port", str(cfg.extra_port or "none")),
        ("phone client", _CLIENT_NAMES.get(cfg.client, cfg.client)),
        ("gateway", "wxnet gate, allow-only WeChat" if cfg.with_gate else "router with NAT"),
        ("service names", f"{cfg.long_name}, {cfg.short_name}, {cfg.dns_name}"),
        ("phone profile", "warm (newgetdns cached)" if cfg.warm else "fresh for every case"),
    )
    return Report(tuple(results), tuple(evaluate(results, cfg.extra_port is not None)), meta)


def _start_services(cfg: LabConfig, topo: Topology) -> None:
    a, n = topo.addr, topo.names
    data = cfg.workdir / "server-data"
    if data.exists():
        shutil.rmtree(data)
    py = [cfg.python, "-m"]
    # the smart DNS: every service name resolves to the smart addresses (S9)
    records = [
        f"{cfg.long_name}={','.join(a.smart)}",
        f"{cfg.short_name}={','.join(a.smart)}",
        f"{cfg.dns_name}={','.join(a.smart)}",
        f"{cfg.web_name}={a.web}",
    ]
    dns = topo.spawn(
        n.internet,
        [*py, "wxnet.lab.dnsserver", "--listen", a.dns, "--port", "53"]
        + [arg for r in records for arg in ("--record", r)],
        "dns",
        stdout=subprocess.PIPE,
    )
    _wait_ready_line(dns, "dns", topo)
    topo.run(n.internet, [*py, "wxnet", "store", "init", "--data", str(data)], timeout=60)
    for user in (PHONE_USER, PEER_USER):
        topo.run(n.internet, [*py, "wxnet", "user", "add", user, "--password", _password(user),
                              "--data", str(data)], timeout=60)  # fmt: skip
    extra = ["--extra-long-port", str(cfg.extra_port)] if cfg.extra_port else []
    conf = cfg.workdir / "server.toml"
    conf.write_text(server_toml(cfg, topo.addr.smart, topo.addr.builtin), encoding="utf-8")
    extra += ["--config", str(conf)]
    topo.spawn(
        n.internet,
        [*py, "wxnet", "serve", "--data", str(data), "--host", "0.0.0.0",
         "--long-port", "8080", "--http-port", "80", "--contacts", "open", *extra,
         *cfg.serve_args],
        "server",
    )  # fmt: skip
    site = cfg.workdir / "site"
    site.mkdir(exist_ok=True)
    (site / "index.html").write_text("<html><body>an ordinary web site</body></html>\n")
    topo.spawn(
        n.internet,
        [*py, "http.server", str(WEB_PORT), "--bind", a.web, "--directory", str(site)],
        "web",
    )
    _wait_ports(topo, n.internet, [("127.0.0.1", 8080), ("127.0.0.1", 80), (a.web, WEB_PORT)])
    setup = _agent_config(cfg, topo, "setup", PHONE_USER, PEER_USER)
    out = topo.run(n.internet, [*py, "wxnet.lab.agent", "setup", setup.to_json()], timeout=30,
                   check=False)  # fmt: skip
    if out.returncode != 0:
        raise LabError(f"lab setup (login, add contact) failed: {out.stdout} {out.stderr}")


def gate_toml(workdir: Path, names: Names, a: Addressing) -> str:
    """``wxnet gate``'s policy for the lab: the phone's subnet may use WeChat only. The
    gate admits only attested destinations: the smart-DNS addresses by its own DNS
    answers (or the newgetdns answers it reads), the built-in addresses (S9) because the
    policy declares them operator-owned: they are the lab server's own."""
    n = names
    ranges = ", ".join(json.dumps(f"{ip}/32") for ip in a.builtin)
    return (
        "[gate]\n"
        f'lan = ["{n.gw_lan_if}"]\n'
        f'upstreams = ["{a.dns}"]\n'
        f'dns-listen = ["{a.gw_lan}"]\n'
        f'table = "wxlab_{n.run_id}_gate"\n'
        'spoof = "lenient"\n'
        "peek-timeout = 2.0\n"
        f"log = {json.dumps(str(workdir / 'gate.jsonl'))}\n"
        f"db = {json.dumps(str(workdir / 'gate.sqlite'))}\n"
        'http = "127.0.0.1:0"\n'
        "\n[apps.wechat]\n"
        f"operator-ranges = [{ranges}]\n"
        "\n[groups.phones]\n"
        'mode = "allow-only"\n'
        'apps = ["wechat"]\n'
        "\n[[devices]]\n"
        'name = "phone"\n'
        f'subnet = "{ip_interface(f"{a.phone}/{a.lan_prefix}").network}"\n'
        'group = "phones"\n'
    )


def _template(cfg: LabConfig) -> Path:
    return cfg.workdir / "profiles" / "warm-template"


def _warm_profile(cfg: LabConfig, topo: Topology) -> None:
    """One fault-free SDK login into a template profile, which caches newgetdns (S10)."""
    if cfg.client != "sdk":
        raise LabError("a warm profile needs the client SDK (--client sdk)")
    acfg = replace(_agent_config(cfg, topo, "phone", PHONE_USER, PEER_USER, "warm"),
                   profile=str(_template(cfg)))  # fmt: skip
    out = topo.run(topo.names.phone,
                   [cfg.python, "-m", "wxnet.lab.agent", "warmup", acfg.to_json()],
                   timeout=cfg.time_limit + 30, check=False)  # fmt: skip
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    if not any(x.get("newgetdns_cached") for x in lines):
        raise LabError(f"the warm-up login did not cache newgetdns: {out.stdout} {out.stderr}")


def _start_gate(cfg: LabConfig, topo: Topology) -> None:
    conf = cfg.workdir / "gate.toml"
    conf.write_text(gate_toml(cfg.workdir, topo.names, topo.addr), encoding="utf-8")
    gate = topo.spawn(
        topo.names.gateway,
        [cfg.python, "-m", "wxnet", "gate", "run", str(conf)],
        "gate",
        stdout=subprocess.PIPE,
    )
    _wait_ready_line(gate, "gate", topo)


def server_toml(cfg: LabConfig, smart: Sequence[str], builtin: Sequence[str]) -> str:
    """The server's ``[dns]`` section: newgetdns advertises the smart addresses and the
    built-in list (S10), under the lab's names; the extra port stays a client setting."""

    def arr(items: Sequence[str]) -> str:
        return "[" + ", ".join(json.dumps(i) for i in items) + "]"

    return (
        "[dns]\n"
        f"long_name = {json.dumps(cfg.long_name)}\n"
        f"short_name = {json.dumps(cfg.short_name)}\n"
        f"long_addresses = {arr(smart)}\n"
        f"short_addresses = {arr(smart)}\n"
        "long_ports = [8080]\n"
        "short_ports = [80]\n"
        f"builtin_addresses = {arr(builtin)}\n"
    )


def _password(user: str) -> str:
    return f"lab-{user}-pw"


def _wait_ready_line(proc: subprocess.Popen[bytes], name: str, topo: Topology) -> None:
    assert proc.stdout is not None
    line = _readline_with_timeout(proc.stdout.fileno(), 30.0)
    if not line.startswith(b"ready"):
        raise LabError(f"{name} did not start: {line!r} {topo.log_text(name)[-500:]}")


def _readline_with_timeout(fd: int, timeout: float) -> bytes:
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    buf = b""
    end = time.monotonic() + timeout
    try:
        while b"\n" not in buf:
            left = end - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
    finally:
        sel.close()
    return buf


_PORT_WAIT = """
import socket, sys, time
end = time.monotonic() + float(sys.argv[1])
todo = [(h, int(p)) for h, p in (a.rsplit(":", 1) for a in sys.argv[2:])]
delay = 0.02
while todo and time.monotonic() < end:
    h, p = todo[0]
    try:
        socket.create_connection((h, p), 1).close()
        todo.pop(0)
    except OSError:
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
print(" ".join(f"{h}:{p}" for h, p in todo))
sys.exit(1 if todo else 0)
"""


def _wait_ports(topo: Topology, ns: str, ports: Sequence[tuple[str, int]]) -> None:
    """Wait (bounded) until every service accepts connections inside ``ns``."""
    argv = [sys.executable, "-c", _PORT_WAIT, "30"] + [f"{h}:{p}" for h, p in ports]
    out = topo.run(ns, argv, timeout=40, check=False)
    if out.returncode != 0:
        logs = "\n".join(f"{n}: {topo.log_text(n)[-800:]}" for n in ("server", "web"))
        raise LabError(f"services did not start listening on {out.stdout.strip()}\n{logs}")


def _agent_config(
    cfg: LabConfig, topo: Topology, role: str, user: str, peer: str, tag: str = "setup"
) -> AgentConfig:
    return AgentConfig(
        user=user, password=_password(user), peer=peer, tag=tag, messages=cfg.messages,
        time_limit=cfg.time_limit, long_name=cfg.long_name, short_name=cfg.short_name,
        builtin=list(topo.addr.builtin), extra_port=cfg.extra_port,
        direct="127.0.0.1" if role != "phone" else topo.addr.smart[0],
        dns_name=cfg.dns_name, client=cfg.client, web_name=cfg.web_name,
        web_ip=topo.addr.web,
        profile=str(cfg.workdir / "profiles" / tag) if role == "phone" else "",
    )  # fmt: skip


async def _run_cases(
    cfg: LabConfig, topo: Topology, progress: Callable[[CaseResult], None]
) -> list[CaseResult]:
    results = []
    for case in cfg.cases:
        result = await run_case(cfg, topo, case)
        progress(result)
        results.append(result)
    return results


async def _spawn_agent(topo: Topology, ns: str, role: str, acfg: AgentConfig) -> _Agent:
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns, sys.executable, "-m", "wxnet.lab.agent", role,
        acfg.to_json(),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    agent = _Agent(proc)
    agent.pump = asyncio.get_running_loop().create_task(_pump(agent))
    return agent


async def _pump(agent: _Agent) -> None:
    assert agent.proc.stdout is not None and agent.proc.stderr is not None
    err_task = asyncio.ensure_future(agent.proc.stderr.read())
    while line := await agent.proc.stdout.readline():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            agent.lines.append(obj)
            await agent.events.put(obj)
    agent.stderr = await err_task
    await agent.events.put({"type": "eof"})


async def _wait_for(
    agent: _Agent, pred: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any] | None:
    """The first line matching ``pred`` within ``timeout`` s (None at timeout or EOF)."""
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        try:
            obj = await wait_for(agent.events.get(), left)
        except TimeoutError:
            return None
        if pred(obj):
            return obj
        if obj.get("type") == "eof":
            return None
    return None


async def _stop(agent: _Agent) -> None:
    if agent.proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(agent.proc.pid, signal.SIGTERM)
        try:
            await wait_for(agent.proc.wait(), 3)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(agent.proc.pid, signal.SIGKILL)
            await agent.proc.wait()
    if agent.pump is not None:  # its pipes reach EOF once the process is gone
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await wait_for(agent.pump, 5)


def _is_result(obj: dict[str, Any]) -> bool:
    return obj.get("type") == "result"


async def run_case(cfg: LabConfig, topo: Topology, case: Case) -> CaseResult:
    """Run one case (faults applied, peer first, then a fresh phone) within its limit."""
    t0 = time.monotonic()
    tag = f"{case.name.replace('+', '_')}-{secrets.token_hex(3)}"
    faults = tuple(f.name for f in case.faults)
    base = CaseResult(case.name, faults, Outcome.ERROR)
    try:
        topo.apply_case(case, cfg.block)
    except LabError as exc:
        return replace(base, detail=f"cannot apply the faults: {exc}")
    n = topo.names
    peer_cfg = _agent_config(cfg, topo, "peer", PEER_USER, PHONE_USER, tag)
    peer = await _spawn_agent(topo, n.internet, "peer", peer_cfg)
    phone: _Agent | None = None
    try:
        sent = await _wait_for(peer, lambda o: o.get("event") == "sent", 15)
        if sent is None:
            res = await _wait_for(peer, _is_result, 1)
            return replace(base, detail=f"the peer could not send: {_why(peer, res)}")
        phone_cfg = _agent_config(cfg, topo, "phone", PHONE_USER, PEER_USER, tag)
        if cfg.warm:
            shutil.copytree(_template(cfg), phone_cfg.profile)
        phone = await _spawn_agent(topo, n.phone, "phone", phone_cfg)
        result = await _wait_for(phone, _is_result, cfg.time_limit + 10)
        if result is None:
            seconds = time.monotonic() - t0
            return replace(base, outcome=Outcome.TIMEOUT, seconds=round(seconds, 2),
                           detail=f"no result within the limit: {_why(phone, None)}")  # fmt: skip
        # the peer gets what is left of the time limit to see the phone's messages
        peer_left = max(0.5, cfg.time_limit - (time.monotonic() - t0)) if result.get(
            "logged_in") else 0.0  # fmt: skip
        peer_result = await _wait_for(peer, _is_result, peer_left)
        progress = [o for o in peer.lines if o.get("event") == "progress"]
        peer_seen = peer_result or (progress[-1] if progress else {})
        merged = _merge(cfg, base, result, peer_seen, time.monotonic() - t0)
        if cfg.with_gate:
            merged = replace(merged, gate=True, web_blocked=await _browse(cfg, topo, tag))
        return merged
    finally:
        await _stop(peer)
        if phone is not None:
            await _stop(phone)


async def _browse(cfg: LabConfig, topo: Topology, tag: str) -> bool | None:
    """The browser-like flow from the phone: True if the web site stayed out of reach."""
    web_cfg = _agent_config(cfg, topo, "web", PHONE_USER, PEER_USER, tag)
    web = await _spawn_agent(topo, topo.names.phone, "web", web_cfg)
    try:
        res = await _wait_for(web, _is_result, 20)
    finally:
        await _stop(web)
    if res is None or not res.get("ok"):
        return None
    return bool(res.get("blocked"))


def _why(agent: _Agent, result: dict[str, Any] | None) -> str:
    if result is not None and result.get("error"):
        return str(result["error"])
    err = agent.stderr.decode(errors="replace").strip().splitlines()
    return err[-1] if err else "no output"


def _merge(
    cfg: LabConfig,
    base: CaseResult,
    phone: dict[str, Any],
    peer: dict[str, Any],
    seconds: float,
) -> CaseResult:
    n = cfg.messages
    path = phone.get("path") or {}
    logged_in = bool(phone.get("logged_in"))
    acked = int(phone.get("acked", 0))
    received = int(phone.get("received", 0))
    peer_texts = int(peer.get("received", peer.get("texts", 0)))
    peer_image = bool(peer.get("image", False))
    image_ok = bool(phone.get("image_ok")) and peer_image
    lost = max(0, acked - peer_texts) + (1 if phone.get("image_ok") and not peer_image else 0)
    if logged_in:
        lost += max(0, n - received)
    worked = logged_in and acked == n and received == n and peer_texts == n and image_ok
    if worked:
        outcome = Outcome.WORKED
    elif logged_in:
        outcome = Outcome.PARTIAL
    else:
        outcome = Outcome.FAILED
    detail = str(phone.get("error") or "")
    if phone.get("ok") is False and not detail:
        detail = "the phone agent failed"
    log = tuple(str(x) for x in phone.get("log", ()))
    return replace(
        base,
        outcome=outcome,
        source=Source(path["source"]) if path.get("source") else None,
        link=Link(path["link"]) if path.get("link") else None,
        address=path.get("address"),
        port=path.get("port"),
        seconds=round(seconds, 2),
        first_delivery_s=phone.get("first_ack_s"),
        sent=int(phone.get("sent", 0)),
        acked=acked,
        received=received,
        peer_sent=n,
        peer_received=peer_texts,
        lost=lost,
        duplicated=int(phone.get("duplicated", 0)) + int(peer.get("duplicated", 0)),
        image_ok=image_ok,
        network_poor=bool(phone.get("network_poor")),
        detail=detail,
        events=log,
    )
