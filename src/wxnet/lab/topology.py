"""The lab's network: three namespaces joined by veth pairs (S7's set-up).

::

    phone ─── lan ─── gateway (router, NAT, fault rules) ─── wan ─── internet
    10.66.0.2        10.66.0.1 | 192.0.2.1                  192.0.2.2
                                                            smart-DNS addresses 203.0.113.10-11
                                                            built-in addresses  198.51.100.20-21
                                                            DNS server          203.0.113.53
                                                            web site            203.0.113.80

The seed's phone sat behind a Linux Wi-Fi hotspot; here the phone is a namespace whose
only way out is the gateway namespace, which forwards and masquerades, and where
:mod:`wxnet.lab.faults` puts its nftables rules. The namespaces, veths, addresses and
routes are made with :mod:`wxnet.netns` (random per-run suffixes, veths created inside
the namespaces, a teardown that leaves none behind). Everything is removed by
:meth:`Topology.close` (a context manager), which also ends every process the lab
started in its namespaces.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from wxnet import netns
from wxnet.lab.faults import BlockMode, Case, fault_ruleset
from wxnet.netns import Netns

__all__ = ["WEB_PORT", "Addressing", "LabError", "Names", "Topology", "new_run_id"]

NETNS_ETC = Path("/etc/netns")
#: the web site's real port; its address's port 80 is forwarded there (:func:`web_ruleset`)
WEB_PORT = 8081


class LabError(RuntimeError):
    """A step of building or driving the lab failed (the message says which)."""


def new_run_id() -> str:
    """A short random suffix for this run's names (namespace names stay <= 15 chars)."""
    return netns.new_suffix()


@dataclass(frozen=True, slots=True)
class Addressing:
    """The lab's address plan (documentation ranges only, never routed outside)."""

    phone: str = "10.66.0.2"
    gw_lan: str = "10.66.0.1"
    lan_prefix: int = 24
    gw_wan: str = "192.0.2.1"
    inet_wan: str = "192.0.2.2"
    wan_prefix: int = 24
    #: what the lab's "smart DNS" answers for the service names (S9)
    smart: tuple[str, ...] = ("203.0.113.10", "203.0.113.11")
    #: addresses the client knows without DNS (S9's hard-coded IPs)
    builtin: tuple[str, ...] = ("198.51.100.20", "198.51.100.21")
    dns: str = "203.0.113.53"
    web: str = "203.0.113.80"

    @property
    def internet_hosts(self) -> tuple[str, ...]:
        return (*self.smart, *self.builtin, self.dns, self.web)


@dataclass(frozen=True, slots=True)
class Names:
    """Every kernel name of one run."""

    run_id: str

    @property
    def phone(self) -> str:
        return f"wxl{self.run_id}ph"

    @property
    def gateway(self) -> str:
        return f"wxl{self.run_id}gw"

    @property
    def internet(self) -> str:
        return f"wxl{self.run_id}in"

    @property
    def fault_table(self) -> str:
        return f"wxlab_{self.run_id}_faults"

    @property
    def nat_table(self) -> str:
        return f"wxlab_{self.run_id}_nat"

    @property
    def web_table(self) -> str:
        return f"wxlab_{self.run_id}_web"

    # interfaces live inside the namespaces, so fixed names cannot clash
    phone_if: str = "eth0"
    gw_lan_if: str = "lan0"
    gw_wan_if: str = "wan0"
    inet_if: str = "eth0"


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: IO[bytes] | None


