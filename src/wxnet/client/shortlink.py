"""The short link: one HTTP POST per request to ``/cgi-bin/micromsg-bin/<name>``
(S12; Mars's short-link shape: ``Connection: close``, one request per connection), and
the GET of newgetdns. Thin aiohttp adapter."""

from __future__ import annotations

import aiohttp

from wxnet.client.addresses import Address
from wxnet.client.errors import TransportError

__all__ = ["CGI_PATH", "ShortLink"]

CGI_PATH = "/cgi-bin/micromsg-bin/"
HEADERS = {
    "Accept": "*/*",
    "User-Agent": "MicroMessenger Client (wxnet)",
    "Cache-Control": "no-cache",
    "Content-Type": "application/octet-stream",
}


class ShortLink:
    """POSTs raw protobuf bodies; one TCP connection per request (``Connection: close``)."""

    def __init__(self, connect_timeout: float = 10.0) -> None:
        self.connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True), trust_env=False
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @staticmethod
    def url(addr: Address, path: str) -> str:
        return f"http://{addr}{path}"

    async def post(self, addr: Address, name: str, body: bytes, timeout: float) -> bytes:
        """Raises TransportError on any failure to get a 200 answer."""
        t = aiohttp.ClientTimeout(total=timeout, connect=min(self.connect_timeout, timeout))
        try:
            async with self._http().post(
                self.url(addr, CGI_PATH + name), data=body, headers=HEADERS, timeout=t
            ) as resp:
                data = await resp.read()
                if resp.status != 200:
                    text = data[:200].decode("utf-8", "replace").strip()
                    raise TransportError(f"{name}: HTTP {resp.status} from {addr}: {text}")
                return data
        except (aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"{name}: {addr}: {str(exc) or type(exc).__name__}") from None
        except TimeoutError:
            raise TransportError(f"{name}: {addr}: no answer within {timeout:g} s") from None

    async def get_newdns(self, addr: Address, timeout: float) -> bytes:
        t = aiohttp.ClientTimeout(total=timeout)
        try:
            async with self._http().get(
                self.url(addr, CGI_PATH + "newgetdns"),
                params={"uin": "0", "scene": "0"},
                timeout=t,
            ) as resp:
                data = await resp.read()
                if resp.status != 200:
                    raise TransportError(f"newgetdns: HTTP {resp.status} from {addr}")
                return data
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"newgetdns: {addr}: {str(exc) or type(exc).__name__}") from None
