"""The client's configuration, saved in the profile at login (``ClientConfig``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from wxnet.client.addresses import Address, AddressSource
from wxnet.client.backoff import DEFAULT_LADDER

__all__ = ["CONFIG_KEY", "ClientConfig", "parse_server_url"]

#: The profile key the config is saved under.
CONFIG_KEY = "config"


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Where the service is and how to behave. Saved in the profile at login."""

    #: The short-link base for simple set-ups (``http://host:port``); the long-link
    #: addresses then come from newgetdns.
    server_url: str = ""
    long_name: str = "long.wxnet.local"
    short_name: str = "short.wxnet.local"
    dns_name: str = "dns.wxnet.local"
    long_ports: tuple[int, ...] = (8080,)
    short_ports: tuple[int, ...] = (8000,)
    #: QQ's 14000 (S14): tried only after every other long-link address.
    extra_long_port: int | None = None
    builtin_long: tuple[tuple[str, int], ...] = ()
    builtin_short: tuple[tuple[str, int], ...] = ()
    #: DNS servers to ask (ip, port); empty: the system resolver.
    nameservers: tuple[tuple[str, int], ...] = ()
    use_long_link: bool = True
    network_label: str = "default"
    request_timeout: float = 15.0
    connect_timeout: float = 10.0
    stagger: float = 2.5
    poll_timeout_ms: int = 25_000
    image_chunk: int = 64 * 1024
    parallel_chunks: int = 4
    voice_chunk: int = 1500
    send_attempts: int = 3
    send_delays: tuple[float, ...] = (1.0, 3.0)
    reconnect_ladder: tuple[float, ...] = DEFAULT_LADDER
    device_name: str = "wxnet"
    #: A fixed noop interval in seconds (Mars ``longlink_noop_interval``); 0: smart.
    noop_interval: float = 0.0
    noop_timeout: float = 8.0
    dns_timeout: float = 2.0
    #: Bytes of pushes (cmd 122) held while a sync of the client's own is under way,
    #: applied when it ends; past it they are dropped and the sync goes on once more.
    push_hold_bytes: int = 256 * 1024

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ClientConfig:
        known = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {}
        for k, v in raw.items():
            if k not in known:
                continue
            if isinstance(v, list):
                v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
            kw[k] = v
        return cls(**kw)

    def replace(self, **changes: Any) -> ClientConfig:
        raw = self.to_json()
        raw.update(changes)
        return ClientConfig.from_json(raw)


def parse_server_url(url: str) -> Address:
    """``http://HOST[:PORT]`` -> the short-link address; raises ValueError."""
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"not a valid URL: {url!r}") from None
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"the server URL must be http://HOST[:PORT], got {url!r}")
    return Address(parts.hostname, port, AddressSource.DNS)
