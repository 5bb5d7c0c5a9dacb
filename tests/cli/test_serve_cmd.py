"""``wxnet serve``: loopback by default, a banner that says where it really listens and
prints commands that run, and ``--check-config``."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

from wxnet.cli.common import IO
from wxnet.cli.main import run
from wxnet.cli.serve_cmd import banner, command_path
from wxnet.server.config import ServerConfig, load_config
from wxnet.sync.schema import SCHEMA_VERSION


def test_the_default_is_this_machine_only() -> None:
    assert load_config(None).host == "127.0.0.1"


def test_the_banner_says_where_it_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [".venv/bin/wxnet", "serve"])
    monkeypatch.setenv("PATH", "/nonexistent")
    lines = banner(ServerConfig(data=Path("var")), (8080,), 8000)
    assert lines[0].startswith(
        "wxnet serving: long link 127.0.0.1:8080, HTTP http://127.0.0.1:8000/"
    )
    assert "every address" not in lines[0]
    assert lines[1] == "add a user: .venv/bin/wxnet user add NAME --password PW --data var"
    assert lines[2].endswith("login --server http://127.0.0.1:8000 --user NAME --password PW")
    wild = banner(ServerConfig(host="0.0.0.0"), (8080, 14000), 8000)
    assert "long link 0.0.0.0:8080, 14000" in wild[0] and "every address" in wild[0]
    assert "--server http://127.0.0.1:8000 " in wild[2]  # what works from this machine
    six = banner(ServerConfig(host="::"), (8080,), 8000)
    assert "long link [::]:8080" in six[0] and "--server http://[::1]:8000 " in six[2]


def test_the_command_path_is_one_that_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exe = tmp_path / "bin" / "wxnet"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert command_path(str(exe)) == str(exe)  # not on PATH: the path it was started by
    assert command_path("/usr/lib/python3/dist-packages/wxnet/__main__.py") == (
        f"{sys.executable} -m wxnet"
    )
    monkeypatch.setenv("PATH", str(exe.parent))
    assert command_path(str(exe)) == "wxnet"  # the shell finds this very file
    other = tmp_path / "other" / "wxnet"
    other.parent.mkdir()
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    assert command_path(str(other)) == str(other)  # PATH has a different wxnet


def test_check_config_changes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "var"
    out, err = io.StringIO(), io.StringIO()
    assert run(["serve", "--check-config", "--data", str(data)], IO(out, err)) == 0, err.getvalue()
    assert (
        "config ok: listen 127.0.0.1" in out.getvalue()
        and "new (created at start)" in out.getvalue()
    )
    assert not data.exists()
    assert run(["store", "init", "--data", str(data)], IO(out, err)) == 0
    out = io.StringIO()
    assert run(["serve", "--check-config", "--data", str(data)], IO(out, err)) == 0
    assert f"schema {SCHEMA_VERSION}" in out.getvalue()


def test_check_config_finds_what_would_stop_the_start(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate")
    err = io.StringIO()
    argv = ["serve", "--check-config", "--data", str(tmp_path / "d")]
    tls = ["--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "cert.pem")]
    assert run([*argv, *tls], IO(io.StringIO(), err)) == 1
    assert "TLS: cannot load" in err.getvalue()
    (tmp_path / "file").write_text("")
    err = io.StringIO()
    assert (
        run(
            ["serve", "--check-config", "--data", str(tmp_path / "file" / "d")],
            IO(io.StringIO(), err),
        )
        == 1
    )
    assert "is not a directory" in err.getvalue()
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        err = io.StringIO()
        assert (
            run(["serve", "--check-config", "--data", str(ro / "d")], IO(io.StringIO(), err)) == 1
        )
        assert "not writable" in err.getvalue()
    err = io.StringIO()
    assert run(["serve", "--check-config", "--long-port", "70000"], IO(io.StringIO(), err)) == 2
    assert "not a port number" in err.getvalue()
