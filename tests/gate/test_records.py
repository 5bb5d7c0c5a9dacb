from __future__ import annotations

import json
from pathlib import Path

from wxnet.gate.records import FlowRecord, JsonlWriter, RecordStore, build_report


def rec(t: float, device: str, label: str, verdict: str, n: int = 100) -> FlowRecord:
    return FlowRecord(
        time=t,
        device=device,
        group="g",
        transport="tcp",
        client="10.0.0.2",
        client_port=40000,
        server="203.0.113.1",
        server_port=8080,
        app=label.lower(),
        label=label,
        evidence=("mmtls: record head 16 f1 04",),
        verdict=verdict,
        path="inspector",
        bytes_up=n,
        bytes_down=n,
    )


def test_jsonl_and_sqlite_report(tmp_path: Path) -> None:
    day1, day2 = 1_764_000_000.0, 1_764_000_000.0 + 86400
    recs = [
        rec(day1, "alice", "WeChat", "allow"),
        rec(day1 + 1, "alice", "WeChat", "allow"),
        rec(day1 + 2, "alice", "QQ", "allow", 10),
        rec(day2, "bob", "Video", "block"),
        rec(day2 + 5, "bob", "Video", "block"),
    ]
    w = JsonlWriter(tmp_path / "log" / "gate.jsonl")
    store = RecordStore(tmp_path / "gate.sqlite")
    for r in recs:
        w.write(r)
    store.add_many(recs)
    w.close()
    lines = (tmp_path / "log" / "gate.jsonl").read_text().splitlines()
    assert [FlowRecord.from_dict(json.loads(x)) for x in lines] == recs
    report = build_report(store)
    assert report.top_apps == [("alice", "WeChat", 2, 400), ("alice", "QQ", 1, 20)]
    assert report.blocked == [("bob", "Video", "203.0.113.1:8080", 2)]
    assert [(d[1], d[2]) for d in report.per_day] == [(3, 0), (2, 2)]
    store.close()
