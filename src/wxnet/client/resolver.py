"""Name resolution for the client (S8, S9): the system resolver, or a UDP DNS server the
user names (``--dns IP[:PORT]``), behind one small interface so tests can point the
client at a real DNS server they run on loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.resolver

from wxnet._compat import wait_for
from wxnet.client.errors import ClientError

__all__ = ["DnsFailure", "Resolver", "SystemResolver", "UdpResolver", "parse_nameserver"]


class DnsFailure(ClientError):
    """A name could not be resolved (no answer, timeout, server failure)."""


class Resolver(Protocol):
    async def resolve(self, name: str) -> list[str]:
        """IPv4/IPv6 addresses of ``name``; raises :class:`DnsFailure`."""
        ...


def _literal(name: str) -> list[str] | None:
    try:
        return [str(ipaddress.ip_address(name.strip("[]")))]
    except ValueError:
        return None


class SystemResolver:
    """The operating system's resolver (getaddrinfo)."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout

    async def resolve(self, name: str) -> list[str]:
        lit = _literal(name)
        if lit is not None:
            return lit
        loop = asyncio.get_running_loop()
        try:
            infos = await wait_for(
                loop.getaddrinfo(name, None, type=socket.SOCK_STREAM), self.timeout
            )
        except (OSError, TimeoutError) as exc:
            raise DnsFailure(f"cannot resolve {name}: {exc}") from None
        return list(dict.fromkeys(str(i[4][0]) for i in infos))


class UdpResolver:
    """Ask the given DNS servers over UDP (dnspython), A then AAAA."""

    def __init__(self, nameservers: list[tuple[str, int]], timeout: float = 2.0) -> None:
        if not nameservers:
            raise ValueError("at least one nameserver is needed")
        self._resolver = dns.asyncresolver.Resolver(configure=False)
        self._resolver.nameservers = [h for h, _ in nameservers]
        self._resolver.port = nameservers[0][1]
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout

    async def resolve(self, name: str) -> list[str]:
        lit = _literal(name)
        if lit is not None:
            return lit
        out: list[str] = []
        errors: list[str] = []
        results = await asyncio.gather(
            *(self._resolver.resolve(name, t) for t in ("A", "AAAA")), return_exceptions=True
        )
        for res in results:
            if isinstance(res, dns.exception.DNSException | OSError):
                errors.append(type(res).__name__)
            elif isinstance(res, BaseException):
                raise res
            else:
                out.extend(str(r) for r in res)
        if not out:
            raise DnsFailure(f"cannot resolve {name}: {', '.join(errors) or 'no answer'}")
        return out


def parse_nameserver(text: str) -> tuple[str, int]:
    """``IP`` or ``IP:PORT`` or ``[IPv6]:PORT`` -> (ip, port); raises ValueError."""
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = int(rest.lstrip(":"))
    elif text.count(":") == 1:
        host, p = text.split(":")
        port = int(p)
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(f"bad port {port}")
    return host, port