@dataclass
class Topology:
    """Builds, drives and removes one lab network. Use as a context manager::

    with Topology.build(workdir) as topo:
        topo.apply_case(case)
        topo.run(topo.names.phone, ["ping", "-c1", "203.0.113.10"])
    """

    workdir: Path
    names: Names
    addr: Addressing = field(default_factory=Addressing)
    _procs: list[_Proc] = field(default_factory=list)
    _netns: Netns = field(default_factory=lambda: Netns(error=LabError))
    _closed: bool = False

    # -- building --------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        workdir: Path,
        run_id: str | None = None,
        addr: Addressing | None = None,
    ) -> Topology:
        """Create the namespaces, links, routes and NAT. On failure everything made so
        far is removed and :class:`LabError` raised.
        """
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces and nftables)")
        for tool in ("ip", "nft"):
            if shutil.which(tool) is None:
                raise LabError(f"{tool!r} is not installed (Debian: iproute2, nftables)")
        workdir.mkdir(parents=True, exist_ok=True)
        topo = cls(workdir, Names(run_id or new_run_id()), addr or Addressing())
        try:
            topo._build()
        except BaseException:
            topo.close()
            raise
        return topo

    def _build(self) -> None:
        n, a, net = self.names, self.addr, self._netns
        net.add(n.phone, n.gateway, n.internet)
        net.veth(n.gateway, n.gw_lan_if, n.phone, n.phone_if)
        net.veth(n.gateway, n.gw_wan_if, n.internet, n.inet_if)
        lan, wan = f"/{a.lan_prefix}", f"/{a.wan_prefix}"
        net.addr(n.phone, n.phone_if, a.phone + lan)
        net.addr(n.gateway, n.gw_lan_if, a.gw_lan + lan)
        net.addr(n.gateway, n.gw_wan_if, a.gw_wan + wan)
        net.addr(n.internet, n.inet_if, a.inet_wan + wan, *(h + "/32" for h in a.internet_hosts))
        net.up(n.phone, n.phone_if)
        net.up(n.gateway, n.gw_lan_if, n.gw_wan_if)
        net.up(n.internet, n.inet_if)
        net.route(n.phone, "default", a.gw_lan)
        net.route(n.gateway, "default", a.inet_wan)
        net.forwarding(n.gateway)
        # The phone resolves through the lab's DNS server only; `ip netns exec` bind-mounts
        # this file over /etc/resolv.conf. Short timeouts keep "DNS blocked" cases quick.
        etc = NETNS_ETC / n.phone
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(
            f"nameserver {a.dns}\noptions timeout:1 attempts:1\n", encoding="ascii"
        )
        nft(n.gateway, nat_ruleset(n.nat_table, n.gw_wan_if))
        nft(n.gateway, fault_ruleset(n.fault_table, n.gw_lan_if, Case()))
        nft(n.internet, web_ruleset(n.web_table, a.web, WEB_PORT))

    # -- driving ---------------------------------------------------------------------

    def apply_case(self, case: Case, mode: BlockMode = BlockMode.REJECT) -> None:
        """Make ``case`` the gateway's faults (replacing the previous case atomically)."""
        nft(self.names.gateway, fault_ruleset(self.names.fault_table, self.names.gw_lan_if,
                                              case, mode))  # fmt: skip

    def run(
        self, ns: str, argv: Sequence[str], timeout: float = 30.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside namespace ``ns`` and wait for it (bounded)."""
        return self._netns.run(ns, argv, timeout=timeout, check=check)

    def spawn(
        self,
        ns: str,
        argv: Sequence[str],
        name: str,
        env: dict[str, str] | None = None,
        stdout: int | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process inside ``ns``; :meth:`close` ends it.

        Its stderr (and stdout unless ``stdout`` is given, e.g. ``subprocess.PIPE``) go
        to ``<workdir>/<name>.log``.
        """
        if self._closed:
            raise LabError("the lab is already torn down")
        log = (self.workdir / f"{name}.log").open("ab")
        try:
            popen = subprocess.Popen(
                Netns.exec_argv(ns, argv),
                stdin=subprocess.DEVNULL,
                stdout=log if stdout is None else stdout,
                stderr=log,
                env=env,
                start_new_session=True,  # own process group: Ctrl-C reaches us, we end it
            )
        except OSError as exc:
            log.close()
            raise LabError(f"cannot start {name}: {exc}") from exc
        self._procs.append(_Proc(name, popen, log))
        return popen

    def stop(self, popen: subprocess.Popen[bytes], grace: float = 3.0) -> int | None:
        """End one spawned process (its whole process group) and forget it."""
        for proc in list(self._procs):
            if proc.popen is popen:
                self._procs.remove(proc)
                rc = _terminate(proc.popen, grace)
                if proc.log is not None:
                    proc.log.close()
                return rc
        return popen.poll()

    def log_text(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- teardown --------------------------------------------------------------------

    def close(self) -> None:
        """End every process the lab started, then delete its namespaces (and with them
        the veths and nftables tables) and its resolv.conf. Safe to call twice; never
        raises for something already gone."""
        if self._closed:
            return
        self._closed = True
        for proc in reversed(self._procs):
            _terminate(proc.popen, 3.0)
            if proc.log is not None:
                proc.log.close()
        self._procs.clear()
        self._netns.close()
        shutil.rmtree(NETNS_ETC / self.names.phone, ignore_errors=True)

    def __enter__(self) -> Topology:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def nat_ruleset(table: str, wan_if: str) -> str:
    """The gateway's NAT: everything leaving towards the internet is masqueraded, as on
    a hotspot."""
    return (
        f"add table ip {table}\n"
        f"delete table ip {table}\n"
        f"table ip {table} {{\n"
        "\tchain postrouting {\n"
        "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
        f'\t\toifname "{wan_if}" masquerade\n'
        "\t}\n"
        "}\n"
    )


def web_ruleset(table: str, web: str, port: int) -> str:
    """In the internet namespace, port 80 of the web site's address goes to the site's
    own port, so that ``wxnet serve`` can listen on port 80 of every address."""
    return (
        f"add table ip {table}\n"
        f"delete table ip {table}\n"
        f"table ip {table} {{\n"
        "\tchain prerouting {\n"
        "\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
        f"\t\tip daddr {web} tcp dport 80 dnat to {web}:{port}\n"
        "\t}\n"
        "}\n"
    )


def nft(ns: str, script: str) -> None:
    """Apply an nft script inside namespace ``ns`` (one transaction)."""
    _run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input_text=script)


def _run(
    argv: Sequence[str],
    timeout: float = 30.0,
    check: bool = True,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return netns.run(argv, timeout, check, input_text, LabError)


def _terminate(popen: subprocess.Popen[Any], grace: float) -> int | None:
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGTERM)
        try:
            popen.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(grace)
    for stream in (popen.stdin, popen.stdout, popen.stderr):
        if stream is not None:
            stream.close()
    return popen.returncode
