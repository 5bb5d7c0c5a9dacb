"""The lab's configuration and its services: the smart DNS, ``wxnet serve`` with its
two accounts, the web site and (``--with-gate``) ``wxnet gate`` on the gateway, each
started inside its namespace and waited for on a real event (a ready line, a listening
port), never a sleep. :mod:`wxnet.lab.runner` plays the cases on them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from ipaddress import ip_interface
from pathlib import Path

from wxnet.lab.agent import AgentConfig
from wxnet.lab.faults import BlockMode, Case
from wxnet.lab.topology import WEB_PORT, Addressing, LabError, Names, Topology

__all__ = [
    "PEER_USER",
    "PHONE_USER",
    "LabConfig",
    "agent_config",
    "gate_toml",
    "password",
    "server_toml",
    "start_gate",
    "start_services",
    "template_profile",
    "warm_profile",
]

PHONE_USER, PEER_USER = "alice", "bob"


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


def start_services(cfg: LabConfig, topo: Topology) -> None:
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
        topo.run(n.internet, [*py, "wxnet", "user", "add", user, "--password", password(user),
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
    setup = agent_config(cfg, topo, "setup", PHONE_USER, PEER_USER)
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


def template_profile(cfg: LabConfig) -> Path:
    return cfg.workdir / "profiles" / "warm-template"


def warm_profile(cfg: LabConfig, topo: Topology) -> None:
    """One fault-free SDK login into a template profile, which caches newgetdns (S10)."""
    if cfg.client != "sdk":
        raise LabError("a warm profile needs the client SDK (--client sdk)")
    acfg = replace(agent_config(cfg, topo, "phone", PHONE_USER, PEER_USER, "warm"),
                   profile=str(template_profile(cfg)))  # fmt: skip
    out = topo.run(topo.names.phone,
                   [cfg.python, "-m", "wxnet.lab.agent", "warmup", acfg.to_json()],
                   timeout=cfg.time_limit + 30, check=False)  # fmt: skip
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    if not any(x.get("newgetdns_cached") for x in lines):
        raise LabError(f"the warm-up login did not cache newgetdns: {out.stdout} {out.stderr}")


def start_gate(cfg: LabConfig, topo: Topology) -> None:
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


def password(user: str) -> str:
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


def agent_config(
    cfg: LabConfig, topo: Topology, role: str, user: str, peer: str, tag: str = "setup"
) -> AgentConfig:
    return AgentConfig(
        user=user, password=password(user), peer=peer, tag=tag, messages=cfg.messages,
        time_limit=cfg.time_limit, long_name=cfg.long_name, short_name=cfg.short_name,
        builtin=list(topo.addr.builtin), extra_port=cfg.extra_port,
        direct="127.0.0.1" if role != "phone" else topo.addr.smart[0],
        dns_name=cfg.dns_name, client=cfg.client, web_name=cfg.web_name,
        web_ip=topo.addr.web,
        profile=str(cfg.workdir / "profiles" / tag) if role == "phone" else "",
    )  # fmt: skip
