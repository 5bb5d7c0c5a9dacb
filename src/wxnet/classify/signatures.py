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
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from wxnet.proto.plain import Plain

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "AppSignature",
    "PayloadPattern",
    "SignatureError",
    "SignatureSet",
    "load_signatures",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Prefixes = tuple[tuple[int | None, ...], ...]


class SignatureError(ValueError):
    """A signature file is malformed; the message names the file and the field."""


# The three value types are written out on :class:`wxnet.proto.plain.Plain` (same
# constructor, attributes, ==, hash and repr as the frozen dataclasses they were): making
# a dataclass at import costs start-up (that module says why).


class PayloadPattern(Plain):
    """A first-datagram pattern: prefixes (with ``None`` as wildcard bytes) and limits."""

    __slots__ = ("lengths", "min_len", "ports", "prefixes", "suffix", "what")
    FIELDS = __match_args__ = ("prefixes", "what", "suffix", "lengths", "min_len", "ports")

    def __init__(
        self,
        prefixes: Prefixes,
        what: str,
        suffix: bytes = b"",
        lengths: tuple[int, ...] = (),
        min_len: int = 0,
        ports: tuple[int, ...] = (),
    ) -> None:
        self.prefixes: Final = prefixes
        self.what: Final = what
        self.suffix: Final = suffix
        self.lengths: Final = lengths
        self.min_len: Final = min_len
        self.ports: Final = ports

    def _key(self) -> tuple[Prefixes, str, bytes, tuple[int, ...], int, tuple[int, ...]]:
        return (self.prefixes, self.what, self.suffix, self.lengths, self.min_len, self.ports)

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


class AppSignature(Plain):
    """One application's signature (one file); fields as in the module's doc."""

    __slots__ = (
        "dependencies",
        "domains",
        "host_regex",
        "http_paths",
        "id",
        "label",
        "longlink_2014",
        "mmtls",
        "newgetdns_paths",
        "newgetdns_ports",
        "operator_ranges",
        "operator_sources",
        "payload_ports",
        "ranges",
        "reason",
        "source",
        "tcp_ports",
        "trusted_ranges_from",
        "udp_payload",
        "udp_ports",
        "user_agents",
    )
    FIELDS = __match_args__ = (
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
        "operator_sources",
        "newgetdns_ports",
        "newgetdns_paths",
        "udp_payload",
        "source",
    )

    def __init__(
        self,
        id: str,
        label: str,
        reason: str,
        dependencies: tuple[str, ...] = (),
        domains: tuple[str, ...] = (),
        host_regex: tuple[str, ...] = (),
        http_paths: tuple[str, ...] = (),
        user_agents: tuple[str, ...] = (),
        mmtls: bool = False,
        longlink_2014: bool = False,
        payload_ports: tuple[int, ...] = (),
        tcp_ports: tuple[int, ...] = (),
        udp_ports: tuple[int, ...] = (),
        ranges: tuple[IPNetwork, ...] = (),
        trusted_ranges_from: tuple[str, ...] = (),
        operator_ranges: tuple[IPNetwork, ...] = (),
        operator_sources: tuple[str, ...] = (),  # one per operator range
        newgetdns_ports: tuple[int, ...] = (),
        newgetdns_paths: tuple[str, ...] = (),
        udp_payload: tuple[PayloadPattern, ...] = (),
        source: str = "",
    ) -> None:
        self.id: Final = id
        self.label: Final = label
        self.reason: Final = reason
        self.dependencies: Final = dependencies
        self.domains: Final = domains
        self.host_regex: Final = host_regex
        self.http_paths: Final = http_paths
        self.user_agents: Final = user_agents
        self.mmtls: Final = mmtls
        self.longlink_2014: Final = longlink_2014
        self.payload_ports: Final = payload_ports
        self.tcp_ports: Final = tcp_ports
        self.udp_ports: Final = udp_ports
        self.ranges: Final = ranges
        self.trusted_ranges_from: Final = trusted_ranges_from
        self.operator_ranges: Final = operator_ranges
        self.operator_sources: Final = operator_sources
        self.newgetdns_ports: Final = newgetdns_ports
        self.newgetdns_paths: Final = newgetdns_paths
        self.udp_payload: Final = udp_payload
        self.source: Final = source

    @property
    def names(self) -> tuple[str, ...]:
        """The DNS names (suffixes) this app owns."""
        return self.domains

    @property
    def ports(self) -> dict[str, tuple[int, ...]]:
        """Ports by transport: where payload heads count, plus port-only ports."""
        tcp = tuple(sorted(set(self.payload_ports) | set(self.tcp_ports)))
        return {"tcp": tcp, "udp": tuple(sorted(set(self.udp_ports)))}


