"""A real ``wxnet serve`` process for attack tests: started with a TOML config, ports
read from its banner, stderr (JSON log lines) kept in a file."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import aiohttp

BANNER = re.compile(r"long link 127\.0\.0\.1:(\d+).*HTTP http://127\.0\.0\.1:(\d+)/")


def wxnet(*args: str) -> list[str]:
    return [sys.executable, "-m", "wxnet", *args]


class RealServer:
    def __init__(self, data: Path, config: str) -> None:
        self.data = data
        self.config_path = data.parent / "wxnet.toml"
        self.config_path.write_text(config)
        self.log_path = data.parent / "server.log"
        self.proc: subprocess.Popen[str] | None = None
        self.long_port = 0
        self.http_port = 0

    def start(self) -> None:
        log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            wxnet(
                "serve",
                "--config",
                str(self.config_path),
                "--data",
                str(self.data),
                "--host",
                "127.0.0.1",
                "--long-port",
                "0",
                "--http-port",
                "0",
            ),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        log.close()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the banner, or EOF if it failed to start
        m = BANNER.search(line)
        assert m, f"server did not start: {line!r}\n{self.log_path.read_text()[-2000:]}"
        self.long_port, self.http_port = int(m.group(1)), int(m.group(2))

    def user_add(self, *names: str, password: str = "secret1") -> None:
        """Add accounts (creating the store first if the server has not run yet)."""
        subprocess.run(
            wxnet("store", "init", "--data", str(self.data)), check=True, capture_output=True
        )
        for name in names:
            subprocess.run(
                wxnet("user", "add", name, "--password", password, "--data", str(self.data)),
                check=True,
                capture_output=True,
            )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                assert self.proc.wait(30) == 0, "unclean shutdown"
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def log(self) -> str:
        return self.log_path.read_text()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def metric(self, name: str, labels: str = "") -> float:
        """One sample of /metrics (0 when absent), fetched from a quiet address."""
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.9", 0))
        async with (
            aiohttp.ClientSession(connector=connector) as s,
            s.get(f"{self.url}/metrics", timeout=aiohttp.ClientTimeout(total=10)) as r,
        ):
            text = await r.text()
        want = f"{name}{{{labels}}}" if labels else name
        for line in text.splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        return 0.0


async def wait_closed(reader: asyncio.StreamReader, timeout: float = 10.0) -> bytes:
    """Read until the server closes the connection (bounded); returns what it sent."""
    got = b""
    async with asyncio.timeout(timeout):
        try:
            while chunk := await reader.read(65536):
                got += chunk
        except ConnectionError:  # closed with a reset (abort)
            pass
    return got
