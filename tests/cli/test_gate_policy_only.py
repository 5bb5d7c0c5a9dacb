"""`wxnet gate check --policy-only`: a policy checked away from its router."""

from __future__ import annotations

import io
from pathlib import Path

from wxnet.cli.common import IO
from wxnet.cli.main import run

POLICY = """
[gate]
lan = "wxnoif0"
upstreams = ["192.0.2.53"]

[groups.phones]
mode = "allow-only"
apps = ["wechat"]

[[devices]]
subnet = "192.0.2.0/24"
group = "phones"
"""


def check(path: Path, *extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(["gate", "check", *extra, str(path)], IO(out, err))
    return code, out.getvalue(), err.getvalue()


def test_policy_only_skips_the_machine_checks_that_check_does(tmp_path: Path) -> None:
    path = tmp_path / "gate.toml"
    path.write_text(POLICY)
    code, _, err = check(path)
    assert code == 2 and "wxnoif0" in err  # on this machine: no such interface
    code, out, err = check(path, "--policy-only")
    assert code == 0, err
    assert "OK as a policy (this machine not checked: --policy-only)" in out


def test_policy_only_still_refuses_a_bad_policy(tmp_path: Path) -> None:
    path = tmp_path / "gate.toml"
    path.write_text(POLICY.replace('apps = ["wechat"]', 'apps = ["no-such-app"]'))
    code, _, err = check(path, "--policy-only")
    assert code != 0 and "no-such-app" in err