class SignatureSet(Plain):
    """A checked set of signatures with the indexes the classifier needs."""

    __slots__ = ("apps", "regexes", "suffix_index")
    FIELDS = __match_args__ = ("apps", "suffix_index", "regexes")

    def __init__(
        self,
        apps: Mapping[str, AppSignature],
        suffix_index: Mapping[str, str] | None = None,
        regexes: tuple[tuple[re.Pattern[str], str], ...] = (),
    ) -> None:
        self.apps: Final = apps
        self.suffix_index: Final[Mapping[str, str]] = {} if suffix_index is None else suffix_index
        self.regexes: Final = regexes

    def __iter__(self) -> Iterator[AppSignature]:
        return iter(self.apps.values())

    def __len__(self) -> int:
        return len(self.apps)


#: The keys a signature file may have: the constructor's fields but the two it fills in
#: itself (the operator ranges' sources come from the ranges' own entries).
_KEYS = frozenset(AppSignature.FIELDS) - {"operator_sources", "source"}
_OPERATOR_KEYS = {"range", "source"}
_PATTERN_KEYS = {"prefix", "suffix", "lengths", "min_len", "ports", "what"}
# Checked only when a file is parsed (re caches the compiled form): not at import.
_ID = r"^[a-z0-9][a-z0-9-]*$"
_DOMAIN = r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9-]+$"
#: The directory of the bundled signature files.
BUNDLED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "signatures")


def bundled_paths() -> list[Path]:
    """The signature files shipped in this package, sorted by name."""
    # A plain path, not importlib.resources: the files are always on disk (the paths are
    # returned), and importlib.resources costs ~15 ms of start-up (zipfile, tempfile).
    from pathlib import Path

    return [Path(BUNDLED_DIR, name) for name in bundled_names(BUNDLED_DIR)]


def bundled_names(root: str) -> list[str]:
    return sorted(n for n in os.listdir(root) if n.endswith(".toml"))


def load_signatures(paths: Iterable[str | os.PathLike[str]] | None = None) -> SignatureSet:
    """Load and check signature files (``None``: the bundled set).

    The bundled set loads from its cache when there is a current one (see
    :func:`wxnet.classify.sigcache.load_bundled`); files given here are always parsed and checked.

    Raises:
        SignatureError: a file cannot be read or parsed, a field is missing, unknown or
            of the wrong type, two files share an id or a domain, or a reference
            (dependency, trusted range set) names no loaded signature.
    """
    if paths is None:
        from wxnet.classify.sigcache import load_bundled

        return load_bundled()
    texts: list[tuple[str, str]] = []
    for p in paths:
        from pathlib import Path

        path = Path(p)
        try:
            texts.append((str(path), path.read_text(encoding="utf-8")))
        except OSError as exc:
            raise SignatureError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise SignatureError(f"{path}: not valid TOML: {exc}") from None
    return parse(texts)


def parse(texts: Iterable[tuple[str, str]]) -> SignatureSet:
    """Parse and check (file name, TOML text) pairs, in order."""
    import tomllib  # here: the bundled set's cache needs no TOML parser (~10 ms to import)

    apps: dict[str, AppSignature] = {}
    for where, text in texts:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SignatureError(f"{where}: not valid TOML: {exc}") from None
        sig = _build(where, raw)
        if sig.id in apps:
            raise SignatureError(
                f"{where}: id {sig.id!r} is already defined in {apps[sig.id].source}"
            )
        apps[sig.id] = sig
    return index(apps)


def index(apps: dict[str, AppSignature]) -> SignatureSet:
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


def _build(where: str, raw: dict[str, Any]) -> AppSignature:
    unknown = set(raw) - _KEYS
    if unknown:
        raise SignatureError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    ident = _str(raw, "id", where)
    if not re.match(_ID, ident):
        raise SignatureError(f"{where}: id {ident!r} must be lower-case letters, digits, '-'")
    domains = tuple(d.lower().rstrip(".") for d in _strs(raw, "domains", where))
    for d in domains:
        if not re.match(_DOMAIN, d):
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
