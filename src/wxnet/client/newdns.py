"""The newgetdns XML document (S10; research/mobile-protocol.md 2.8) and the choice of
addresses from DNS, the cached newgetdns list and built-in addresses (S9, S12, S14).

Sans-IO: :func:`parse_newdns` takes the document's bytes; :func:`long_candidates` and
:func:`short_candidates` take DNS answers, the cached list and ``now``.

Shape (wxnet's ``ports`` attribute lists ports in preference order)::

    <dns><retcode>0</retcode>
     <domainlist>
      <domain name="long.wxnet.local" timeout="600" ports="8080"><ip>127.0.0.1</ip></domain>
     </domainlist>
     <builtiniplist><ip name="long.wxnet.local" ports="8080">127.0.0.1</ip></builtiniplist>
     <clientip>127.0.0.1</clientip><timestamp>1732560000</timestamp></dns>

Unknown elements and attributes (WeChat's ``signature2``, ``functionlist``,
``property``...) are ignored.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from wxnet.client.addresses import Address, AddressSource
from wxnet.proto.errors import RemoteProtocolError

__all__ = [
    "MAX_DOCUMENT",
    "BuiltinIP",
    "CachedDns",
    "DnsDomain",
    "NewDns",
    "NewDnsError",
    "long_candidates",
    "parse_newdns",
    "short_candidates",
]

MAX_DOCUMENT = 256 * 1024
DEFAULT_TTL = 600.0


class NewDnsError(RemoteProtocolError):
    """The newgetdns document cannot be used."""


@dataclass(frozen=True, slots=True)
class DnsDomain:
    name: str
    ttl: float
    ports: tuple[int, ...]
    ips: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BuiltinIP:
    name: str
    ports: tuple[int, ...]
    ip: str


@dataclass(frozen=True, slots=True)
class NewDns:
    retcode: int
    domains: tuple[DnsDomain, ...]
    builtin: tuple[BuiltinIP, ...] = ()
    client_ip: str = ""
    timestamp: int = 0

    def domain(self, name: str) -> DnsDomain | None:
        for d in self.domains:
            if d.name.lower() == name.lower():
                return d
        return None

    @property
    def ttl(self) -> float:
        return min((d.ttl for d in self.domains), default=DEFAULT_TTL)


@dataclass(frozen=True, slots=True)
class CachedDns:
    """A newgetdns list and when it was fetched (``now`` units)."""

    dns: NewDns
    fetched_at: float

    def fresh(self, now: float) -> bool:
        return now < self.fetched_at + self.dns.ttl


def _ports(text: str | None, where: str) -> tuple[int, ...]:
    if text is None or not text.strip():
        return ()
    out: list[int] = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or not 0 < int(part) < 65536:
            raise NewDnsError(f"newgetdns: bad port {part!r} in {where}")
        out.append(int(part))
    return tuple(out)


def _ip(text: str | None, where: str) -> str:
    value = (text or "").strip()
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise NewDnsError(f"newgetdns: {value!r} in {where} is not an IP address") from None


def _int(text: str | None, where: str, default: int) -> int:
    if text is None or not text.strip():
        return default
    try:
        return int(text.strip())
    except ValueError:
        raise NewDnsError(f"newgetdns: {where} is not an integer: {text.strip()!r}") from None


def parse_newdns(data: bytes | str) -> NewDns:
    """Parse a newgetdns document.

    Raises:
        NewDnsError: not XML, not a ``<dns>`` document, a non-zero retcode, or a value
            (IP, port, timeout) that does not parse.
    """
    if len(data) > MAX_DOCUMENT:
        raise NewDnsError(f"newgetdns: document of {len(data)} bytes exceeds {MAX_DOCUMENT}")
    if (isinstance(data, bytes) and b"<!ENTITY" in data.upper()) or (
        isinstance(data, str) and "<!ENTITY" in data.upper()
    ):
        raise NewDnsError("newgetdns: entity declarations are not accepted")
    try:
        root = ET.fromstring(data)
    except (ET.ParseError, ValueError) as exc:
        raise NewDnsError(f"newgetdns: not well-formed XML ({exc})") from None
    if root.tag != "dns":
        raise NewDnsError(f"newgetdns: root element is <{root.tag}>, expected <dns>")
    retcode = _int(root.findtext("retcode"), "retcode", 0)
    if retcode != 0:
        raise NewDnsError(f"newgetdns: server returned retcode {retcode}")
    domains: list[DnsDomain] = []
    for d in root.iterfind("domainlist/domain"):
        name = (d.get("name") or "").strip()
        if not name:
            raise NewDnsError("newgetdns: <domain> without a name")
        where = f"domain {name}"
        ttl = _int(d.get("timeout"), f"{where} timeout", int(DEFAULT_TTL))
        if ttl < 0:
            raise NewDnsError(f"newgetdns: negative timeout in {where}")
        ips = tuple(_ip(ip.text, where) for ip in d.iterfind("ip"))
        domains.append(DnsDomain(name, float(ttl), _ports(d.get("ports"), where), ips))
    builtin = tuple(
        BuiltinIP(
            (ip.get("name") or "").strip(),
            _ports(ip.get("ports"), "builtiniplist"),
            _ip(ip.text, "builtiniplist"),
        )
        for ip in root.iterfind("builtiniplist/ip")
    )
    client_ip = (root.findtext("clientip") or "").strip()
    timestamp = _int(root.findtext("timestamp"), "timestamp", 0)
    return NewDns(retcode, tuple(domains), builtin, client_ip, timestamp)


def _addresses(
    name: str,
    ports: Sequence[int],
    extra_port: int | None,
    dns_answers: Mapping[str, Sequence[str]],
    cached: CachedDns | None,
    builtin: Iterable[tuple[str, int]],
    now: float,
) -> list[Address]:
    out: list[Address] = []
    for ip in dns_answers.get(name, ()):
        out.extend(Address(ip, p, AddressSource.DNS) for p in ports)
    if cached is not None and cached.fresh(now):
        dom = cached.dns.domain(name)
        if dom is not None:
            for ip in dom.ips:
                out.extend(Address(ip, p, AddressSource.NEWDNS) for p in dom.ports or ports)
        for b in cached.dns.builtin:
            if b.name.lower() == name.lower():
                out.extend(Address(b.ip, p, AddressSource.BUILTIN) for p in b.ports or ports)
    out.extend(Address(h, p, AddressSource.BUILTIN) for h, p in builtin)
    if extra_port is not None:
        hosts = list(dict.fromkeys(a.host for a in out))
        out.extend(Address(h, extra_port, AddressSource.BUILTIN, extra=True) for h in hosts)
    seen: set[tuple[str, int]] = set()
    unique = []
    for a in out:
        if a.key not in seen:
            seen.add(a.key)
            unique.append(a)
    return unique


def long_candidates(
    name: str,
    ports: Sequence[int],
    dns_answers: Mapping[str, Sequence[str]],
    cached: CachedDns | None,
    now: float,
    builtin: Iterable[tuple[str, int]] = (),
    extra_port: int | None = None,
) -> list[Address]:
    """Long-link candidates, best first: DNS answers for ``name`` on ``ports``, then the
    fresh cached newgetdns entries, then built-in addresses; the extra port (S14) on
    every host found is appended last."""
    return _addresses(name, ports, extra_port, dns_answers, cached, builtin, now)


def short_candidates(
    name: str,
    ports: Sequence[int],
    dns_answers: Mapping[str, Sequence[str]],
    cached: CachedDns | None,
    now: float,
    builtin: Iterable[tuple[str, int]] = (),
) -> list[Address]:
    """Short-link (HTTP) candidates in the same order as :func:`long_candidates`."""
    return _addresses(name, ports, None, dns_answers, cached, builtin, now)
