"""The classifier: a flow's first bytes + what DNS said -> an application and why.

Evidence order (docs/classify.md, "Evidence order"), strongest first; the first kind
that names an application decides, and every later kind that names the same
application is kept as supporting evidence:

1. ``mmtls``        MMTLS record head (``f1 03``/``f1 04``) as the first client bytes or
                    as the body of an HTTP POST, on the signature's payload ports;
2. ``http-host``, ``http-path``, ``http-ua``  the HTTP request head;
3. ``tls-sni``      the TLS ClientHello's server_name (across records and segments);
4. ``longlink-2014`` the 16-byte long-link head of S32, on the payload ports only;
   (UDP: ``dns`` for a query's name, ``udp-payload`` for first-datagram patterns)
5. ``dns``          the server address was in a DNS answer to this client for a name
                    the signature owns (TTL-bounded, per client);
6. ``ip-range``     the address is in a signature's ranges: unconfirmed label only;
7. ``port``         a port-only signature port: unconfirmed label only.

A name claim (Host or SNI) for an app whose server address no DNS answer for that app
gave, and which lies outside the app's known ranges, adds ``spoof`` evidence and sets
``spoofed`` (only when a :class:`DnsMemory` is given: without one there is nothing to
compare against).
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import re
from collections.abc import Mapping
from typing import Final, final

from wxnet.classify.dns import DnsMemory
from wxnet.classify.signatures import AppSignature, PayloadPattern, SignatureSet, load_signatures
from wxnet.proto.sniff import (
    MMTLS_RECORD_TYPES,
    NEED_DATA,
    HttpRequestHead,
    LonglinkHead,
    MmtlsRecordHead,
    TlsClientHello,
    parse_dns,
    sniff_http_request,
    sniff_longlink,
    sniff_mmtls,
    sniff_tls_client_hello,
)
from wxnet.proto.value import Value

__all__ = ["Classifier", "Evidence", "FlowView", "Verdict"]

_RANK = {
    "mmtls": 0,
    "http-host": 1,
    "http-path": 2,
    "http-ua": 3,
    "tls-sni": 4,
    "longlink-2014": 5,
    "udp-payload": 5,
    "dns": 6,
}


# The three value types below are written out on :class:`wxnet.proto.value.Value` rather
# than made by ``@dataclass(frozen=True, slots=True)`` (why: that module). Attributes are
# ``Final``: mypy refuses assignments, and the compiled build refuses them at run time.


@final
class FlowView(Value):
    """What the classifier sees of a flow. For UDP the byte fields hold the first
    datagram of each direction."""

    __slots__ = (
        "client",
        "client_bytes",
        "client_port",
        "server",
        "server_bytes",
        "server_port",
        "transport",
    )
    FIELDS = (
        "transport",
        "client",
        "client_port",
        "server",
        "server_port",
        "client_bytes",
        "server_bytes",
    )

    def __init__(
        self,
        transport: str,
        client: str,
        client_port: int,
        server: str,
        server_port: int,
        client_bytes: bytes = b"",
        server_bytes: bytes = b"",
    ) -> None:
        self.transport: Final = transport
        self.client: Final = client
        self.client_port: Final = client_port
        self.server: Final = server
        self.server_port: Final = server_port
        self.client_bytes: Final = client_bytes
        self.server_bytes: Final = server_bytes

    def _key(self) -> tuple[str, str, int, str, int, bytes, bytes]:
        return (
            self.transport,
            self.client,
            self.client_port,
            self.server,
            self.server_port,
            self.client_bytes,
            self.server_bytes,
        )


@final
class Evidence(Value):
    """One reason for a verdict: its kind (``tls-sni``, ``dns``, ...) and the detail."""

    __slots__ = ("detail", "kind")
    FIELDS = ("kind", "detail")

    def __init__(self, kind: str, detail: str) -> None:
        self.kind: Final = kind
        self.detail: Final = detail

    def _key(self) -> tuple[str, str]:
        return (self.kind, self.detail)


@final
class Verdict(Value):
    """A flow's label: the app (signature id, ``None``: unknown), its display label, the
    evidence, whether it is confirmed or spoofed, whether more bytes could change it
    (``final``), and the HTTP Host / TLS SNI names the client claimed."""

    __slots__ = ("app", "confirmed", "evidence", "final", "label", "names", "spoofed")
    FIELDS = ("app", "label", "evidence", "confirmed", "spoofed", "final", "names")

    def __init__(
        self,
        app: str | None,
        label: str,
        evidence: tuple[Evidence, ...],
        confirmed: bool,
        spoofed: bool = False,
        final: bool = True,
        names: tuple[str, ...] = (),
    ) -> None:
        self.app: Final = app
        self.label: Final = label
        self.evidence: Final = evidence
        self.confirmed: Final = confirmed
        self.spoofed: Final = spoofed
        self.final: Final = final
        self.names: Final = names

    def _key(
        self,
    ) -> tuple[str | None, str, tuple[Evidence, ...], bool, bool, bool, tuple[str, ...]]:
        return (
            self.app,
            self.label,
            self.evidence,
            self.confirmed,
            self.spoofed,
            self.final,
            self.names,
        )


_UNKNOWN = "unknown"


class Classifier:
    """Label flows with a :class:`SignatureSet` (``None``: the bundled signatures).

    Pure: no I/O after construction; ``classify`` may be called again with more bytes
    while the verdict is not ``final``.
    """

    def __init__(self, signatures: SignatureSet | None = None) -> None:
        self._set = signatures if signatures is not None else load_signatures()
        sigs = list(self._set.apps.values())
        self._mmtls = [s for s in sigs if s.mmtls]
        self._longlink = [s for s in sigs if s.longlink_2014]
        self._paths = [(p, s) for s in sigs for p in s.http_paths]
        self._uas = [(u.lower(), u, s) for s in sigs for u in s.user_agents]
        self._udp = [s for s in sigs if s.udp_payload]
        # The first-datagram patterns, in the same order, as one regular expression per
        # pattern (its prefixes as alternatives, "??" as any byte): PayloadPattern.matches
        # in interpreted Python was ~6% of the analyser's time on real traffic.
        self._udp_rules = [
            _UdpRule(s.id, pat) for s in sigs if s.udp_payload for pat in s.udp_payload
        ]
        self._tcp_ports = {p: s for s in sigs for p in s.tcp_ports}
        self._udp_ports = {p: s for s in sigs for p in s.udp_ports}
        ranges: dict[int, list[tuple[int, int, str]]] = {4: [], 6: []}
        for s in sigs:
            for net in s.ranges:
                ranges[net.version].append(
                    (int(net.network_address), int(net.broadcast_address), s.id)
                )
        for lst in ranges.values():
            lst.sort()
        self._ranges = ranges
        self._range_starts = {v: [r[0] for r in lst] for v, lst in ranges.items()}
        # reach[i] = the highest end among ranges 0..i: scanning back from the address's
        # position can stop as soon as no earlier range reaches it (exact, and usually
        # one step).
        self._range_reach: dict[int, list[int]] = {}
        for v, lst in ranges.items():
            reach, top = [], -1
            for _start, end, _app in lst:
                top = max(top, end)
                reach.append(top)
            self._range_reach[v] = reach

    # ------------------------------------------------------------------ names

    def apps(self) -> Mapping[str, AppSignature]:
        return self._set.apps

    def app_for_name(self, name: str) -> str | None:
        """The signature id that owns a DNS name, or ``None``."""
        hit = self._match_name(name)
        return hit[0] if hit else None

    def _match_name(self, name: str) -> tuple[str, str] | None:
        n = name.strip().rstrip(".").lower()
        if not n:
            return None
        index = self._set.suffix_index
        parts = n.split(".")
        for i in range(len(parts)):
            app = index.get(".".join(parts[i:]))
            if app is not None:
                return app, f"domain {'.'.join(parts[i:])}"
        for rx, app in self._set.regexes:
            if rx.search(n):
                return app, f"regex {rx.pattern}"
        return None

    def ranges_app(self, address: str, transport: str = "", port: int = 0) -> str | None:
        """The signature whose ranges hold ``address`` (most specific), or ``None``.

        A signature that lists ports claims its ranges only on those ports (Apple's
        17.0.0.0/8 is push on 5223, not NTP on 123); pass ``transport`` and ``port``.
        """
        ip = _ip(address)
        if ip is None:
            return None
        value = int(ip)
        lst = self._ranges[ip.version]
        reach = self._range_reach[ip.version]
        i = bisect.bisect_right(self._range_starts[ip.version], value) - 1
        best: tuple[int, str] | None = None
        # Ranges may nest; scan back over those starting at or below the address.
        while i >= 0 and reach[i] >= value:
            start, end, app = lst[i]
            i -= 1
            if end >= value and (best is None or end - start < best[0]):
                if transport and not self._port_ok(self._set.apps[app], transport, port):
                    continue
                best = (end - start, app)
        return best[1] if best else None

    @staticmethod
    def _port_ok(sig: AppSignature, transport: str, port: int) -> bool:
        ports = sig.ports
        if not ports["tcp"] and not ports["udp"]:
            return True
        return port in ports.get(transport, ())

    def _in_ranges_of(self, sig: AppSignature, address: str) -> bool:
        ip = _ip(address)
        if ip is None:
            return False
        if any(ip in net for net in sig.operator_ranges if net.version == ip.version):
            return True
        sets = [self._set.apps[r] for r in sig.trusted_ranges_from]
        return any(ip in net for s in sets for net in s.ranges if net.version == ip.version)

    # --------------------------------------------------------------- classify

    def classify(
        self,
        flow: FlowView,
        dns: DnsMemory | None = None,
        now: float = 0.0,
        *,
        spoof_check: bool = True,
        any_port: bool = False,
    ) -> Verdict:
        """Label one flow. Never raises on any bytes.

        ``spoof_check=False`` skips the spoof test (the capture analyser does so for
        clients whose DNS traffic it never saw, since it cannot know what they were told).
        ``any_port=True`` lets payload heads (MMTLS, the 2014 head) count on every port,
        not only the signature's ``payload_ports`` (the gateway's block mode: a blocked
        app moved to another port is still that app).
        """
        found: list[tuple[str | None, Evidence]] = []
        claims: list[tuple[str, str]] = []  # (app, name) from Host / SNI
        if flow.transport == "udp":
            need = not flow.client_bytes
            self._udp_payload(flow, found)
        else:
            need = self._tcp_payload(flow, found, claims, any_port)
        strong = [(app, ev) for app, ev in found if app is not None]
        strong.sort(key=lambda item: _RANK.get(item[1].kind, 9))
        if strong:
            winner = strong[0][0]
            assert winner is not None
            names = tuple(dict.fromkeys(name for _app, name in claims))
            sig = self._set.apps[winner]
            evidence = [ev for app, ev in strong if app == winner]
            dns_ev = self._dns_evidence(flow, dns, now, only=winner)
            if dns_ev is not None:
                evidence.append(dns_ev[1])
            spoof = None
            if spoof_check:
                spoof = self._spoof(flow, dns, now, sig, claims, dns_ev is not None)
            if spoof is not None:
                evidence.append(spoof)
                return Verdict(
                    winner, f"{sig.label} (spoofed)", tuple(evidence), False, True, True, names
                )
            return Verdict(winner, sig.label, tuple(evidence), True, False, True, names)
        return self._unconfirmed(flow, dns, now, found, need)

    def _unconfirmed(
        self,
        flow: FlowView,
        dns: DnsMemory | None,
        now: float,
        found: list[tuple[str | None, Evidence]],
        need: bool,
    ) -> Verdict:
        """No payload evidence names an app: what DNS, the address ranges or the port
        say (never confirmed), with the informational evidence found."""
        info = tuple(ev for app, ev in found if app is None)
        final = not need
        dns_hit = self._dns_evidence(flow, dns, now, only=None)
        if dns_hit is not None:
            sig = self._set.apps[dns_hit[0]]
            return Verdict(sig.id, sig.label, (dns_hit[1], *info), True, False, final)
        ports = self._udp_ports if flow.transport == "udp" else self._tcp_ports
        port_sig = ports.get(flow.server_port)
        port_ev = None
        if port_sig is not None:
            port_ev = Evidence(
                "port", f"{flow.transport.upper()} port {flow.server_port} is {port_sig.label}'s"
            )
        app = self.ranges_app(flow.server, flow.transport, flow.server_port)
        if app is not None:
            sig = self._set.apps[app]
            ev = Evidence("ip-range", f"{flow.server} is in {sig.label}'s address ranges")
            extra = (port_ev,) if port_ev is not None and port_sig is sig else ()
            label = f"{sig.label} (unconfirmed)"
            return Verdict(app, label, (ev, *extra, *info), False, False, final)
        if port_sig is not None and port_ev is not None:
            label = f"{port_sig.label} (unconfirmed)"
            return Verdict(port_sig.id, label, (port_ev, *info), False, False, final)
        return Verdict(None, _UNKNOWN, info, False, False, final)

    # ---------------------------------------------------------- the detectors

    def _tcp_payload(
        self,
        flow: FlowView,
        found: list[tuple[str | None, Evidence]],
        claims: list[tuple[str, str]],
        any_port: bool = False,
    ) -> bool:
        """Run the TCP sniffers; return True when more client bytes could matter."""
        data = flow.client_bytes
        port = flow.server_port
        if not data:
            return True
        need = False
        # Each sniffer rejects on its first byte; checking that byte here skips the calls.
        b0 = data[0]
        for sig in self._mmtls if b0 in MMTLS_RECORD_TYPES else ():
            if any_port or port in sig.payload_ports:
                m = sniff_mmtls(data)
                if isinstance(m, MmtlsRecordHead):
                    found.append(
                        (
                            sig.id,
                            Evidence(
                                "mmtls",
                                f"first client bytes {m.describe()} are an MMTLS record head "
                                f"(length {m.length}) on port {port}",
                            ),
                        )
                    )
                elif m is NEED_DATA:
                    need = True
        head = sniff_http_request(data) if 0x41 <= b0 <= 0x5A else None
        if isinstance(head, HttpRequestHead):
            need = self._http(flow, head, found, claims, any_port) or need
        elif head is NEED_DATA:
            need = True
        if b0 == 0x16:
            need = self._tls(data, found, claims) or need
        for sig in self._longlink if b0 == 0 else ():
            if any_port or port in sig.payload_ports:
                ll = sniff_longlink(data)
                if isinstance(ll, LonglinkHead):
                    found.append(
                        (
                            sig.id,
                            Evidence(
                                "longlink-2014",
                                f"first 16 client bytes are an S32 long-link head "
                                f"(length {ll.total_len}, cmd {ll.cmd}, seq {ll.seq}) "
                                f"on port {port}",
                            ),
                        )
                    )
                elif ll is NEED_DATA:
                    need = True
        return need

    def _tls(
        self, data: bytes, found: list[tuple[str | None, Evidence]], claims: list[tuple[str, str]]
    ) -> bool:
        """The TLS ClientHello's SNI; True when more bytes could complete the hello."""
        hello = sniff_tls_client_hello(data)
        if isinstance(hello, TlsClientHello):
            if hello.sni:
                hit = self._match_name(hello.sni)
                if hit is not None:
                    claims.append((hit[0], hello.sni))
                    detail = f'SNI "{hello.sni}" matches {hit[1]}'
                else:
                    detail = f'SNI "{hello.sni}" (no signature)'
                found.append((hit[0] if hit else None, Evidence("tls-sni", detail)))
            return False
        return hello is NEED_DATA

    def _http(
        self,
        flow: FlowView,
        head: HttpRequestHead,
        found: list[tuple[str | None, Evidence]],
        claims: list[tuple[str, str]],
        any_port: bool = False,
    ) -> bool:
        port = flow.server_port
        need = not head.complete
        if head.body:
            for sig in self._mmtls:
                if any_port or port in sig.payload_ports:
                    m = sniff_mmtls(head.body)
                    if isinstance(m, MmtlsRecordHead):
                        found.append(
                            (
                                sig.id,
                                Evidence(
                                    "mmtls",
                                    f"HTTP {head.method} body starts with MMTLS record head "
                                    f"{m.describe()} (length {m.length}) on port {port}",
                                ),
                            )
                        )
        if head.host:
            hit = self._match_name(head.host)
            if hit is not None:
                claims.append((hit[0], head.host))
                found.append(
                    (hit[0], Evidence("http-host", f'Host "{head.host}" matches {hit[1]}'))
                )
            else:
                found.append((None, Evidence("http-host", f'Host "{head.host}" (no signature)')))
        path = head.path
        for prefix, sig in self._paths:
            if path.startswith(prefix):
                found.append(
                    (sig.id, Evidence("http-path", f'path "{_clip(path)}" starts with {prefix}'))
                )
                break
        if head.user_agent:
            lua = head.user_agent.lower()
            for needle, orig, sig in self._uas:
                if needle in lua:
                    found.append(
                        (
                            sig.id,
                            Evidence(
                                "http-ua", f'User-Agent "{_clip(head.user_agent)}" contains {orig}'
                            ),
                        )
                    )
                    break
        return need

    def _udp_payload(self, flow: FlowView, found: list[tuple[str | None, Evidence]]) -> None:
        data = flow.client_bytes
        if not data:
            return
        if flow.server_port in (53, 5353):
            msg = parse_dns(data)
            if msg is not None and msg.questions:
                qname = msg.questions[0]
                hit = self._match_name(qname)
                if hit is not None:
                    ev = Evidence("dns", f'DNS query for "{qname}" matches {hit[1]}')
                    found.append((hit[0], ev))
                else:
                    found.append((None, Evidence("dns", f'DNS query for "{qname}" (no signature)')))
                return
        port = flow.server_port
        for rule in self._udp_rules:
            if rule.matches(data, port):
                found.append((rule.app, Evidence("udp-payload", rule.what)))
                return

    def _dns_evidence(
        self, flow: FlowView, dns: DnsMemory | None, now: float, only: str | None
    ) -> tuple[str, Evidence] | None:
        if dns is None:
            return None
        for name in dns.names_for(flow.client, flow.server, now):
            app = self.app_for_name(name)
            if app is not None and (only is None or app == only):
                return app, Evidence(
                    "dns", f'{flow.server} was a DNS answer to {flow.client} for "{name}"'
                )
        return None

    def _spoof(
        self,
        flow: FlowView,
        dns: DnsMemory | None,
        now: float,
        sig: AppSignature,
        claims: list[tuple[str, str]],
        dns_agrees: bool,
    ) -> Evidence | None:
        if dns is None or dns_agrees:
            return None
        names = [name for app, name in claims if app == sig.id]
        if not names or self._in_ranges_of(sig, flow.server):
            return None
        return Evidence(
            "spoof",
            f'claims "{names[0]}" ({sig.label}) but {flow.server} was in no DNS answer to '
            f"{flow.client} for a {sig.label} name and is outside its known ranges",
        )


