"""What one case of the lab measured (records and their JSON form). Pure code."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

__all__ = [
    "CaseResult",
    "Link",
    "Outcome",
    "ResultError",
    "Source",
    "unknown_fields",
]


def unknown_fields(cls: Any, data: dict[str, Any]) -> list[str]:
    """The keys of ``data`` that are not fields of the dataclass ``cls`` (sorted)."""
    return sorted(set(data) - {f.name for f in fields(cls)})


class ResultError(ValueError):
    """A result record (e.g. read back from JSON) is malformed."""


class Outcome(StrEnum):
    WORKED = "worked"  # logged in, every message both ways and the image delivered
    PARTIAL = "partial"  # logged in, but something did not arrive in time
    FAILED = "failed"  # could not log in / reach the service
    TIMEOUT = "timeout"  # the case hit its time limit before the client reported
    ERROR = "error"  # the lab itself failed (the detail says how)


class Source(StrEnum):
    """Where the client got the address it used (S9, S10)."""

    DNS = "dns"
    NEWGETDNS = "newgetdns"  # the newgetdns list (cached from an earlier run or fetched)
    BUILTIN = "builtin"  # hard-coded addresses


class Link(StrEnum):
    """Which transport carried the session (S12, S14)."""

    LONG = "long"  # long link, port 8080
    SHORT = "short"  # HTTP short links (port 80) with the long poll
    EXTRA = "extra"  # long link on the extra port (QQ's 14000)


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One case's record. ``lost`` counts messages the server acknowledged that never
    reached the other side; ``duplicated`` counts messages applied more than once."""

    case: str
    faults: tuple[str, ...]
    outcome: Outcome
    source: Source | None = None
    link: Link | None = None
    address: str | None = None
    port: int | None = None
    seconds: float = 0.0
    first_delivery_s: float | None = None
    sent: int = 0
    acked: int = 0
    received: int = 0
    peer_sent: int = 0
    peer_received: int = 0
    lost: int = 0
    duplicated: int = 0
    image_ok: bool = False
    network_poor: bool = False
    gate: bool = False
    web_blocked: bool | None = None
    detail: str = ""
    events: tuple[str, ...] = field(default=())

    @property
    def worked(self) -> bool:
        return self.outcome is Outcome.WORKED

    @property
    def path(self) -> str:
        """``source -> link:port`` as a person reads it, or ``-``."""
        if self.link is None:
            return "-"
        port = f":{self.port}" if self.port else ""
        return f"{self.source or '?'} -> {self.link}{port}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["faults"] = list(self.faults)
        data["events"] = list(self.events)
        return data

    @classmethod
    def from_json(cls, data: Any) -> CaseResult:
        """Read a record back.

        Raises:
            ResultError: not a mapping, a missing or unknown field, or a bad value.
        """
        if not isinstance(data, dict):
            raise ResultError("a case result must be a JSON object")
        unknown = unknown_fields(cls, data)
        if unknown:
            raise ResultError(f"unknown field(s) in a case result: {unknown}")
        try:
            kw = dict(data)
            kw["faults"] = tuple(str(x) for x in kw.get("faults", ()))
            kw["events"] = tuple(str(x) for x in kw.get("events", ()))
            kw["outcome"] = Outcome(kw["outcome"])
            if kw.get("source") is not None:
                kw["source"] = Source(kw["source"])
            if kw.get("link") is not None:
                kw["link"] = Link(kw["link"])
            result = cls(**kw)
        except (KeyError, TypeError, ValueError) as exc:
            raise ResultError(f"bad case result: {exc}") from exc
        if not isinstance(result.case, str):
            raise ResultError("a case result's 'case' must be a string")
        return result
