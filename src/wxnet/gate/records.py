"""Flow records: one JSON line per flow and a SQLite store, plus the report queries.

A record is written when the gateway has decided about a flow (DNS query, inspected
TCP connection) and knows its byte counts. Flows the kernel passes on its own (cached
verdicts) are counted by nftables, not recorded here.
"""

from __future__ import annotations

import functools
import json
import math
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

__all__ = ["FlowRecord", "JsonlWriter", "RecordStore", "Report", "build_report"]


@dataclass(frozen=True, slots=True)
class FlowRecord:
    time: float
    device: str
    group: str | None
    transport: str  # "tcp" | "udp"
    client: str
    client_port: int
    server: str
    server_port: int
    app: str | None
    label: str
    evidence: tuple[str, ...]  # "kind: detail"
    verdict: str  # "allow" | "block"
    path: str  # "dns" | "inspector"
    bytes_up: int = 0
    bytes_down: int = 0
    name: str | None = None  # the DNS name queried (path "dns")
    reason: str = ""

    def to_json(self) -> str:
        # Keys in sorted order already (no sort per call); one shared C encoder.
        d: dict[str, Any] = {f: getattr(self, f) for f in _SORTED_BEFORE_ISO}
        d["iso_time"] = _iso_second(math.floor(self.time))
        for f in _SORTED_AFTER_ISO:
            d[f] = getattr(self, f)
        d["evidence"] = list(self.evidence)
        return _ENCODER.encode(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FlowRecord:
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        fields["evidence"] = tuple(fields.get("evidence", ()))
        return cls(**fields)


_FIELDS = tuple(FlowRecord.__dataclass_fields__)
_SORTED_BEFORE_ISO = tuple(f for f in sorted(_FIELDS) if f < "iso_time")
_SORTED_AFTER_ISO = tuple(f for f in sorted(_FIELDS) if f > "iso_time")
_ENCODER = json.JSONEncoder(ensure_ascii=False)


@functools.lru_cache(maxsize=4)
def _iso_second(second: int) -> str:
    """ISO time of a whole second (records of the same second share the string)."""
    return datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")


class JsonlWriter:
    """Appends one JSON line per record. Block-buffered: the service calls :meth:`flush`
    every second, so a crash loses at most the last second of records."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, rec: FlowRecord) -> None:
        self._fh.write(rec.to_json() + "\n")

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS flows (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    day TEXT NOT NULL,
    device TEXT NOT NULL,
    grp TEXT,
    transport TEXT NOT NULL,
    client TEXT NOT NULL,
    client_port INTEGER NOT NULL,
    server TEXT NOT NULL,
    server_port INTEGER NOT NULL,
    app TEXT,
    label TEXT NOT NULL,
    evidence TEXT NOT NULL,
    verdict TEXT NOT NULL,
    path TEXT NOT NULL,
    bytes_up INTEGER NOT NULL,
    bytes_down INTEGER NOT NULL,
    name TEXT,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS flows_day ON flows(day, device);
"""


class RecordStore:
    """SQLite store of flow records (thread-safe; one connection, serialised)."""

    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        if str(path) != ":memory:":
            p.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def add(self, rec: FlowRecord) -> None:
        self.add_many([rec])

    def add_many(self, recs: Iterable[FlowRecord]) -> None:
        rows = [
            (
                r.time,
                datetime.fromtimestamp(r.time, UTC).date().isoformat(),
                r.device,
                r.group,
                r.transport,
                r.client,
                r.client_port,
                r.server,
                r.server_port,
                r.app,
                r.label,
                json.dumps(list(r.evidence), ensure_ascii=False),
                r.verdict,
                r.path,
                r.bytes_up,
                r.bytes_down,
                r.name,
                r.reason,
            )
            for r in recs
        ]
        with self._lock, self._db:
            self._db.executemany(
                "INSERT INTO flows (time, day, device, grp, transport, client, client_port,"
                " server, server_port, app, label, evidence, verdict, path, bytes_up,"
                " bytes_down, name, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._db.execute(sql, args))

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass(frozen=True, slots=True)
class Report:
    top_apps: list[tuple[str, str, int, int]] = field(default_factory=list)
    # (device, app label, flows, bytes)
    blocked: list[tuple[str, str, str, int]] = field(default_factory=list)
    # (device, app label, what (name or server:port), attempts)
    per_day: list[tuple[str, int, int, int]] = field(default_factory=list)
    # (day, flows, blocked, bytes)


def build_report(store: RecordStore, since: float = 0.0, limit: int = 10) -> Report:
    """Top apps per device, blocked attempts and a per-day summary since ``since``."""
    top = store.query(
        "SELECT device, label, COUNT(*), SUM(bytes_up + bytes_down) FROM flows"
        " WHERE time >= ? AND verdict = 'allow' GROUP BY device, label"
        " ORDER BY device, COUNT(*) DESC, label",
        (since,),
    )
    per_device: dict[str, int] = {}
    top_apps = []
    for device, label, n, b in top:
        per_device[device] = per_device.get(device, 0) + 1
        if per_device[device] <= limit:
            top_apps.append((str(device), str(label), int(n), int(b or 0)))
    blocked = store.query(
        "SELECT device, label, COALESCE(name, server || ':' || server_port), COUNT(*)"
        " FROM flows WHERE time >= ? AND verdict = 'block'"
        " GROUP BY 1, 2, 3 ORDER BY COUNT(*) DESC, 1, 3 LIMIT ?",
        (since, limit * 5),
    )
    days = store.query(
        "SELECT day, COUNT(*), SUM(verdict = 'block'), SUM(bytes_up + bytes_down)"
        " FROM flows WHERE time >= ? GROUP BY day ORDER BY day",
        (since,),
    )
    return Report(
        top_apps=top_apps,
        blocked=[(str(d), str(lbl), str(w), int(n)) for d, lbl, w, n in blocked],
        per_day=[(str(d), int(n), int(b or 0), int(by or 0)) for d, n, b, by in days],
    )
