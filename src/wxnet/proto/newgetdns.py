"""The newgetdns document (S10): wxnet's one codec for it, both directions.

The server builds it (:func:`build_newgetdns`, ``GET /cgi-bin/micromsg-bin/newgetdns``)
and the client parses it (:func:`parse_newgetdns`); ``parse(build(doc)) == doc`` holds
for every document (tests/proto/test_newgetdns.py). The client's choice among the
addresses it lists is :mod:`wxnet.client.newdns`'s.

Shape (``ports`` is wxnet's extension: the ports of each name, in preference order)::

    <dns><retcode>0</retcode>
     <domainlist>
      <domain name="long.wxnet.local" timeout="600" ports="8080"><ip>10.0.0.1</ip></domain>
     </domainlist>
     <builtiniplist><ip name="long.wxnet.local" ports="8080">10.0.0.1</ip></builtiniplist>
     <clientip>192.0.2.7</clientip><timestamp>1732560000</timestamp></dns>

Unknown elements and attributes (WeChat's ``signature2``, ``functionlist``,
``property``...) are ignored. A document over :data:`MAX_DOCUMENT` bytes, or one that
declares a DTD or entities, is refused before it is parsed.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from wxnet.proto.errors import RemoteProtocolError

__all__ = [
    "DEFAULT_TTL",
    "MAX_DOCUMENT",
    "BuiltinIP",
    "DnsDomain",
    "NewDns",
    "NewDnsError",
    "build_newgetdns",
    "parse_newgetdns",
]

MAX_DOCUMENT = 256 * 1024
DEFAULT_TTL = 600.0


class NewDnsError(RemoteProtocolError):
    """The newgetdns document cannot be used."""


@dataclass(frozen=True, slots=True)
class DnsDomain:
    """A ``<domain>``: a name, how long its list holds (seconds), ports and addresses."""

    name: str
    ttl: float
    ports: tuple[int, ...]
    ips: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BuiltinIP:
    """One ``<builtiniplist><ip>``: an address to try when DNS fails."""

    name: str
    ports: tuple[int, ...]
    ip: str


@dataclass(frozen=True, slots=True)
class NewDns:
    """A whole newgetdns document."""

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
        """The shortest domain TTL: when the whole list should be fetched again."""
        return min((d.ttl for d in self.domains), default=DEFAULT_TTL)


# ---- build ----------------------------------------------------------------------------------


def _ports_text(ports: tuple[int, ...]) -> str:
    return ",".join(str(p) for p in ports)


def build_newgetdns(doc: NewDns) -> bytes:
    """The document's bytes (UTF-8 XML with a declaration)."""
    root = ET.Element("dns")
    ET.SubElement(root, "retcode").text = str(doc.retcode)
    dl = ET.SubElement(root, "domainlist")
    for d in doc.domains:
        attrs = {"name": d.name, "timeout": str(int(d.ttl)), "ports": _ports_text(d.ports)}
        el = ET.SubElement(dl, "domain", attrs)
        for a in d.ips:
            ET.SubElement(el, "ip").text = a
    bl = ET.SubElement(root, "builtiniplist")
    for b in doc.builtin:
        ET.SubElement(bl, "ip", {"name": b.name, "ports": _ports_text(b.ports)}).text = b.ip
    ET.SubElement(root, "clientip").text = doc.client_ip
    ET.SubElement(root, "timestamp").text = str(doc.timestamp)
    out: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return out


# ---- parse ----------------------------------------------------------------------------------


def _ports(text: str | None, where: str) -> tuple[int, ...]:
    if text is None or not text.strip():
        return ()
    out: list[int] = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or not 0 < int(part) < 65536:
            raise NewDnsError(f"newgetdns: bad port {part[:20]!r} in {where}")
        out.append(int(part))
    return tuple(out)


def _ip(text: str | None, where: str) -> str:
    value = (text or "").strip()
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise NewDnsError(f"newgetdns: {value[:40]!r} in {where} is not an IP address") from None


def _int(text: str | None, where: str, default: int) -> int:
    if text is None or not text.strip():
        return default
    try:
        return int(text.strip())
    except ValueError:
        raise NewDnsError(f"newgetdns: {where} is not an integer: {text.strip()[:20]!r}") from None


def _root(data: bytes | str) -> ET.Element:
    if len(data) > MAX_DOCUMENT:
        raise NewDnsError(f"newgetdns: document of {len(data)} bytes exceeds {MAX_DOCUMENT}")
    probe = (data.encode("utf-8", "replace") if isinstance(data, str) else data).upper()
    if b"<!ENTITY" in probe or b"<!DOCTYPE" in probe:
        raise NewDnsError("newgetdns: DTD and entity declarations are not accepted")
    try:
        root = ET.fromstring(data)
    except (ET.ParseError, ValueError) as exc:
        raise NewDnsError(f"newgetdns: not well-formed XML ({exc})") from None
    if root.tag != "dns":
        raise NewDnsError(f"newgetdns: root element is <{root.tag[:40]}>, expected <dns>")
    return root


def parse_newgetdns(data: bytes | str) -> NewDns:
    """Parse a newgetdns document.

    Raises:
        NewDnsError: too large, a DTD, not XML, not a ``<dns>`` document, a non-zero
            retcode, or a value (IP, port, timeout) that does not parse.
    """
    root = _root(data)
    retcode = _int(root.findtext("retcode"), "retcode", 0)
    if retcode != 0:
        raise NewDnsError(f"newgetdns: server returned retcode {retcode}")
    domains: list[DnsDomain] = []
    for d in root.iterfind("domainlist/domain"):
        name = (d.get("name") or "").strip()
        if not name:
            raise NewDnsError("newgetdns: <domain> without a name")
        where = f"domain {name[:60]}"
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
