"""The newgetdns document (S10; research/mobile-protocol.md 2.8): build and parse.

Shape (``ports`` is wxnet's extension: the ports of each name, in preference order)::

    <dns><retcode>0</retcode>
     <domainlist>
      <domain name="long.wxnet.local" timeout="600" ports="8080"><ip>10.0.0.1</ip></domain>
     </domainlist>
     <builtiniplist><ip name="long.wxnet.local" ports="8080">10.0.0.1</ip></builtiniplist>
     <clientip>192.0.2.7</clientip><timestamp>1732560000</timestamp></dns>
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from wxnet.proto.errors import RemoteProtocolError

__all__ = ["DnsDocument", "DnsEntry", "build_newgetdns", "parse_newgetdns"]

MAX_DOCUMENT = 256 * 1024


@dataclass(frozen=True, slots=True)
class DnsEntry:
    name: str
    addresses: tuple[str, ...]
    ports: tuple[int, ...]
    ttl: int = 600


@dataclass(frozen=True, slots=True)
class DnsDocument:
    domains: tuple[DnsEntry, ...]
    builtin: tuple[DnsEntry, ...] = ()
    client_ip: str = ""
    timestamp: int = 0


def build_newgetdns(doc: DnsDocument) -> bytes:
    root = ET.Element("dns")
    ET.SubElement(root, "retcode").text = "0"
    dl = ET.SubElement(root, "domainlist")
    for d in doc.domains:
        el = ET.SubElement(
            dl, "domain", name=d.name, timeout=str(d.ttl), ports=",".join(map(str, d.ports))
        )
        for a in d.addresses:
            ET.SubElement(el, "ip").text = a
    bl = ET.SubElement(root, "builtiniplist")
    for d in doc.builtin:
        for a in d.addresses:
            ET.SubElement(bl, "ip", name=d.name, ports=",".join(map(str, d.ports))).text = a
    ET.SubElement(root, "clientip").text = doc.client_ip
    ET.SubElement(root, "timestamp").text = str(doc.timestamp)
    out: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return out


def _ports(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        ports = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise RemoteProtocolError(f"bad ports attribute {text[:40]!r}") from None
    if any(not 0 < p < 65536 for p in ports):
        raise RemoteProtocolError(f"port out of range in {text[:40]!r}")
    return ports


def _addr(text: str | None) -> str:
    try:
        return str(ipaddress.ip_address((text or "").strip()))
    except ValueError:
        raise RemoteProtocolError(f"bad IP address {str(text)[:40]!r}") from None


def parse_newgetdns(data: bytes) -> DnsDocument:
    """Parse a newgetdns reply; unknown elements are ignored.

    Raises:
        RemoteProtocolError: not XML, too large, retcode != 0, or bad values.
    """
    if len(data) > MAX_DOCUMENT:
        raise RemoteProtocolError(f"newgetdns document over {MAX_DOCUMENT} bytes")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise RemoteProtocolError("newgetdns document must not declare a DTD")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise RemoteProtocolError(f"newgetdns is not XML: {exc}") from None
    if root.tag != "dns":
        raise RemoteProtocolError(f"newgetdns root is <{root.tag}>, not <dns>")
    ret = (root.findtext("retcode") or "0").strip()
    if ret != "0":
        raise RemoteProtocolError(f"newgetdns retcode {ret[:20]}")
    domains = []
    for el in root.iterfind("domainlist/domain"):
        name = el.get("name") or ""
        if not name:
            raise RemoteProtocolError("newgetdns <domain> without a name")
        try:
            ttl = int(el.get("timeout") or 600)
        except ValueError:
            raise RemoteProtocolError(f"bad timeout on {name}") from None
        addrs = tuple(_addr(ip.text) for ip in el.iterfind("ip"))
        domains.append(DnsEntry(name, addrs, _ports(el.get("ports")), ttl))
    builtin: dict[tuple[str, tuple[int, ...]], list[str]] = {}
    for ip in root.iterfind("builtiniplist/ip"):
        builtin.setdefault((ip.get("name") or "", _ports(ip.get("ports"))), []).append(
            _addr(ip.text)
        )
    try:
        ts = int((root.findtext("timestamp") or "0").strip() or 0)
    except ValueError:
        ts = 0
    return DnsDocument(
        tuple(domains),
        tuple(DnsEntry(n, tuple(a), p) for (n, p), a in builtin.items()),
        (root.findtext("clientip") or "").strip(),
        ts,
    )
