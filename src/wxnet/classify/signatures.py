"""Application signatures: data files, loaded and checked once.

One TOML file per application (``signatures/*.toml`` in this package). Fields, all
optional except ``id``, ``label`` and ``reason``::

    id = "wechat"                 # signature id (the Verdict's ``app``)
    label = "WeChat"              # display name
    reason = "..."                # why these rules: sources, claims (S..), captures
    dependencies = ["apple-push"] # apps an allow-only phone needs for this one to work
    domains = ["weixin.qq.com"]   # name suffixes; the most specific over all files wins
    host_regex = ['^x\\.y$']      # full-name regexes, tried when no suffix matched
    http_paths = ["/mmtls/"]      # HTTP request path prefixes
    user_agents = ["MicroMessenger"]  # User-Agent substrings
    mmtls = true                  # MMTLS record heads (f1 03 / f1 04) belong to this app
    longlink_2014 = true          # the S32 16-byte long-link head belongs to this app
    payload_ports = [80, 443, 8080]   # server ports where mmtls/longlink heads count
    tcp_ports = [14000]           # port-only (unconfirmed) evidence
    udp_ports = [8000]
    ranges = ["17.0.0.0/8"]       # address ranges: unconfirmed "<label> (unconfirmed)"
    trusted_ranges_from = ["x"]   # other files' ranges that hold only this app's servers
    [[operator_ranges]]           # ranges the app's operator owns (its own servers, never a
    range = "203.205.176.0/20"    #   cloud provider's customer blocks), each with its source;
    source = "..."                #   they clear spoof checks and admit in wxnet gate
    newgetdns_ports = [80]        # where the app's HTTP-DNS (newgetdns, S10) is served
    newgetdns_paths = ["/cgi-bin/micromsg-bin/newgetdns"]
    [[udp_payload]]               # first-datagram patterns (hex; "??" = any byte)
    prefix = ["d10a2e0a"]         # any of these prefixes
    suffix = "03"                 # optional last bytes
    lengths = [72]                # optional exact lengths
    min_len = 11                  # optional minimum length
    ports = [8000]                # optional server ports
    what = "..."                  # evidence text

Unknown keys are errors (a typo would otherwise silently disable a rule).
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "AppSignature",
    "PayloadPattern",
    "SignatureError",
    "SignatureSet",
    "load_signatures",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SignatureError(ValueError):
    """A signature file is malformed; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class PayloadPattern:
    """A first-datagram pattern: prefixes (with ``None`` as wildcard bytes) and limits."""

    prefixes: tuple[tuple[int | None, ...], ...]
    what: str
    suffix: bytes = b""
    lengths: tuple[int, ...] = ()
    min_len: int = 0
    ports: tuple[int, ...] = ()

    def matches(self, payload: bytes, server_port: int) -> bool:
        n = len(payload)
        if n < self.min_len or (self.lengths and n not in self.lengths):
            return False
        if self.ports and server_port not in self.ports:
            return False
        if self.suffix and not payload.endswith(self.suffix):
            return False
        for prefix in self.prefixes:
            if n >= len(prefix) and all(b is None or payload[i] == b for i, b in enumerate(prefix)):
                return True
        return False


@dataclass(frozen=True, slots=True)
class AppSignature:
    id: str
    label: str
    reason: str
    dependencies: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    host_regex: tuple[str, ...] = ()
    http_paths: tuple[str, ...] = ()
    user_agents: tuple[str, ...] = ()
    mmtls: bool = False
    longlink_2014: bool = False
    payload_ports: tuple[int, ...] = ()
    tcp_ports: tuple[int, ...] = ()
    udp_ports: tuple[int, ...] = ()
    ranges: tuple[IPNetwork, ...] = ()
    trusted_ranges_from: tuple[str, ...] = ()
    operator_ranges: tuple[IPNetwork, ...] = ()
    operator_sources: tuple[str, ...] = ()  # one per operator range
    newgetdns_ports: tuple[int, ...] = ()
    newgetdns_paths: tuple[str, ...] = ()
    udp_payload: tuple[PayloadPattern, ...] = ()
    source: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        """The DNS names (suffixes) this app owns."""
        return self.domains

    @property
    def ports(self) -> dict[str, tuple[int, ...]]:
        """Ports by transport: where payload heads count, plus port-only ports."""
        tcp = tuple(sorted(set(self.payload_ports) | set(self.tcp_ports)))
        return {"tcp": tcp, "udp": tuple(sorted(set(self.udp_ports)))}


