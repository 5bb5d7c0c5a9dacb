from __future__ import annotations

import io
from pathlib import Path

import pytest

from wxnet.cli.common import IO
from wxnet.cli.main import run
from wxnet.server.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "wxnet.toml"
    p.write_text(text)
    return p


def test_defaults_file_then_flags(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        '[server]\nlong_port = 9000\nextra_long_ports = [14000]\ndata = "d"\n'
        '[sync]\ndurability = "NORMAL"\nsync_window_items = 20\n'
        '[dns]\nlong_name = "long.example"\nbuiltin_addresses = ["192.0.2.1"]\n',
    )
    cfg = load_config(p, {"long_port": 9100, "host": None})
    assert cfg.long_port == 9100 and cfg.http_port == 8000 and cfg.host == "127.0.0.1"
    assert cfg.extra_long_ports == (14000,) and cfg.data == Path("d")
    assert cfg.sync.durability == "NORMAL" and cfg.sync.sync_window_items == 20
    assert cfg.dns.long_name == "long.example" and cfg.dns.builtin_addresses == ("192.0.2.1",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nlong_prot = 1\n", "no setting 'long_prot'"),
        ("[server]\nlong_port = 'x'\n", "expected int"),
        ("[server]\nlong_port = 70000\n", "not a port"),
        ("[server]\ntls_cert = 'a.pem'\n", "go together"),
        ("[sync]\ndurability = 'SOMETIMES'\n", "durability"),
        ("[nope]\n", "unknown section"),
        ("[server\n", "line 1"),
        ("[server]\nidle_timeout = true\n", "expected float"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_serve_reports_config_errors_without_traceback(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = run(["serve", "--config", str(write(tmp_path, "[server]\nx = 1\n"))], IO(out, err))
    assert code == 2 and "no setting 'x'" in err.getvalue()
    code = run(["serve", "--config", str(tmp_path / "missing.toml")], IO(out, err))
    assert code == 2 and "cannot read" in err.getvalue()


def test_user_commands(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    data = str(tmp_path / "var")
    # No store there yet: refused, with the directory named, and nothing created.
    assert run(["user", "add", "dave", "--password", "secret1", "--data", data], IO(out, err)) == 2
    assert f"no store in {tmp_path / 'var'}" in err.getvalue()
    assert not (tmp_path / "var").exists()
    assert run(["user", "list", "--data", data], IO(out, err)) == 2
    assert run(["store", "init", "--data", data], IO(out, err)) == 0
    assert "created store" in out.getvalue()
    assert run(["user", "add", "dave", "--password", "secret1", "--data", data], IO(out, err)) == 0
    assert run(["user", "add", "dave", "--password", "secret1", "--data", data], IO(out, err)) == 2
    assert "already exists" in err.getvalue()
    assert run(["user", "add", "X", "--password", "secret1", "--data", data], IO(out, err)) == 2
    assert run(["user", "add", "erin", "--password", "123", "--data", data], IO(out, err)) == 2
    assert "at least 6" in err.getvalue()
    out = io.StringIO()
    assert run(["user", "list", "--json", "--data", data], IO(out, err)) == 0
    assert '"user_name": "dave"' in out.getvalue()
