"""What ``wxnet gate check`` (and ``run``, before it touches anything) verifies on the
machine itself: the LAN interfaces exist, something is policed, the listeners bind, and
every group's selectors cover the address families the LAN carries.

Each finding names the policy line it comes from. Errors refuse the policy; warnings
refuse it too under ``strict = true``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from wxnet.gate.policy import Policy
from wxnet.gate.upstreams import bind_listeners

__all__ = ["Finding", "preflight"]


@dataclass(frozen=True, slots=True)
class Finding:
    error: bool
    message: str
    line: int = 0

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{'error' if self.error else 'warning'}: {where}{self.message}"


def _lan_families(ifname: str) -> dict[int, list[str]]:
    """Addresses per family on ``ifname`` (IPv6: link-local ones do not count, they
    are never forwarded)."""
    out: dict[int, list[str]] = {4: [], 6: []}
    exe = shutil.which("ip")
    if exe is None:
        return out
    proc = subprocess.run(
        [exe, "-j", "addr", "show", "dev", ifname],
        capture_output=True, text=True, timeout=5, check=False,
    )  # fmt: skip
    try:
        data = json.loads(proc.stdout or "[]")
    except ValueError:
        return out
    for link in data:
        for a in link.get("addr_info", []):
            fam = {"inet": 4, "inet6": 6}.get(a.get("family", ""))
            if fam is None or a.get("scope") in ("link", "host"):
                continue
            out[fam].append(f"{a.get('local')}/{a.get('prefixlen')}")
    return out


def _bind_error(exc: OSError) -> bool:
    return not (exc.errno == errno.EACCES and os.geteuid() != 0)


def preflight(policy: Policy, bind: bool = True) -> list[Finding]:
    """Check ``policy`` against this machine (``bind``: also try its listeners)."""
    s = policy.settings
    lines = policy.lines
    found: list[Finding] = []
    lan_line = lines.get("lan", 0)
    if not s.lan:
        found.append(Finding(True, "lan is empty: no interface is policed", lan_line))
    carried: dict[int, list[str]] = {4: [], 6: []}
    for name in s.lan:
        if not Path("/sys/class/net", name).exists():
            found.append(
                Finding(True, f"lan: no interface {name!r} here, so nothing is policed", lan_line)
            )
            continue
        on_lan = _lan_families(name)
        for fam in (4, 6):
            carried[fam] += [f"{name} {a}" for a in on_lan[fam]]
    if not policy.devices and s.default_group is None:
        found.append(
            Finding(True, "no [[devices]] and no default-group: nothing is policed", lan_line)
        )
    if s.inspector_port == s.dns_port:
        found.append(
            Finding(True, "inspector-port equals dns-port", lines.get("inspector-port", 0))
        )
    if bind:
        found += _bind_findings(policy)
    found += _family_findings(policy, carried)
    return found


def _bind_findings(policy: Policy) -> list[Finding]:
    """Whether the listeners and the admin web address bind here."""
    s, lines = policy.settings, policy.lines
    found: list[Finding] = []
    try:
        bind_listeners(policy).close()
    except OSError as exc:
        key = "inspector-port" if str(s.inspector_port) in str(exc) else "dns-listen"
        if _bind_error(exc):
            found.append(Finding(True, str(exc), lines.get(key, 0) or lines.get("dns-port", 0)))
        else:
            found.append(Finding(False, f"{exc} (not checked: needs root)", lines.get(key, 0)))
    if s.http:
        host, _, port = s.http.rpartition(":")
        host = host.strip("[]")
        if int(port):
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(fam, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((host, int(port)))
                except OSError as exc:
                    found.append(
                        Finding(
                            _bind_error(exc),
                            f"http: cannot bind {s.http}: {exc.strerror}",
                            lines.get("http", 0),
                        )
                    )
    return found


def _family_findings(policy: Policy, carried: dict[int, list[str]]) -> list[Finding]:
    """Families: a group selected by IPv4 subnets only leaves its devices' IPv6 open
    (``carried``: the LAN's addresses per family)."""
    s = policy.settings
    found: list[Finding] = []
    for g in policy.groups.values():
        devs = [d for d in policy.devices if d.group == g.name]
        fams: set[int] = set()
        for d in devs:
            fams |= {4, 6} if d.mac is not None else {d.network.version if d.network else 4}
        if s.default_group == g.name:
            fams |= {4, 6}
        for fam in (4, 6):
            if fams and fam not in fams and carried[fam]:
                other = 4 if fam == 6 else 6
                found.append(
                    Finding(
                        s.strict,
                        f"group {g.name} selects devices by IPv{other} only, but the LAN "
                        f"carries IPv{fam} ({', '.join(carried[fam][:2])}): their IPv{fam} "
                        "traffic is not policed (add an ip/subnet of that family, a mac, "
                        "or a default-group)",
                        devs[0].line if devs else g.line,
                    )
                )
    return found
