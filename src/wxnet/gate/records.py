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
from collections.abc import Callable, Iterable
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
    admitted_by: str | None = None  # "dns" | "newgetdns" | "range" (allow-only admits)
    ongoing: bool = False  # a periodic record of a flow still open (bytes since the last)

    def to_json(self) -> str:
        """The record as one JSON object (keys sorted, ``iso_time`` added): written per
        DNS query, so it is built directly rather than through a dict and the encoder
        (the same text as ``json.dumps(..., ensure_ascii=False, sort_keys=True)``)."""
        if not math.isfinite(self.time):
            return self._to_json_slow()
        s = _jstr
        return (
            f'{{"admitted_by": {_jopt(self.admitted_by)}, '
            f'"app": {_jopt(self.app)}, "bytes_down": {self.bytes_down!r}, '
            f'"bytes_up": {self.bytes_up!r}, "client": {s(self.client)}, '
            f'"client_port": {self.client_port!r}, "device": {s(self.device)}, '
            f'"evidence": [{", ".join(map(s, self.evidence))}], "group": {_jopt(self.group)}, '
            f'"iso_time": "{_iso_time(self.time)}", "label": {s(self.label)}, '
            f'"name": {_jopt(self.name)}, "ongoing": {"true" if self.ongoing else "false"}, '
            f'"path": {s(self.path)}, "reason": {s(self.reason)}, '
            f'"server": {s(self.server)}, "server_port": {self.server_port!r}, '
            f'"time": {self.time!r}, "transport": {s(self.transport)}, '
            f'"verdict": {s(self.verdict)}}}'
        )

    def _to_json_slow(self) -> str:
        d: dict[str, Any] = {f: getattr(self, f) for f in _FIELDS}
        d["evidence"] = list(self.evidence)
        d["iso_time"] = datetime.fromtimestamp(self.time, UTC).isoformat(timespec="seconds")
        return json.dumps(d, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FlowRecord:
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        fields["evidence"] = tuple(fields.get("evidence", ()))
        return cls(**fields)


_FIELDS = tuple(FlowRecord.__dataclass_fields__)
_jstr: Callable[[str], str] = (
    getattr(json.encoder, "c_encode_basestring", None) or json.encoder.py_encode_basestring
)  # what json.dumps(ensure_ascii=False) uses


def _jopt(value: str | None) -> str:
    return "null" if value is None else _jstr(value)


def _iso_time(t: float) -> str:
    """``datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")``, shared by the
    records of one second. fromtimestamp rounds to microseconds, so a time within a
    microsecond of the next second belongs to that one: those take the long way."""
    second = math.floor(t)
    if t - second < 0.999999:
        return _iso_second(second)
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


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
    reason TEXT NOT NULL,
    admitted_by TEXT,
    ongoing INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS flows_day ON flows(day, device);
"""
_ADDED = (("admitted_by", "TEXT"), ("ongoing", "INTEGER NOT NULL DEFAULT 0"))


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
        have = {row[1] for row in self._db.execute("PRAGMA table_info(flows)")}
        for column, decl in _ADDED:  # stores written before these columns existed
            if column not in have:
                self._db.execute(f"ALTER TABLE flows ADD COLUMN {column} {decl}")

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
                r.admitted_by,
                int(r.ongoing),
            )
            for r in recs
        ]
        with self._lock, self._db:
            self._db.executemany(
                "INSERT INTO flows (time, day, device, grp, transport, client, client_port,"
                " server, server_port, app, label, evidence, verdict, path, bytes_up,"
                " bytes_down, name, reason, admitted_by, ongoing)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
        "SELECT device, label, SUM(ongoing = 0), SUM(bytes_up + bytes_down) FROM flows"
        " WHERE time >= ? AND verdict = 'allow' GROUP BY device, label"
        " ORDER BY device, SUM(ongoing = 0) DESC, label",
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
        " FROM flows WHERE time >= ? AND verdict = 'block' AND ongoing = 0"
        " GROUP BY 1, 2, 3 ORDER BY COUNT(*) DESC, 1, 3 LIMIT ?",
        (since, limit * 5),
    )
    days = store.query(
        "SELECT day, SUM(ongoing = 0), SUM(verdict = 'block' AND ongoing = 0),"
        " SUM(bytes_up + bytes_down)"
        " FROM flows WHERE time >= ? GROUP BY day ORDER BY day",
        (since,),
    )
    return Report(
        top_apps=top_apps,
        blocked=[(str(d), str(lbl), str(w), int(n)) for d, lbl, w, n in blocked],
        per_day=[(str(d), int(n), int(b or 0), int(by or 0)) for d, n, b, by in days],
    )
