"""The systemd units in packaging/: valid for systemd (``systemd-analyze verify``),
hardened (``systemd-analyze security --offline``), and ``Type=notify`` really works:
the real ``wxnet serve`` under a notify-socket harness says READY=1 once it serves."""

from __future__ import annotations

import configparser
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from wxnet import sdnotify

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "packaging").glob("*.service"))
WXNET = Path(sys.executable).parent / "wxnet"
WAIT = 30.0  # bound on every wait for a real event (a loaded machine starts slowly)
#: The most exposure `systemd-analyze security` may score each unit (0 safe .. 10 open).
MAX_EXPOSURE = {"wxnet-serve.service": 2.0, "wxnet-gate.service": 3.5}

need_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment, method-assign]
    cp.read(ROOT / "packaging" / name)
    return cp


def local_copy(path: Path, tmp_path: Path) -> Path:
    """The unit with this checkout's wxnet in place of /usr/local/bin/wxnet (verify
    checks that every command exists)."""
    out = tmp_path / path.name
    out.write_text(path.read_text().replace("/usr/local/bin/wxnet", str(WXNET)))
    return out


def test_both_units_are_shipped() -> None:
    assert [u.name for u in UNITS] == ["wxnet-gate.service", "wxnet-serve.service"]


@need_systemd_analyze
@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_systemd_accepts_the_unit(path: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "verify", str(local_copy(path, tmp_path))],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    # verify exits 0 on unknown keys too; a clean unit prints nothing at all.
    assert done.returncode == 0 and done.stderr == "" and done.stdout == "", done.stderr


@need_systemd_analyze
@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_the_unit_is_hardened(path: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(local_copy(path, tmp_path))],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout + done.stderr)
    assert m, done.stdout + done.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE[path.name], done.stdout


def test_what_the_units_promise() -> None:
    serve = unit("wxnet-serve.service")["Service"]
    assert serve["Type"] == "notify" and serve["DynamicUser"] == "yes"
    assert serve["StateDirectory"] == "wxnet" and serve["ProtectSystem"] == "strict"
    assert serve["CapabilityBoundingSet"] == ""
    assert "serve --check-config" in serve["ExecStartPre"]
    assert "--data /var/lib/wxnet" in serve["ExecStart"]
    gate = unit("wxnet-gate.service")["Service"]
    assert gate["Type"] == "notify" and gate["ProtectSystem"] == "strict"
    assert set(gate["CapabilityBoundingSet"].split()) == {"CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"}
    assert gate["ExecStartPre"].endswith("gate check /etc/wxnet/gate.toml")
    assert gate["ExecStart"].endswith("gate run /etc/wxnet/gate.toml")


class NotifySocket:
    """What systemd does for Type=notify: a datagram socket named in NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def receive(self, timeout: float = WAIT) -> dict[str, str]:
        ready, _, _ = select.select([self.sock], [], [], timeout)
        assert ready, f"no notification within {timeout} s"
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.splitlines())

    def close(self) -> None:
        self.sock.close()


def test_notify_sends_to_path_and_abstract_sockets(tmp_path: Path) -> None:
    ns = NotifySocket(tmp_path / "notify")
    try:
        assert sdnotify.notify("READY=1", "STATUS=x", environ={"NOTIFY_SOCKET": str(ns.path)})
        assert ns.receive() == {"READY": "1", "STATUS": "x"}
    finally:
        ns.close()
    name = f"wxnet-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as abstract:
        abstract.bind("\0" + name)
        assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert abstract.recv(100) == b"READY=1"
    assert not sdnotify.notify("READY=1", environ={})  # not under systemd: nothing
    gone = {"NOTIFY_SOCKET": str(tmp_path / "nobody")}
    assert not sdnotify.notify("READY=1", environ=gone)  # unreachable: logged, no crash


def test_serve_says_ready_once_it_serves_and_stopping_on_sigterm(tmp_path: Path) -> None:
    ns = NotifySocket(tmp_path / "notify")
    env = {**os.environ, "NOTIFY_SOCKET": str(ns.path)}
    data = tmp_path / "var"
    subprocess.run([str(WXNET), "serve", "--check-config", "--data", str(data)],
                   check=True, capture_output=True, env=env, timeout=60)  # fmt: skip
    proc = subprocess.Popen(
        [str(WXNET), "serve", "--data", str(data), "--long-port", "0", "--http-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    try:
        msg = ns.receive()
        assert msg["READY"] == "1", msg
        m = re.search(r"HTTP (\d+)", msg["STATUS"])
        assert m, msg
        # Ready means serving: the first request after READY=1 is answered.
        with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/healthz", timeout=WAIT) as r:
            assert r.status == 200
        proc.send_signal(signal.SIGTERM)
        assert ns.receive() == {"STOPPING": "1"}
        _, err = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        ns.close()


def test_logs_carry_the_syslog_priority_only_on_the_journal(tmp_path: Path) -> None:
    import logging

    from wxnet.server.logs import JsonFormatter, on_journal

    with (tmp_path / "stream").open("w") as f:
        st = os.fstat(f.fileno())
        assert on_journal(f, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not on_journal(f, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not on_journal(f, {})
    rec = logging.LogRecord("wxnet.x", logging.WARNING, __file__, 1, "careful", None, None)
    assert JsonFormatter(journal=True).format(rec).startswith('<4>{"time"')
    assert JsonFormatter().format(rec).startswith('{"time"')
    rec.levelno = logging.ERROR
    assert JsonFormatter(journal=True).format(rec).startswith("<3>")