@final
class _UdpRule:
    """A :class:`PayloadPattern` of signature ``app``, ready to match: the same test as
    ``PayloadPattern.matches``, with the prefixes as one anchored bytes pattern (compiled
    at the first datagram that gets that far: a run without such datagrams, or a
    command that classifies nothing, does not pay for it)."""

    __slots__ = ("app", "lengths", "min_len", "pattern", "ports", "prefixes", "suffix", "what")

    def __init__(self, app: str, pattern: PayloadPattern) -> None:
        self.app = app
        self.pattern = pattern
        self.what = pattern.what
        self.min_len = pattern.min_len
        self.lengths = frozenset(pattern.lengths)
        self.ports = frozenset(pattern.ports)
        self.suffix = pattern.suffix
        self.prefixes: re.Pattern[bytes] | None = None

    def __reduce__(self) -> tuple[type[_UdpRule], tuple[str, PayloadPattern]]:
        """Pickled as its source (the gateway hands its classifier to its DNS workers):
        a compiled class is not made without its ``__init__``'s arguments."""
        return (_UdpRule, (self.app, self.pattern))

    def _compile(self) -> re.Pattern[bytes]:
        alternatives = [
            b"".join(b"." if b is None else re.escape(bytes((b,))) for b in prefix)
            for prefix in self.pattern.prefixes
        ]
        # No prefix: PayloadPattern.matches is False; "(?!)" never matches.
        body = b"|".join(b"(?:" + a + b")" for a in alternatives) if alternatives else b"(?!)"
        rx = self.prefixes = re.compile(body, re.DOTALL)
        return rx

    def matches(self, payload: bytes, server_port: int) -> bool:
        n = len(payload)
        if n < self.min_len or (self.lengths and n not in self.lengths):
            return False
        if self.ports and server_port not in self.ports:
            return False
        if self.suffix and not payload.endswith(self.suffix):
            return False
        rx = self.prefixes
        if rx is None:
            rx = self._compile()
        return rx.match(payload) is not None


@functools.lru_cache(maxsize=65536)
def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def _clip(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
