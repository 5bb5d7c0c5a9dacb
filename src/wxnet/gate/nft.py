"""Thin adapter over nftables: apply scripts atomically, fill sets.

A script runs as one kernel transaction: either every rule and element lands or none
does. Scripts go to ``libnftables`` in process (the library behind the ``nft``
command, loaded with ctypes: no process spawn, about a tenth of a millisecond for a
set addition) or, when the library is missing or another namespace is wanted, to
``nft -f -``. Set additions are remembered (address -> expiry) so a DNS answer that
repeats addresses already in a set costs nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import shutil
import subprocess
from collections.abc import Iterable

from wxnet.gate.ruleset import add_elements, delete_table

__all__ = ["Nft", "NftError", "nft_available"]


class NftError(RuntimeError):
    """``nft`` is missing or rejected a script (message holds its stderr)."""


class LibNftables:
    """ctypes binding to the four libnftables calls we need (see libnftables(3))."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            raise NftError(f"libnftables not available: {exc}") from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self._lib = lib
        self._ctx = lib.nft_ctx_new(0)
        if not self._ctx:
            raise NftError("nft_ctx_new failed")
        lib.nft_ctx_buffer_output(self._ctx)
        lib.nft_ctx_buffer_error(self._ctx)

    def run(self, script: str) -> None:
        """Run ``script`` as one transaction (blocking; netlink round trips only).

        Raises:
            NftError: the kernel or the parser refused it.
        """
        rc = self._lib.nft_run_cmd_from_buffer(self._ctx, script.encode())
        err = self._lib.nft_ctx_get_error_buffer(self._ctx) or b""
        if rc != 0:
            raise NftError(err.decode(errors="replace").strip() or f"libnftables error {rc}")


def nft_available() -> bool:
    return shutil.which("nft") is not None


def run_nft(script: str, *args: str) -> str:
    """Run ``nft [args] -f -`` with ``script`` on stdin (blocking).

    Raises:
        NftError: nft missing or the script failed.
    """
    exe = shutil.which("nft")
    if exe is None:
        raise NftError("the nft command is not installed (Debian package nftables)")
    proc = subprocess.run(
        [exe, *args, "-f", "-"], input=script, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise NftError(proc.stderr.strip() or f"nft exited with {proc.returncode}")
    return proc.stdout


class Nft:
    """Async access to one wxnet table.

    Args:
        table: the ``inet`` table name.
        refresh: re-add an element when less than this fraction of its timeout is left.
        netns: run ``nft`` inside this named network namespace (tests, benchmarks).
    """

    def __init__(self, table: str, refresh: float = 0.5, netns: str | None = None) -> None:
        self.table = table
        self.prefix = ("ip", "netns", "exec", netns) if netns else ()
        self.lib: LibNftables | None = None
        if netns is None:
            try:
                self.lib = LibNftables()
            except NftError:
                self.lib = None
        self.refresh = refresh
        self._known: dict[tuple[str, str], tuple[float, int]] = {}  # -> (expiry, timeout)
        self._lock = asyncio.Lock()
        self.adds = 0
        self.spawns = 0

    async def run(self, script: str) -> None:
        """Apply a script as one transaction.

        Raises:
            NftError: nft missing or the script failed.
        """
        if self.lib is not None:
            self.lib.run(script)
            return
        exe = shutil.which("nft")
        if exe is None:
            raise NftError("the nft command is not installed (Debian package nftables)")
        self.spawns += 1
        proc = await asyncio.create_subprocess_exec(
            *self.prefix,
            exe,
            "-f",
            "-",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate(script.encode())
        if proc.returncode != 0:
            raise NftError(err.decode(errors="replace").strip() or "nft failed")

    def _split(
        self, elements: Iterable[tuple[str, str, int]], now: float
    ) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, int]]]:
        fresh: list[tuple[str, str, int]] = []
        stale: list[tuple[str, str, int]] = []
        for app, addr, timeout in elements:
            known = self._known.get((app, addr))
            if known is None or known[0] <= now:
                fresh.append((app, addr, timeout))
            elif known[0] - now < self.refresh * timeout:
                stale.append((app, addr, timeout))
        return fresh, stale

    def needed(
        self, elements: Iterable[tuple[str, str, int]], now: float
    ) -> list[tuple[str, str, int]]:
        """The elements :meth:`add` would send to the kernel (the rest are in place)."""
        fresh, stale = self._split(elements, now)
        return fresh + stale

    async def add(self, elements: Iterable[tuple[str, str, int]], now: float) -> int:
        """Put ``(app or "pass", address, timeout)`` into the sets; returns how many were
        sent to the kernel (elements still fresh in the cache are skipped).

        An element already present keeps its old timeout in the kernel, so one close to
        expiry is deleted and re-added in the same transaction.

        Raises:
            NftError: the kernel refused the elements.
        """
        fresh, stale = self._split(elements, now)
        if not fresh and not stale:
            return 0
        async with self._lock:
            script = add_elements(self.table, fresh + stale)
            if stale:
                delete = add_elements(self.table, stale, verb="delete")
                try:
                    await self.run(delete + script)
                except NftError:
                    # An element we thought present had expired: add without deleting.
                    await self.run(script)
            else:
                await self.run(script)
        for app, addr, timeout in fresh + stale:
            self._known[(app, addr)] = (now + timeout, timeout)
        self.adds += len(fresh) + len(stale)
        if len(self._known) > 100_000:
            self._known = {k: v for k, v in self._known.items() if v[0] > now}
        return len(fresh) + len(stale)

    async def remove_table(self) -> None:
        await self.run(delete_table(self.table))
