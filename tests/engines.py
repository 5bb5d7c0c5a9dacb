"""Real PostgreSQL and Redis servers for the tests, from the Debian packages.

Each runs in a temporary directory on a random loopback port (PostgreSQL's socket too),
owned by the test session: started once, shared, stopped at the end. PostgreSQL refuses
to run as root, so as root its programs run as the ``postgres`` user (``runuser``).
Missing packages skip the tests that need them, except in CI (``CI`` set), where every
test must run: there a missing engine is a failure.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

__all__ = ["PostgresServer", "RedisServer", "engine_missing"]


def engine_missing(what: str) -> None:
    """Skip (or, in CI, fail) a test whose engine is not installed."""
    msg = f"{what} is not installed (make sysdeps installs it)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """A PostgreSQL cluster in a temp dir: ``initdb``, ``pg_ctl start/stop``."""

    def __init__(self) -> None:
        bindir = _pg_bin()
        if bindir is None:
            engine_missing("PostgreSQL (Debian package postgresql)")
        assert bindir is not None
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="wxnet-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, prog: str, *args: str) -> None:
        cmd = [*self._as, str(self.bindir / prog), *args]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=self.root, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"{prog} failed: {res.stderr.strip() or res.stdout.strip()}")

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c max_connections=200 -c shared_buffers=32MB"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-o", opts, "-w",
                  "-t", "60", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def dsn(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def psql(self, sql: str, db: str = "postgres") -> str:
        res = subprocess.run(
            [str(self.bindir.parent / "bin" / "psql"), "-XAtq", "-d", self.dsn(db), "-c", sql],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if res.returncode != 0:
            raise RuntimeError(f"psql: {res.stderr.strip()}")
        return res.stdout

    def new_database(self) -> str:
        """A fresh, empty place to store: a new schema, named in the DSN's
        ``search_path`` (a whole database per test costs a second; a schema, nothing)."""
        name = "t_" + secrets.token_hex(6)
        self.psql(f"CREATE SCHEMA {name}")
        return f"{self.dsn()}?search_path={name}"

    def close(self) -> None:
        try:
            self.stop("immediate")
        except RuntimeError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


class RedisServer:
    """``redis-server`` without persistence on a random loopback port."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            engine_missing("Redis (Debian package redis-server)")
        assert exe is not None
        self.exe = exe
        self.root = Path(tempfile.mkdtemp(prefix="wxnet-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        cmd = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(self.root), "--logfile", ""]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        for line in self.proc.stdout:  # bounded by redis itself exiting on failure
            if "Ready to accept connections" in line:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
        else:
            raise RuntimeError(f"redis-server exited ({self.proc.wait()})")
        self.proc.stdout.close()  # its further log lines go nowhere
        self.proc.stdout = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
