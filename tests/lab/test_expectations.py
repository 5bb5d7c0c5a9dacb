from __future__ import annotations

import pytest

from tests.lab.synthetic import dead, ok, seed_like
from wxnet.lab.expectations import (
    ExpectationFailed,
    assert_expectations,
    evaluate,
    predict,
)
from wxnet.lab.faults import default_matrix, parse_case
from wxnet.lab.results import CaseResult, Link, Outcome, Source


def test_predictions_follow_the_seed() -> None:
    assert predict(parse_case("none")).link is Link.LONG
    assert predict(parse_case("tcp80")).link is Link.LONG  # 8080 alone suffices
    p = predict(parse_case("tcp8080"))
    assert (p.link, p.port, p.claims) == (Link.SHORT, 80, ("S12",))
    p = predict(parse_case("dns"))
    assert p.claims == ("S9", "S12") and Source.BUILTIN in p.sources
    assert predict(parse_case("tcp80+tcp8080")).link is Link.EXTRA
    assert predict(parse_case("tcp80+tcp8080"), extra_port=False).works is False
    for case in ("alltcp", "dns+alltcp", "tcp14000+alltcp"):
        assert predict(parse_case(case)).claims == ("S13",)


def test_every_matrix_case_gets_a_claim() -> None:
    for case in default_matrix():
        assert predict(case).claims


def test_seed_like_results_pass() -> None:
    checks = evaluate(seed_like())
    assert_expectations(checks)
    claims = {c.claim for c in checks}
    assert claims == {"S9", "S12", "S13", "S14", "S16", "S19"}


def test_dns_blocked_but_resolved_by_dns_fails_s9() -> None:
    results = [ok("dns", Source.DNS, Link.LONG, 8080)]
    with pytest.raises(ExpectationFailed) as info:
        assert_expectations(evaluate(results))
    assert [c.claim for c in info.value.failed] == ["S9"]


def test_short_link_when_8080_is_open_fails_s12() -> None:
    failed = [c for c in evaluate([ok("tcp80", Source.DNS, Link.SHORT, 80)]) if not c.passed]
    assert [c.claim for c in failed] == ["S12"]
    assert "expected long:8080" in failed[0].detail


def test_all_tcp_cut_needs_poor_network_report() -> None:
    failed = [c for c in evaluate([dead("alltcp", poor=False)]) if not c.passed]
    assert [c.claim for c in failed] == ["S13"]
    failed = [c for c in evaluate([ok("alltcp", Source.DNS, Link.LONG, 8080)]) if not c.passed]
    assert failed and "though nothing should get through" in failed[0].detail


def test_extra_port_not_used_fails_s14() -> None:
    failed = [c for c in evaluate([dead("tcp80+tcp8080")]) if not c.passed]
    assert [c.claim for c in failed] == ["S14"]


def test_loss_and_duplicates_fail() -> None:
    r = ok("none", Source.DNS, Link.LONG, 8080, lost=1, duplicated=2)
    failed = {c.claim for c in evaluate([r]) if not c.passed}
    assert failed == {"S16", "S19"}


def test_lab_error_fails_its_checks() -> None:
    r = CaseResult("tcp80", ("tcp80",), Outcome.ERROR, detail="server died")
    failed = [c for c in evaluate([r]) if not c.passed]
    assert [c.claim for c in failed] == ["S12"] and "server died" in failed[0].detail


def test_behind_the_gate_the_web_must_be_blocked() -> None:
    from dataclasses import replace

    r = replace(ok("none", Source.DNS, Link.LONG, 8080), gate=True, web_blocked=True)
    assert all(c.passed for c in evaluate([r]))
    assert "S1" in {c.claim for c in evaluate([r])}
    for web in (False, None):
        failed = [c for c in evaluate([replace(r, web_blocked=web)]) if not c.passed]
        assert [c.claim for c in failed] == ["S1"]


def test_behind_the_gate_the_extra_port_is_closed() -> None:
    from dataclasses import replace

    r = replace(dead("tcp80+tcp8080"), gate=True, web_blocked=True)
    checks = evaluate([r])
    assert all(c.passed for c in checks) and "S13" in {c.claim for c in checks}
