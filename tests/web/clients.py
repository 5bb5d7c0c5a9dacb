"""Real third-party web clients, installed once into ``.cache/webclients`` and driven in a
subprocess by the harness scripts next to this file (JSON lines both ways)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "webclients"
HARNESS = Path(__file__).resolve().parent / "harness"

#: Exact versions: the web API is tested against these (docs/web.md).
PY_CLIENTS = {"itchat": "itchat==1.3.10", "itchat-uos": "itchat-uos==1.4.1"}
WECHAT4U = "wechat4u@0.7.14"


class ClientUnavailable(RuntimeError):
    """The client could not be installed (no registry access)."""


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise ClientUnavailable(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")


def python_client(name: str) -> Path:
    """The interpreter of a venv holding ``PY_CLIENTS[name]`` (created on first use)."""
    spec = PY_CLIENTS[name]
    venv = CACHE / spec.replace("==", "-")
    py = venv / "bin" / "python"
    ok = (
        py.exists()
        and subprocess.run([py, "-c", "import itchat"], capture_output=True).returncode == 0
    )
    if not ok:
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        _run([sys.executable, "-m", "venv", str(venv)])
        _run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", spec])
    return py


def wechat4u_dir() -> Path:
    """A directory whose node_modules holds ``WECHAT4U`` (installed on first use)."""
    d = CACHE / WECHAT4U.replace("@", "-")
    if not (d / "node_modules" / "wechat4u" / "package.json").exists():
        if shutil.which("npm") is None:
            raise ClientUnavailable("npm is not installed")
        d.mkdir(parents=True, exist_ok=True)
        (d / "package.json").write_text('{"name": "wxnet-webclients", "private": true}\n')
        _run(["npm", "install", "--no-audit", "--no-fund", "--silent", WECHAT4U], cwd=d)
    return d


class Harness:
    """One client process: ``expect`` events, ``send`` commands."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def start(
        cls, name: str, argv: list[str], cwd: Path, extra_env: dict[str, str] | None = None
    ) -> Harness:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("http_", "https_"))}
        env["NO_PROXY"] = "127.0.0.1"
        env.update(extra_env or {})
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )
        return cls(proc, name)

    async def expect(
        self,
        event: str,
        pred: Callable[[dict[str, Any]], bool] = lambda e: True,
        timeout: float = 30,
    ) -> dict[str, Any]:
        """The first event named ``event`` matching ``pred`` (seen before or arriving)."""
        for e in self.events:
            if e.get("event") == event and pred(e):
                self.events.remove(e)
                return e

        async def read() -> dict[str, Any]:
            assert self.proc.stdout is not None
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    err = b""
                    if self.proc.stderr is not None:
                        err = await self.proc.stderr.read()
                    raise AssertionError(
                        f"{self.name} exited before {event!r}; events {self.events}\n"
                        + err.decode(errors="replace")[-4000:]
                    )
                start = line.find(b'{"event"')  # itchat prints progress marks without a newline
                try:
                    e: dict[str, Any] = json.loads(line[start:]) if start >= 0 else {}
                except ValueError:
                    continue  # a library's own print
                if e.get("event") == event and pred(e):
                    return e
                self.events.append(e)

        try:
            return await asyncio.wait_for(read(), timeout)
        except TimeoutError:
            raise AssertionError(f"{self.name}: no {event!r} event; got {self.events}") from None

    async def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        await self.proc.stdin.drain()

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        with contextlib.suppress(ProcessLookupError):
            await self.proc.wait()
