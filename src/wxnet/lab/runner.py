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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any

from wxnet._compat import wait_for
from wxnet.lab.agent import AgentConfig
from wxnet.lab.expectations import evaluate
from wxnet.lab.faults import Case
from wxnet.lab.report import Report
from wxnet.lab.results import CaseResult, Link, Outcome, Source
from wxnet.lab.services import (
    PEER_USER,
    PHONE_USER,
    LabConfig,
    agent_config,
    gate_toml,
    server_toml,
    start_gate,
    start_services,
    template_profile,
    warm_profile,
)
from wxnet.lab.topology import LabError, Topology

__all__ = ["LabConfig", "gate_toml", "run_lab", "server_toml", "terminate_on_signals"]

_CLIENT_NAMES = {
    "sdk": "wxnet.client.sdk (wxnet's client SDK)",
    "core": "wxnet.lab.probe (the lab's own client on the protocol core)",
}


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
        start_services(cfg, topo)
        if cfg.with_gate:
            start_gate(cfg, topo)
        if cfg.warm:
            warm_profile(cfg, topo)
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
    peer_cfg = agent_config(cfg, topo, "peer", PEER_USER, PHONE_USER, tag)
    peer = await _spawn_agent(topo, n.internet, "peer", peer_cfg)
    phone: _Agent | None = None
    try:
        sent = await _wait_for(peer, lambda o: o.get("event") == "sent", 15)
        if sent is None:
            res = await _wait_for(peer, _is_result, 1)
            return replace(base, detail=f"the peer could not send: {_why(peer, res)}")
        phone_cfg = agent_config(cfg, topo, "phone", PHONE_USER, PEER_USER, tag)
        if cfg.warm:
            shutil.copytree(template_profile(cfg), phone_cfg.profile)
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
    web_cfg = agent_config(cfg, topo, "web", PHONE_USER, PEER_USER, tag)
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
