"""Server configuration: defaults, a TOML file, then command-line flags (highest wins).

Example ``wxnet.toml``::

    [server]
    host = "127.0.0.1"        # loopback; "0.0.0.0" (or "::") for a real deployment
    long_port = 8080          # the long link (S12)
    http_port = 8000          # short link, newgetdns, web API (80 in production)
    data = "./var"
    idle_timeout = 660        # close silent long links (> the longest heartbeat, 580 s)
    tls_cert = ""             # set both to serve the long link over TLS (S21)
    tls_key = ""
    max_links_per_account = 20
    push_max_bytes = 4096     # items up to this size go in the push itself (cmd 122)
    max_request_bytes = 1048576
    synccheck_max_wait = 25.0
    log_level = "info"
    workers = 1               # >1: that many processes on the same ports (SO_REUSEPORT);
                              # needs [store] kind = "postgres" and [bus] kind = "redis"

    [sync]
    durability = "FULL"       # or "NORMAL": survives a killed process, not a power cut
    sync_window_items = 100
    max_image_bytes = 10485760

    [dns]                      # what newgetdns advertises (defaults: where we listen)
    long_name = "long.wxnet.local"
    short_name = "short.wxnet.local"
    long_addresses = []
    short_addresses = []
    long_ports = []
    short_ports = []
    builtin_addresses = []
    ttl = 600

    [store]                    # where accounts, sessions and logs live
    kind = "sqlite"            # or "postgres" (several processes and nodes share it)
    dsn = ""                   # postgres: "postgresql://user:password@host:5432/db"
    pool_size = 10             # postgres: connections per process
    timeout = 10.0             # postgres: seconds to connect / per statement (x3)

    [bus]                      # how processes tell each other of new items
    kind = "local"             # or "redis" (needed by several processes or nodes)
    url = ""                   # redis: "redis://host:6379/0"
    shards = 1024              # redis: channels the accounts are spread over
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from wxnet.server.limits import TrustedProxies
from wxnet.server.web.config import WebConfig
from wxnet.sync.engine import EngineConfig

__all__ = [
    "BusConfig",
    "ConfigError",
    "DnsConfig",
    "ServerConfig",
    "StoreConfig",
    "load_config",
    "redact",
    "store_description",
]

_SECTIONS = ("server", "sync", "dns", "web", "store", "bus")


class ConfigError(ValueError):
    """The configuration file or a flag is invalid; the message says which key."""


@dataclass(frozen=True, slots=True)
class DnsConfig:
    long_name: str = "long.wxnet.local"
    short_name: str = "short.wxnet.local"
    long_addresses: tuple[str, ...] = ()
    short_addresses: tuple[str, ...] = ()
    long_ports: tuple[int, ...] = ()
    short_ports: tuple[int, ...] = ()
    builtin_addresses: tuple[str, ...] = ()
    ttl: int = 600


@dataclass(frozen=True, slots=True)
class StoreConfig:
    kind: str = "sqlite"
    dsn: str = ""
    pool_size: int = 10
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class BusConfig:
    kind: str = "local"
    url: str = ""
    shards: int = 1024


def redact(url: str) -> str:
    """``url`` without the password of its user part (for logs and banners)."""
    head, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    user, _, host = rest.rpartition("@")
    if ":" in user:
        user = user.split(":", 1)[0] + ":***"
    return f"{head}://{user}@{host}"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    long_port: int = 8080
    http_port: int = 8000
    extra_long_ports: tuple[int, ...] = ()
    data: Path = Path("var")
    idle_timeout: float = 660.0
    tls_cert: str = ""
    tls_key: str = ""
    max_links_per_account: int = 20
    push_max_bytes: int = 4096
    max_pending_per_link: int = 64
    max_request_bytes: int = 1 << 20
    synccheck_max_wait: float = 25.0
    identify_timeout: float = 30.0
    max_connections: int = 10000
    max_connections_per_address: int = 1000
    http_header_timeout: float = 10.0
    http_body_timeout: float = 60.0
    http_keepalive_timeout: float = 75.0
    max_polls_per_session: int = 2
    max_polls_per_account: int = 20
    trusted_proxies: tuple[str, ...] = ()
    max_field_chars: int = 1024
    max_list_items: int = 1000
    #: process set-up of ``wxnet serve`` (server/probes.py): gc.set_threshold (empty:
    #: Python's), gc.freeze() once listening, sys.setswitchinterval (seconds)
    gc_thresholds: tuple[int, ...] = (5000, 10, 10)
    gc_freeze: bool = True
    switch_interval: float = 0.001
    #: how often the event loop's lag is sampled (wxnet_loop_lag_seconds; 0: off)
    loop_lag_interval: float = 0.1
    log_level: str = "info"
    workers: int = 1
    sync: EngineConfig = field(default_factory=EngineConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    bus: BusConfig = field(default_factory=BusConfig)
    web: WebConfig = field(default_factory=WebConfig)


def _coerce(cls: Any, section: str, raw: dict[str, Any], base: Any) -> Any:
    known = {f.name: f for f in fields(cls)}
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        f = known.get(key)
        if f is None or f.name in _SECTIONS:
            raise ConfigError(f"[{section}] has no setting {key!r}")
        current = getattr(base, key)
        try:
            if isinstance(current, bool):
                ok = isinstance(value, bool)
            elif isinstance(current, int | float) and not isinstance(current, bool):
                ok = isinstance(value, int | float) and not isinstance(value, bool)
                if ok and isinstance(current, int) and not isinstance(value, int):
                    ok = False
            elif isinstance(current, tuple):
                ok = isinstance(value, list)
                value = tuple(value) if ok else value
            elif isinstance(current, Path):
                ok = isinstance(value, str)
                value = Path(value) if ok else value
            else:
                ok = isinstance(value, type(current))
        except TypeError:
            ok = False
        if not ok:
            raise ConfigError(f"[{section}] {key} = {value!r}: expected {type(current).__name__}")
        changes[key] = value
    return dataclasses.replace(base, **changes)


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> ServerConfig:
    """Defaults, then ``path`` (TOML) if given, then ``overrides`` (flags; None = unset).

    Raises:
        ConfigError: unreadable file, bad TOML (with line), unknown key or wrong type.
    """
    cfg = ServerConfig()
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        for section in data:
            if section not in _SECTIONS:
                raise ConfigError(f"{path}: unknown section [{section}] ({', '.join(_SECTIONS)})")
        cfg = _coerce(ServerConfig, "server", data.get("server", {}), cfg)
        cfg = dataclasses.replace(
            cfg,
            sync=_coerce(EngineConfig, "sync", data.get("sync", {}), cfg.sync),
            dns=_coerce(DnsConfig, "dns", data.get("dns", {}), cfg.dns),
            store=_coerce(StoreConfig, "store", data.get("store", {}), cfg.store),
            bus=_coerce(BusConfig, "bus", data.get("bus", {}), cfg.bus),
            web=_coerce(WebConfig, "web", data.get("web", {}), cfg.web),
        )
    if overrides:
        cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    _validate(cfg)
    return cfg


def _validate_limits(cfg: ServerConfig) -> None:
    """``[server]``: deadlines, caps, trusted proxies."""
    for name in (
        "idle_timeout",
        "synccheck_max_wait",
        "identify_timeout",
        "http_header_timeout",
        "http_body_timeout",
        "http_keepalive_timeout",
    ):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"{name} must be positive")
    for name in (
        "max_connections",
        "max_connections_per_address",
        "max_polls_per_session",
        "max_polls_per_account",
        "max_field_chars",
        "max_list_items",
    ):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be at least 1")
    if len(cfg.gc_thresholds) > 3 or any(
        not isinstance(t, int) or isinstance(t, bool) or t < 0 for t in cfg.gc_thresholds
    ):
        raise ConfigError("gc_thresholds: at most 3 whole numbers >= 0 (gen 0, 1, 2)")
    if not 0.00001 <= cfg.switch_interval <= 1.0:
        raise ConfigError("switch_interval must be 0.00001..1.0 (seconds)")
    if not 0 <= cfg.loop_lag_interval <= 60:
        raise ConfigError("loop_lag_interval must be 0..60 (seconds; 0: off)")
    try:
        TrustedProxies(cfg.trusted_proxies)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"trusted_proxies: {exc}") from None


def _validate_sync(cfg: ServerConfig) -> None:
    """``[sync]``: durability, contacts, the integrity check, the login caps."""
    if cfg.sync.durability not in ("FULL", "NORMAL"):
        raise ConfigError('[sync] durability must be "FULL" or "NORMAL"')
    if cfg.sync.contacts not in ("open", "request"):
        raise ConfigError('[sync] contacts must be "open" or "request"')
    if cfg.sync.integrity_check not in ("quick", "full", "off"):
        raise ConfigError('[sync] integrity_check must be "quick", "full" or "off"')
    for name in (
        "login_workers",
        "max_sessions_per_account",
        "login_failures_per_address",
        "cache_entries",
        "active_accounts",
    ):
        if getattr(cfg.sync, name) < 1:
            raise ConfigError(f"[sync] {name} must be at least 1")
    if cfg.sync.page_cache_kib < 64:
        raise ConfigError("[sync] page_cache_kib must be at least 64 (KiB)")
    if not 0 <= cfg.sync.checkpoint_interval <= 3600:
        raise ConfigError("[sync] checkpoint_interval must be 0..3600 (seconds; 0: inline)")


def _validate_uploads(cfg: ServerConfig) -> None:
    """``[web]`` values and the upload quotas of ``[sync]`` and ``[web]``."""
    for f in fields(WebConfig):
        value = getattr(cfg.web, f.name)
        if isinstance(value, int | float) and value <= 0:
            raise ConfigError(f"[web] {f.name} must be positive")
    for name in ("uploads_per_account", "upload_bytes_per_account", "upload_ttl"):
        if getattr(cfg.sync, name) <= 0:
            raise ConfigError(f"[sync] {name} must be positive")
    # Files and videos are left out: a quota below max_file_bytes / max_video_bytes
    # (set before they existed) limits them instead, and the server still starts.
    biggest = max(cfg.sync.max_image_bytes, cfg.sync.max_voice_bytes)
    if cfg.sync.upload_bytes_per_account < biggest:
        raise ConfigError(
            f"[sync] upload_bytes_per_account must hold one upload of {biggest} bytes"
        )
    if cfg.web.upload_bytes_per_account < cfg.web.max_upload:
        raise ConfigError("[web] upload_bytes_per_account must hold one upload of max_upload")
    if cfg.sync.min_free_disk_bytes < 0:
        raise ConfigError("[sync] min_free_disk_bytes must not be negative")


def _validate(cfg: ServerConfig) -> None:
    for name in ("long_port", "http_port"):
        port = getattr(cfg, name)
        if not 0 <= port <= 65535:
            raise ConfigError(f"{name} {port} is not a port number")
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise ConfigError("tls_cert and tls_key go together")
    _validate_sync(cfg)
    _validate_limits(cfg)
    _validate_uploads(cfg)
    if cfg.store.kind not in ("sqlite", "postgres"):
        raise ConfigError('[store] kind must be "sqlite" or "postgres"')
    if cfg.store.kind == "postgres" and not cfg.store.dsn.startswith(
        ("postgres://", "postgresql://")
    ):
        raise ConfigError('[store] kind = "postgres" needs dsn = "postgresql://user@host:port/db"')
    if cfg.store.pool_size < 1 or cfg.store.timeout <= 0:
        raise ConfigError("[store] pool_size and timeout must be positive")
    if cfg.bus.kind not in ("local", "redis"):
        raise ConfigError('[bus] kind must be "local" or "redis"')
    if cfg.bus.kind == "redis" and not cfg.bus.url.startswith(("redis://", "unix://")):
        raise ConfigError('[bus] kind = "redis" needs url = "redis://host:6379/0"')
    if not 1 <= cfg.bus.shards <= 1 << 20:
        raise ConfigError("[bus] shards must be 1..1048576")
    if not 1 <= cfg.workers <= 256:
        raise ConfigError("workers must be 1..256")
    if cfg.workers > 1 and (cfg.store.kind != "postgres" or cfg.bus.kind != "redis"):
        missing = [
            what
            for what, ok in (
                ('the PostgreSQL store ([store] kind = "postgres", dsn = ...)',
                 cfg.store.kind == "postgres"),
                ('the Redis bus ([bus] kind = "redis", url = ...)', cfg.bus.kind == "redis"),
            )
            if not ok
        ]  # fmt: skip
        raise ConfigError(
            f"workers = {cfg.workers} needs {' and '.join(missing)}: the worker processes"
            " share accounts, sessions and logs through the store and tell each other of"
            " new messages over the bus (docs/scaling.md)"
        )


def store_description(config: ServerConfig) -> str:
    """Where the store is, for banners and errors (a PostgreSQL DSN without its password)."""
    if config.store.kind == "postgres":
        return redact(config.store.dsn)
    return str(Path(config.data) / "wxnet.db")