@dataclass(frozen=True, slots=True)
class SignatureSet:
    """A checked set of signatures with the indexes the classifier needs."""

    apps: Mapping[str, AppSignature]
    suffix_index: Mapping[str, str] = field(default_factory=dict)
    regexes: tuple[tuple[re.Pattern[str], str], ...] = ()

    def __iter__(self) -> Any:
        return iter(self.apps.values())

    def __len__(self) -> int:
        return len(self.apps)


_KEYS = {
    "id",
    "label",
    "reason",
    "dependencies",
    "domains",
    "host_regex",
    "http_paths",
    "user_agents",
    "mmtls",
    "longlink_2014",
    "payload_ports",
    "tcp_ports",
    "udp_ports",
    "ranges",
    "trusted_ranges_from",
    "operator_ranges",
    "newgetdns_ports",
    "newgetdns_paths",
    "udp_payload",
}
_OPERATOR_KEYS = {"range", "source"}
_PATTERN_KEYS = {"prefix", "suffix", "lengths", "min_len", "ports", "what"}
_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9-]+$")


def bundled_paths() -> list[Path]:
    """The signature files shipped in this package, sorted by name."""
    # A plain path, not importlib.resources: the files are always on disk (the paths are
    # returned), and importlib.resources costs ~15 ms of start-up (zipfile, tempfile).
    root = Path(__file__).with_name("signatures")
    return sorted(p for p in root.iterdir() if p.name.endswith(".toml"))


def load_signatures(paths: Iterable[Path] | None = None) -> SignatureSet:
    """Load and check signature files (``None``: the bundled set).

    Raises:
        SignatureError: a file cannot be read or parsed, a field is missing, unknown or
            of the wrong type, two files share an id or a domain, or a reference
            (dependency, trusted range set) names no loaded signature.
    """
    files = bundled_paths() if paths is None else [Path(p) for p in paths]
    apps: dict[str, AppSignature] = {}
    for path in files:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SignatureError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SignatureError(f"{path}: not valid TOML: {exc}") from None
        sig = _build(path, raw)
        if sig.id in apps:
            raise SignatureError(
                f"{path}: id {sig.id!r} is already defined in {apps[sig.id].source}"
            )
        apps[sig.id] = sig
    return _index(apps)


def _index(apps: dict[str, AppSignature]) -> SignatureSet:
    suffixes: dict[str, str] = {}
    regexes: list[tuple[re.Pattern[str], str]] = []
    for sig in apps.values():
        for ref in (*sig.dependencies, *sig.trusted_ranges_from):
            if ref not in apps:
                raise SignatureError(f"{sig.source}: refers to unknown signature {ref!r}")
        for d in sig.domains:
            if d in suffixes:
                raise SignatureError(
                    f"{sig.source}: domain {d!r} is also claimed by {suffixes[d]!r}"
                )
            suffixes[d] = sig.id
        for rx in sig.host_regex:
            regexes.append((re.compile(rx), sig.id))
    return SignatureSet(dict(apps), suffixes, tuple(regexes))


def _build(path: Path, raw: dict[str, Any]) -> AppSignature:
    where = str(path)
    unknown = set(raw) - _KEYS
    if unknown:
        raise SignatureError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    ident = _str(raw, "id", where)
    if not _ID.match(ident):
        raise SignatureError(f"{where}: id {ident!r} must be lower-case letters, digits, '-'")
    domains = tuple(d.lower().rstrip(".") for d in _strs(raw, "domains", where))
    for d in domains:
        if not _DOMAIN.match(d):
            raise SignatureError(f"{where}: domains: {d!r} is not a domain name")
    regex = _strs(raw, "host_regex", where)
    for rx in regex:
        try:
            re.compile(rx)
        except re.error as exc:
            raise SignatureError(f"{where}: host_regex {rx!r}: {exc}") from None
    ranges: list[IPNetwork] = []
    for text in _strs(raw, "ranges", where):
        try:
            ranges.append(ipaddress.ip_network(text, strict=True))
        except ValueError as exc:
            raise SignatureError(f"{where}: ranges: {exc}") from None
    op_ranges, op_sources = _operator_ranges(raw, where)
    patterns = raw.get("udp_payload", [])
    if not isinstance(patterns, list):
        raise SignatureError(f"{where}: udp_payload must be an array of tables")
    return AppSignature(
        id=ident,
        label=_str(raw, "label", where),
        reason=" ".join(_str(raw, "reason", where).split()),
        dependencies=_strs(raw, "dependencies", where),
        domains=domains,
        host_regex=regex,
        http_paths=_strs(raw, "http_paths", where),
        user_agents=_strs(raw, "user_agents", where),
        mmtls=_bool(raw, "mmtls", where),
        longlink_2014=_bool(raw, "longlink_2014", where),
        payload_ports=_ports(raw, "payload_ports", where),
        tcp_ports=_ports(raw, "tcp_ports", where),
        udp_ports=_ports(raw, "udp_ports", where),
        ranges=tuple(ranges),
        trusted_ranges_from=_strs(raw, "trusted_ranges_from", where),
        operator_ranges=tuple(op_ranges),
        operator_sources=tuple(op_sources),
        newgetdns_ports=_ports(raw, "newgetdns_ports", where),
        newgetdns_paths=_strs(raw, "newgetdns_paths", where),
        udp_payload=tuple(
            _pattern(p, f"{where}: udp_payload[{i}]") for i, p in enumerate(patterns)
        ),
        source=where,
    )


