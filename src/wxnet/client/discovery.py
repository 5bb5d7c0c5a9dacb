"""Finding the server (S8-S10, S14): DNS names (or the server URL), the newgetdns list
cached in the profile with its TTL, then the built-in addresses; every list ordered by
the :class:`~wxnet.client.addresses.AddressBook` (banned addresses last).

DNS failures are remembered, never raised: the cache and the built-ins cover them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from wxnet.client.addresses import Address, AddressBook
from wxnet.client.config import ClientConfig, parse_server_url
from wxnet.client.errors import TransportError
from wxnet.client.newdns import (
    CachedDns,
    NewDnsError,
    long_candidates,
    parse_newdns,
    short_candidates,
)
from wxnet.client.resolver import DnsFailure, Resolver
from wxnet.client.shortlink import ShortLink
from wxnet.client.store import ProfileStore
from wxnet.clock import Clock

__all__ = ["REFRESH_EVERY", "Discovery"]

#: While DNS fails, look the names up again at most this often (seconds).
REFRESH_EVERY = 30.0
#: Fetch newgetdns at most this often while the cached list is stale (seconds).
NEWDNS_EVERY = 30.0
NEWDNS_KEY = "newdns"


class Discovery:
    """The addresses to try, long and short. ``note_error`` hears each failure."""

    def __init__(
        self,
        config: ClientConfig,
        store: ProfileStore,
        resolver: Resolver,
        short: ShortLink,
        clock: Clock,
        note_error: Callable[[str], None],
    ) -> None:
        self.config = config
        self.store = store
        self.resolver = resolver
        self.short = short
        self.clock = clock
        self.note_error = note_error
        self.book = AddressBook()
        self.answers: dict[str, list[str]] = {}
        self.dns_ok = True
        self.last_refresh = -1e9
        self._last_newdns_try = -1e9

    def url_address(self) -> Address | None:
        return parse_server_url(self.config.server_url) if self.config.server_url else None

    def cached_dns(self) -> CachedDns | None:
        raw = self.store.get_json(NEWDNS_KEY)
        if not isinstance(raw, dict):
            return None
        try:
            return CachedDns(parse_newdns(str(raw["xml"])), float(raw["fetched_at"]))
        except (NewDnsError, KeyError, ValueError):
            return None

    def stale(self) -> bool:
        """DNS failed last time and it is time to ask again."""
        return not self.dns_ok and self.clock.monotonic() - self.last_refresh > REFRESH_EVERY

    async def refresh(self) -> None:
        """Resolve the names (S8), then fetch newgetdns if the cache is stale (S10)."""
        cfg = self.config
        url = self.url_address()
        names = [url.host] if url is not None else [cfg.long_name, cfg.short_name, cfg.dns_name]
        self.last_refresh = self.clock.monotonic()
        unique = list(dict.fromkeys(names))
        results = await asyncio.gather(
            *(self.resolver.resolve(n) for n in unique), return_exceptions=True
        )
        answers: dict[str, list[str]] = {}
        ok = True
        for name, res in zip(unique, results, strict=True):
            if isinstance(res, DnsFailure):
                ok = False
                self.note_error(str(res))
            elif isinstance(res, BaseException):
                raise res
            else:
                answers[name] = res
        self.answers = answers
        self.dns_ok = ok
        cached = self.cached_dns()
        stale = cached is None or not cached.fresh(self.clock.wall())
        if stale and self.clock.monotonic() - self._last_newdns_try > NEWDNS_EVERY:
            self._last_newdns_try = self.clock.monotonic()
            await self._fetch_newdns()

    async def _fetch_newdns(self) -> None:
        cfg = self.config
        url = self.url_address()
        if url is not None:
            sources = [Address(ip, url.port) for ip in self.answers.get(url.host, [])]
        else:
            sources = [
                Address(ip, p) for ip in self.answers.get(cfg.dns_name, []) for p in cfg.short_ports
            ] + self.short_addresses()
        for addr in self.book.order(sources, self.clock.monotonic()):
            try:
                xml = await self.short.get_newdns(addr, min(5.0, cfg.request_timeout))
                parse_newdns(xml)
            except (TransportError, NewDnsError) as exc:
                self.note_error(str(exc))
                continue
            self.store.put_json(
                NEWDNS_KEY,
                {"xml": xml.decode("utf-8", "replace"), "fetched_at": self.clock.wall()},
            )
            return

    def long_addresses(self, short_failing: bool = False) -> list[Address]:
        cfg = self.config
        got = long_candidates(
            cfg.long_name,
            cfg.long_ports,
            self.answers,
            self.cached_dns(),
            self.clock.wall(),
            cfg.builtin_long,
            # S14: the extra port only when both the usual long link and the short link
            # fail; while HTTP works the client stays there and keeps trying 8080.
            cfg.extra_long_port if short_failing else None,
        )
        return self.book.order(got, self.clock.monotonic())

    def short_addresses(self) -> list[Address]:
        cfg = self.config
        url = self.url_address()
        first: list[Address] = []
        if url is not None:
            first = [Address(ip, url.port) for ip in self.answers.get(url.host, [])]
        got = short_candidates(
            cfg.short_name,
            cfg.short_ports,
            self.answers,
            self.cached_dns(),
            self.clock.wall(),
            cfg.builtin_short,
        )
        return self.book.order(first + got, self.clock.monotonic())
