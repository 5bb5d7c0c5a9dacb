from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


_text = st.text(max_size=20)
_opt = st.none() | _text


@given(
    t=st.floats(min_value=-1e10, max_value=1e10, allow_nan=False) | st.integers(0, 2**33),
    strings=st.lists(_text, min_size=9, max_size=9),
    optional=st.lists(_opt, min_size=3, max_size=3),
    numbers=st.lists(st.integers(0, 2**40), min_size=4, max_size=4),
    evidence=st.lists(_text, max_size=3),
)
def test_json_line_is_what_the_json_module_writes(
    t: float, strings: list[str], optional: list[str | None], numbers: list[int],
    evidence: list[str],
) -> None:  # fmt: skip
    r = FlowRecord(
        time=t, device=strings[0], group=optional[0], transport=strings[1],
        client=strings[2], client_port=numbers[0], server=strings[3], server_port=numbers[1],
        app=optional[1], label=strings[4], evidence=tuple(evidence), verdict=strings[5],
        path=strings[6], bytes_up=numbers[2], bytes_down=numbers[3], name=optional[2],
        reason=strings[7] + strings[8],
    )  # fmt: skip
    d = {f: getattr(r, f) for f in FlowRecord.__dataclass_fields__}
    d["evidence"] = evidence
    d["iso_time"] = datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
    assert r.to_json() == json.dumps(d, ensure_ascii=False, sort_keys=True)
    assert FlowRecord.from_dict(json.loads(r.to_json())) == r


@pytest.mark.parametrize("t", [-5.8e-260, -0.5, 0.0, 0.9999996, 1.9999994, 1764106000.9999995])
def test_iso_time_rounds_like_datetime(t: float) -> None:
    r = FlowRecord(t, "d", None, "udp", "c", 1, "s", 2, None, "l", (), "allow", "dns")
    want = datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
    assert json.loads(r.to_json())["iso_time"] == want
