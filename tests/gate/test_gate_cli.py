from __future__ import annotations

import io
import json
from pathlib import Path

from wxnet.cli.common import IO
from wxnet.cli.main import run
from wxnet.gate.records import FlowRecord, RecordStore

POLICY = """\
[gate]
lan = ["br-lan"]
upstreams = ["9.9.9.9"]
table = "wxnet_cli"
timezone = "UTC"

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


def test_check_explains_with_bundled_signatures(tmp_path: Path) -> None:
    cfg = tmp_path / "gate.toml"
    cfg.write_text(POLICY)
    code, out, err = call("gate", "check", str(cfg), "--at", "2026-11-23T10:00")
    assert (code, err) == (0, "")
    assert "allow only wechat (+ dependencies" in out and "apple-push" in out
    assert "now: active" in out
    assert "next schedule change: 2026-11-23T18:00+00:00" in out


def test_check_names_the_line_and_fails(tmp_path: Path) -> None:
    cfg = tmp_path / "gate.toml"
    cfg.write_text(POLICY.replace('apps = ["wechat"]', 'apps = ["wechat", "tiktok"]'))
    code, out, err = call("gate", "check", str(cfg))
    assert code == 2 and out == ""
    assert "line 9: unknown app 'tiktok'" in err
    assert call("gate", "check", str(tmp_path / "missing.toml"))[0] == 2


def test_rules_prints_the_nft_script(tmp_path: Path) -> None:
    cfg = tmp_path / "gate.toml"
    cfg.write_text(POLICY)
    code, out, _ = call("gate", "rules", str(cfg), "--at", "2026-11-23T10:00")
    assert code == 0
    assert out.startswith("table inet wxnet_cli\ndelete table inet wxnet_cli\n")
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