def _operator_ranges(raw: dict[str, Any], where: str) -> tuple[list[IPNetwork], list[str]]:
    """``[[operator_ranges]]``: (ranges, their sources)."""
    op_raw = raw.get("operator_ranges", [])
    if not isinstance(op_raw, list):
        raise SignatureError(f"{where}: operator_ranges must be an array of tables")
    op_ranges: list[IPNetwork] = []
    op_sources: list[str] = []
    for i, item in enumerate(op_raw):
        at = f"{where}: operator_ranges[{i}]"
        if not isinstance(item, dict) or set(item) - _OPERATOR_KEYS:
            raise SignatureError(f"{at}: a table with range and source only")
        try:
            op_ranges.append(ipaddress.ip_network(_str(item, "range", at), strict=True))
        except ValueError as exc:
            raise SignatureError(f"{at}: range: {exc}") from None
        op_sources.append(" ".join(_str(item, "source", at).split()))
    return op_ranges, op_sources


def _pattern(raw: Any, where: str) -> PayloadPattern:
    if not isinstance(raw, dict):
        raise SignatureError(f"{where}: must be a table")
    unknown = set(raw) - _PATTERN_KEYS
    if unknown:
        raise SignatureError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    prefixes = tuple(_hex_pattern(p, where) for p in _strs(raw, "prefix", where))
    if not prefixes:
        raise SignatureError(f"{where}: needs at least one prefix")
    suffix_text = raw.get("suffix", "")
    if not isinstance(suffix_text, str):
        raise SignatureError(f"{where}: suffix must be a hex string")
    try:
        suffix = bytes.fromhex(suffix_text)
    except ValueError:
        raise SignatureError(f"{where}: suffix {suffix_text!r} is not hex") from None
    min_len = raw.get("min_len", 0)
    if not isinstance(min_len, int) or isinstance(min_len, bool) or min_len < 0:
        raise SignatureError(f"{where}: min_len must be a non-negative integer")
    return PayloadPattern(
        prefixes=prefixes,
        what=_str(raw, "what", where),
        suffix=suffix,
        lengths=_ports(raw, "lengths", where, top=65535),
        min_len=min_len,
        ports=_ports(raw, "ports", where),
    )


def _hex_pattern(text: str, where: str) -> tuple[int | None, ...]:
    cleaned = text.replace(" ", "").lower()
    if len(cleaned) % 2 or not cleaned:
        raise SignatureError(f"{where}: prefix {text!r} needs whole bytes")
    out: list[int | None] = []
    for i in range(0, len(cleaned), 2):
        pair = cleaned[i : i + 2]
        if pair == "??":
            out.append(None)
            continue
        try:
            out.append(int(pair, 16))
        except ValueError:
            raise SignatureError(f"{where}: prefix {text!r} is not hex") from None
    return tuple(out)


def _str(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise SignatureError(f"{where}: {key} must be a non-empty string")
    return value


def _strs(raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SignatureError(f"{where}: {key} must be a list of non-empty strings")
    return tuple(value)


def _bool(raw: Mapping[str, Any], key: str, where: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise SignatureError(f"{where}: {key} must be true or false")
    return value


def _ports(raw: Mapping[str, Any], key: str, where: str, top: int = 65535) -> tuple[int, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 < v <= top for v in value
    ):
        raise SignatureError(f"{where}: {key} must be a list of integers in 1..{top}")
    return tuple(value)
