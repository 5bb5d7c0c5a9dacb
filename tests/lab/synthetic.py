"""Synthetic lab results shared by the expectation and report tests."""

from __future__ import annotations

from wxnet.lab.faults import parse_case
from wxnet.lab.results import CaseResult, Link, Outcome, Source


def ok(case: str, source: Source, link: Link, port: int, **kw: object) -> CaseResult:
    return CaseResult(
        case, tuple(parse_case(case).names), Outcome.WORKED, source, link, "1.2.3.4", port,
        sent=3, acked=3, received=3, peer_sent=3, peer_received=3, image_ok=True,
        **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def dead(case: str, poor: bool = True) -> CaseResult:
    return CaseResult(case, tuple(parse_case(case).names), Outcome.FAILED, network_poor=poor)


def seed_like() -> list[CaseResult]:
    """What the seed observed, for the short matrix."""
    return [
        ok("none", Source.DNS, Link.LONG, 8080),
        ok("dns", Source.BUILTIN, Link.LONG, 8080),
        ok("tcp8080", Source.DNS, Link.SHORT, 80),
        dead("alltcp"),
        ok("tcp80+tcp8080", Source.DNS, Link.EXTRA, 14000),
    ]
