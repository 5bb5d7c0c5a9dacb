"""Network namespace primitives: the one way wxnet builds namespaces and veth pairs.

The lab (:mod:`wxnet.lab.topology`), the gateway's namespace tests, the gateway benches
and the analyser's live-capture tests build their worlds from these. Names get a random
suffix (:func:`new_suffix`) so several worlds (and other people's namespace tests) can
exist at once; veths are created directly inside their namespaces, so no name ever
appears in the host's namespace; :meth:`Netns.close` deletes every namespace made (and
with them their links, addresses, routes and nftables tables), never raises for
something already gone, and may be called twice.

Needs root and iproute2's ``ip``. A failed step raises :class:`NetnsError` (or the
``error`` class a caller gives, as the lab gives its ``LabError``).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
from collections.abc import Sequence
from types import TracebackType

from wxnet.proto.errors import WxnetError

__all__ = ["Netns", "NetnsError", "new_suffix", "run"]


class NetnsError(WxnetError):
    """A namespace step failed (the message names the command and its error)."""


def new_suffix() -> str:
    """A short random suffix for one world's names (interface names stay <= 15 chars)."""
    return secrets.token_hex(3)


def run(
    argv: Sequence[str],
    timeout: float = 30.0,
    check: bool = True,
    input_text: str | None = None,
    error: type[Exception] = NetnsError,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (bounded by ``timeout``), text in and out.

    Raises:
        error: it could not start, did not end in time, or (``check``) failed.
    """
    try:
        result = subprocess.run(
            list(argv), input=input_text, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise error(f"{' '.join(argv)}: no answer within {timeout} s") from exc
    except OSError as exc:
        raise error(f"{argv[0]}: {exc}") from exc
    if check and result.returncode != 0:
        msg = (result.stderr or result.stdout).strip()
        raise error(f"{' '.join(argv)} failed ({result.returncode}): {msg}")
    return result


class Netns:
    """The namespaces of one world, and the links, addresses and routes between them.

    Use it as a context manager, or call :meth:`close`. Every method runs one ``ip``
    command (or a few) and raises ``error`` when it fails.
    """

    def __init__(self, error: type[Exception] = NetnsError) -> None:
        self.error = error
        self.namespaces: list[str] = []

    def _ip(self, *argv: str) -> None:
        run(["ip", *argv], error=self.error)

    def add(self, *names: str) -> None:
        """Create namespaces ``names`` with their loopback up."""
        for ns in names:
            self._ip("netns", "add", ns)
            self.namespaces.append(ns)
            self._ip("-n", ns, "link", "set", "lo", "up")

    def veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
        """A veth pair ``if_a`` (in ``ns_a``) -- ``if_b`` (in ``ns_b``), both down."""
        self._ip("-n", ns_a, "link", "add", if_a, "type", "veth", "peer", "name", if_b,
                 "netns", ns_b)  # fmt: skip

    def bridge(self, ns: str, name: str, ports: Sequence[str] = ()) -> None:
        """A bridge ``name`` in ``ns`` with ``ports`` on it (ports are set up)."""
        self._ip("-n", ns, "link", "add", name, "type", "bridge")
        for port in ports:
            self._ip("-n", ns, "link", "set", port, "master", name, "up")

    def addr(self, ns: str, dev: str, *cidrs: str) -> None:
        """Add addresses (``ADDR/PREFIX``) to ``dev``; IPv6 ones skip duplicate address
        detection (they are usable at once)."""
        for cidr in cidrs:
            extra = ("nodad",) if ":" in cidr else ()
            self._ip("-n", ns, "addr", "add", cidr, "dev", dev, *extra)

    def up(self, ns: str, *devs: str) -> None:
        for dev in devs:
            self._ip("-n", ns, "link", "set", dev, "up")

    def route(self, ns: str, dest: str, via: str) -> None:
        """A route to ``dest`` (a prefix or ``default``) via ``via`` (IPv4 or IPv6)."""
        family = ("-6",) if ":" in via else ()
        self._ip("-n", ns, *family, "route", "add", dest, "via", via)

    def mac(self, ns: str, dev: str) -> str:
        """The link-layer address of ``dev``."""
        out = run(["ip", "-j", "-n", ns, "link", "show", dev], error=self.error).stdout
        address: str = json.loads(out)[0]["address"]
        return address

    def neigh(self, ns: str, dev: str, ip: str, mac: str) -> None:
        """A static neighbour entry (no ARP/ND wait, so a burst of first packets is not
        queued and dropped)."""
        self._ip("-n", ns, "neigh", "replace", ip, "lladdr", mac, "dev", dev)

    def forwarding(self, ns: str, ipv6: bool = False) -> None:
        """Make ``ns`` a router (IPv4, and IPv6 too when ``ipv6``)."""
        keys = ["net.ipv4.ip_forward=1"] + (["net.ipv6.conf.all.forwarding=1"] if ipv6 else [])
        for key in keys:
            run(self.exec_argv(ns, ["sysctl", "-qw", key]), error=self.error)

    @staticmethod
    def exec_argv(ns: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``ns`` (for ``subprocess.Popen``)."""
        return ["ip", "netns", "exec", ns, *argv]

    def run(
        self,
        ns: str,
        argv: Sequence[str],
        timeout: float = 30.0,
        check: bool = True,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``ns`` and wait for it (bounded)."""
        return run(self.exec_argv(ns, argv), timeout, check, input_text, self.error)

    def close(self) -> None:
        """Delete every namespace made, last first. Never raises; safe to call twice."""
        while self.namespaces:
            ns = self.namespaces.pop()
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)

    def __enter__(self) -> Netns:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
