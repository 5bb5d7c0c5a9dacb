"""The configuration files the lab writes for wxnet serve and wxnet gate are valid."""

from __future__ import annotations

import io
import tomllib
from pathlib import Path

from wxnet.cli.common import IO
from wxnet.cli.main import run
from wxnet.lab.faults import short_matrix
from wxnet.lab.runner import LabConfig, gate_toml, server_toml
from wxnet.lab.topology import Addressing, Names
from wxnet.server.config import load_config


def test_server_config_advertises_the_lab_addresses(tmp_path: Path) -> None:
    a = Addressing()
    path = tmp_path / "server.toml"
    path.write_text(server_toml(LabConfig(short_matrix(), tmp_path), a.smart, a.builtin))
    dns = load_config(path).dns
    assert dns.long_name == "long.wxnet.lab" and dns.long_addresses == a.smart
    assert dns.builtin_addresses == a.builtin and dns.short_ports == (80,)


def test_gate_policy_passes_wxnet_gate_check(tmp_path: Path) -> None:
    path = tmp_path / "gate.toml"
    path.write_text(gate_toml(tmp_path, Names("abc123"), Addressing()))
    policy = tomllib.loads(path.read_text())
    assert policy["devices"][0]["subnet"] == "10.66.0.0/24"
    assert policy["gate"]["table"] == "wxlab_abc123_gate"
    assert policy["apps"]["wechat"]["operator-ranges"] == ["198.51.100.20/32", "198.51.100.21/32"]
    out, err = io.StringIO(), io.StringIO()
    # Outside the lab's gateway namespace the machine checks can only fail on the lab's
    # own interface and address; the policy itself is valid.
    code = run(["gate", "check", str(path)], IO(out, err))
    findings = [x for x in err.getvalue().splitlines() if x.strip()]
    assert code in (0, 2) and all("lan0" in x or "10.66.0.1" in x for x in findings), findings
