from __future__ import annotations

import io
import json
import socket
from pathlib import Path

from wxnet.cli.common import IO
from wxnet.cli.main import run
from wxnet.gate.records import FlowRecord, RecordStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


POLICY = """\
[gate]
lan = ["lo"]
upstreams = ["9.9.9.9", "[2001:db8::53]:53"]
table = "wxnet_cli"
timezone = "UTC"
dns-listen = ["127.0.0.1"]
dns-port = DNSPORT
inspector-port = INSPORT

[groups.staff]
mode = "allow-only"
apps = ["wechat"]
schedule = ["mon-fri 09:00-18:00"]

[[devices]]
subnet = "192.168.1.0/24"
group = "staff"
"""


def call(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), IO(out, err))
    return code, out.getvalue(), err.getvalue()


def policy() -> str:
    return POLICY.replace("DNSPORT", str(free_port())).replace("INSPORT", str(free_port()))


def test_check_explains_with_bundled_signatures(tmp_path: Path) -> None:
    cfg = tmp_path / "gate.toml"
    cfg.write_text(policy())
    code, out, err = call("gate", "check", str(cfg), "--at", "2026-11-23T10:00")
    assert (code, err) == (0, "")
    assert "upstreams: 9.9.9.9:53, [2001:db8::53]:53" in out
    assert "allow only wechat (+ dependencies" in out and "apple-push" in out
    assert "now: active" in out
    assert "next schedule change: 2026-11-23T18:00+00:00" in out


def test_check_names_the_line_and_fails(tmp_path: Path) -> None:
    cfg = tmp_path / "gate.toml"
    cfg.write_text(policy().replace('apps = ["wechat"]', 'apps = ["wechat", "tiktok"]'))
    code, out, err = call("gate", "check", str(cfg))
    assert code == 2 and out == ""
    assert "line 12: unknown app 'tiktok'" in err
    assert call("gate", "check", str(tmp_path / "missing.toml"))[0] == 2


def test_rules_prints_the_nft_script(tmp_path: Path) -> None:
    cfg = tmp_path / "gate.toml"
    cfg.write_text(policy())
    code, out, _ = call("gate", "rules", str(cfg), "--at", "2026-11-23T10:00")
    assert code == 0
    assert out.startswith("table inet wxnet_cli\ndelete table inet wxnet_cli\n")
    assert "@o_wechat_4" in out  # WeChat's operator ranges, from the signatures
    assert "ip saddr 192.168.1.0/24 goto fwd_staff" in out
    _, evening, _ = call("gate", "rules", str(cfg), "--at", "2026-11-23T20:00")
    assert "ip saddr 192.168.1.0/24 return" in evening


def test_report_tables_and_json(tmp_path: Path) -> None:
    db = tmp_path / "gate.sqlite"
    store = RecordStore(db)
    base = dict(
        group="staff",
        transport="tcp",
        client="192.168.1.5",
        client_port=1,
        server="203.0.113.9",
        server_port=8080,
        evidence=(),
        path="inspector",
    )
    store.add_many(
        [
            FlowRecord(time=1e9, device="pc", app="wechat", label="WeChat", verdict="allow",
                       bytes_up=10, bytes_down=20, **base),  # type: ignore[arg-type]
            FlowRecord(time=1e9, device="pc", app=None, label="unknown", verdict="block",
                       **base),  # type: ignore[arg-type]
        ]
    )  # fmt: skip
    store.close()
    code, out, _ = call("gate", "report", "--db", str(db))
    assert code == 0
    rows = [line.split() for line in out.splitlines()]
    assert ["pc", "WeChat", "1", "30"] in rows
    assert ["pc", "unknown", "203.0.113.9:8080", "1"] in rows
    code, out, _ = call("gate", "report", "--db", str(db), "--json")
    assert json.loads(out)["per_day"] == [["2001-09-09", 2, 1, 30]]
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not sqlite at all" * 100)
    code, _, err = call("gate", "report", "--db", str(bad))
    assert code == 2 and "not a wxnet gate database" in err
    assert call("gate", "report")[0] == 2
    assert call("gate")[0] == 2


def test_check_refuses_what_run_could_not_start_or_would_not_police(tmp_path: Path) -> None:
    cfg = tmp_path / "gate.toml"
    good = policy()
    cfg.write_text(good.replace('lan = ["lo"]', 'lan = ["br-lna"]'))  # a typo
    code, out, err = call("gate", "check", str(cfg))
    assert code == 2 and out == ""
    assert "line 2: lan: no interface 'br-lna' here, so nothing is policed" in err
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        cfg.write_text(POLICY.replace("DNSPORT", str(port)).replace("INSPORT", str(free_port())))
        code, _, err = call("gate", "check", str(cfg))
    assert code == 2 and f"cannot bind UDP 127.0.0.1:{port}" in err and "line 6:" in err
    cfg.write_text(POLICY.replace("DNSPORT", "5999").replace("INSPORT", "5999"))
    code, _, err = call("gate", "check", str(cfg))
    assert code == 2 and "line 8: inspector-port must differ from dns-port" in err
    nodev = good.split("[[devices]]")[0]
    cfg.write_text(nodev)
    code, _, err = call("gate", "check", str(cfg))
    assert code == 2 and "nothing is policed" in err
    # the documented default dns-listen (0.0.0.0 and ::) binds: one socket per family
    cfg.write_text(good.replace('dns-listen = ["127.0.0.1"]\n', ""))
    code, _, err = call("gate", "check", str(cfg))
    assert "0.0.0.0" not in err and "[::]" not in err, err
