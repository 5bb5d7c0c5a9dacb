"""How client commands end, in a real ``wxnet`` process: Ctrl-C on ``listen`` is the
way to stop it (exit 0, no error), and a closed output ends any command quietly."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

from tests.client.conftest import WAIT, ServerThread
from tests.client.test_cli import login


def spawn_listen(profile: Path, stdout: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "wxnet", "listen", "--profile", str(profile), "--json"],
        stdout=stdout,
        stderr=subprocess.PIPE,
    )


def first_line(fd: int) -> bytes:
    """One line from ``fd``, waiting at most WAIT seconds for it."""
    got = b""
    while not got.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], WAIT)
        assert ready, f"no output within {WAIT} s: {got!r}"
        chunk = os.read(fd, 1)
        assert chunk, f"output ended early: {got!r}"
        got += chunk
    return got


def test_ctrl_c_stops_listen_without_an_error(server_thread: ServerThread, tmp_path: Path) -> None:
    prof = tmp_path / "b"
    login(server_thread, prof, "bob")
    proc = spawn_listen(prof, subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert first_line(proc.stdout.fileno()).startswith(b"{")  # it runs: a link event
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=WAIT * 2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert b"interrupted" not in err and b"Traceback" not in err, err


def test_listen_into_a_closed_pipe_ends_quietly(
    server_thread: ServerThread, tmp_path: Path
) -> None:
    # `wxnet listen --json | head -1` once head has gone: the reading end is closed.
    prof = tmp_path / "b"
    login(server_thread, prof, "bob")
    rd, wr = os.pipe()
    os.close(rd)
    proc = spawn_listen(prof, wr)
    os.close(wr)
    _, err = proc.communicate(timeout=WAIT * 2)
    assert proc.returncode == 141, err
    assert err == b"", err
