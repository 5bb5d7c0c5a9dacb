"""The seed's observations as checks over the lab's results (S9, S12, S13, S14).

:func:`predict` says, for a case, what the seed leads us to expect; :func:`evaluate`
compares every result with its prediction and returns one :class:`Check` per claim and
case. A failed check is a finding (the client does not behave as the seed observed), and
:func:`assert_expectations` turns the failures into an exception, so a report is never
just a print. Pure code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from wxnet.lab.faults import Case, parse_case
from wxnet.lab.results import CaseResult, Link, Outcome, Source

__all__ = [
    "Check",
    "ExpectationFailed",
    "Prediction",
    "assert_expectations",
    "evaluate",
    "predict",
]

LONG_PORT, SHORT_PORT, EXTRA_PORT = 8080, 80, 14000


class ExpectationFailed(AssertionError):
    """At least one of the seed's observations did not hold in the lab."""

    def __init__(self, failed: Sequence[Check]) -> None:
        self.failed = tuple(failed)
        lines = [f"{c.claim} {c.case}: {c.detail}" for c in self.failed]
        super().__init__(f"{len(lines)} expectation(s) failed:\n  " + "\n  ".join(lines))


@dataclass(frozen=True, slots=True)
class Prediction:
    """What a case should show, and the claims that say so."""

    works: bool
    link: Link | None
    port: int | None
    sources: frozenset[Source]
    claims: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Check:
    claim: str  # S9, S12, S13, S14, S16 (no loss), S19 (no duplicate)
    case: str
    passed: bool
    detail: str


def predict(case: Case, extra_port: bool = True) -> Prediction:
    """The seed's expectation for ``case``.

    - DNS blocked: the client still works, using built-in addresses (or the newgetdns list
      it cached), S9; otherwise it uses what DNS (or newgetdns) gave it.
    - 8080 open: long link on 8080 (preferred, S12); 8080 cut and 80 open: short links
      on 80 (either alone suffices, S12).
    - 80 and 8080 cut, extra port configured and open: long link on 14000 (S14).
    - Nothing open (all TCP cut, or every port): nothing works and the client says the
      network is poor (S13).
    """
    claims: list[str] = []
    if case.blocks_dns():
        sources = frozenset({Source.BUILTIN, Source.NEWGETDNS})
        claims.append("S9")
    else:
        sources = frozenset({Source.DNS, Source.NEWGETDNS})
    link: Link | None
    port: int | None
    if not case.blocks_tcp(LONG_PORT):
        link, port = Link.LONG, LONG_PORT
        claims.append("S12")
    elif not case.blocks_tcp(SHORT_PORT):
        link, port = Link.SHORT, SHORT_PORT
        claims.append("S12")
    elif extra_port and not case.blocks_tcp(EXTRA_PORT):
        link, port = Link.EXTRA, EXTRA_PORT
        claims.append("S14")
    else:
        link, port = None, None
        claims = ["S13"]  # nothing to resolve for: DNS or not, nothing gets through
    return Prediction(link is not None, link, port, sources, tuple(claims))


def evaluate(results: Sequence[CaseResult], extra_port: bool = True) -> list[Check]:
    """One check per (claim, case), plus the no-loss and no-duplicate checks (S16, S19)
    for every case, and for cases behind the gate the web site check (S1). Results the
    lab could not run (``error``) fail their checks."""
    checks: list[Check] = []
    for r in results:
        case = parse_case(r.case)
        # behind `wxnet gate` in allow-only mode only WeChat's ports are open: 14000 is
        # QQ's (S14), so the extra port cannot help there
        p = predict(case, extra_port and not r.gate)
        for claim in p.claims:
            checks.append(_check(claim, r, p))
        if r.gate:
            # S1: the operator wants the phones to reach WeChat and no web pages
            detail = "the web site was blocked" if r.web_blocked else "the web site was reached"
            if r.web_blocked is None:
                detail = "the browser-like flow did not run"
            checks.append(Check("S1", r.case, r.web_blocked is True, detail))
        checks.append(Check("S16", r.case, r.lost == 0, f"{r.lost} message(s) lost"))
        checks.append(
            Check("S19", r.case, r.duplicated == 0, f"{r.duplicated} message(s) duplicated")
        )
    return checks


def _check(claim: str, r: CaseResult, p: Prediction) -> Check:
    if r.outcome is Outcome.ERROR:
        return Check(claim, r.case, False, f"the lab could not run the case: {r.detail}")
    if not p.works:
        ok = not r.worked and r.network_poor
        why = []
        if r.worked:
            why.append(f"it worked ({r.path}) though nothing should get through")
        if not r.network_poor:
            why.append("the client did not report a poor network")
        return Check(claim, r.case, ok, "; ".join(why) or "nothing worked; network poor")
    problems = []
    if not r.worked:
        problems.append(f"did not work ({r.outcome}: {r.detail or 'no detail'})")
    else:
        if claim == "S9" and r.source not in p.sources:
            problems.append(f"address from {r.source}, expected built-in or newgetdns")
        if claim in ("S12", "S14") and (r.link, r.port) != (p.link, p.port):
            problems.append(f"took {r.path}, expected {p.link}:{p.port}")
    want = f"works via {p.link}:{p.port}"
    return Check(claim, r.case, not problems, "; ".join(problems) or want)


def assert_expectations(checks: Sequence[Check]) -> None:
    """Raises:
    ExpectationFailed: listing every failed check."""
    failed = [c for c in checks if not c.passed]
    if failed:
        raise ExpectationFailed(failed)
