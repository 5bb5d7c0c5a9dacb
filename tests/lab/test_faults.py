from __future__ import annotations

import pytest

from wxnet.lab.faults import (
    BlockMode,
    Case,
    FaultError,
    default_matrix,
    fault_ruleset,
    parse_case,
    parse_matrix,
    short_matrix,
)

GOLDEN_DNS_TCP80 = """\
add table inet wxlab_t_faults
delete table inet wxlab_t_faults
table inet wxlab_t_faults {
\tchain prerouting {
\t\ttype filter hook prerouting priority -150; policy accept;
\t\tiifname "lan0" udp dport 53 counter reject with icmpx type port-unreachable comment "dns"
\t\tiifname "lan0" tcp dport 80 counter reject with tcp reset comment "tcp80"
\t}
}
"""

GOLDEN_ALLTCP_DROP = """\
add table inet wxlab_t_faults
delete table inet wxlab_t_faults
table inet wxlab_t_faults {
\tchain prerouting {
\t\ttype filter hook prerouting priority -150; policy accept;
\t\tiifname "lan0" meta l4proto tcp counter drop comment "alltcp"
\t}
}
"""


def test_ruleset_golden_reject() -> None:
    # the order of the faults in the spec does not matter: the seed's order is kept
    case = parse_case("tcp80+dns")
    assert case.name == "dns+tcp80"
    assert fault_ruleset("wxlab_t_faults", "lan0", case) == GOLDEN_DNS_TCP80


def test_ruleset_golden_drop() -> None:
    got = fault_ruleset("wxlab_t_faults", "lan0", parse_case("alltcp"), BlockMode.DROP)
    assert got == GOLDEN_ALLTCP_DROP


def test_baseline_ruleset_has_no_rule() -> None:
    text = fault_ruleset("wxlab_t_faults", "lan0", Case())
    assert "iifname" not in text and "policy accept" in text


@pytest.mark.parametrize("table", ["", "bad name", "x;flush ruleset", "9abc"])
def test_ruleset_rejects_bad_table_names(table: str) -> None:
    with pytest.raises(FaultError):
        fault_ruleset(table, "lan0", Case())


def test_ruleset_rejects_bad_interface() -> None:
    with pytest.raises(FaultError):
        fault_ruleset("t", 'lan0" accept', Case())


def test_default_matrix_is_none_singles_and_pairs() -> None:
    names = [c.name for c in default_matrix()]
    assert names[:6] == ["none", "dns", "tcp80", "tcp8080", "tcp14000", "alltcp"]
    assert len(names) == 1 + 5 + 10 == len(set(names))
    assert "tcp80+tcp8080" in names and "dns+alltcp" in names
    assert len(default_matrix(pairs=False)) == 6


def test_parse_case_errors() -> None:
    with pytest.raises(FaultError, match="unknown fault 'udp9'"):
        parse_case("dns+udp9")
    with pytest.raises(FaultError, match="twice"):
        parse_case("dns+dns")


def test_parse_matrix_keywords_and_dedup() -> None:
    cases = parse_matrix(["short", "none,dns", "tcp80+tcp14000"])
    assert [c.name for c in cases] == [c.name for c in short_matrix()] + ["tcp80+tcp14000"]
    assert len(parse_matrix(["full"])) == 16
    with pytest.raises(FaultError):
        parse_matrix([" , "])
    with pytest.raises(FaultError):
        parse_matrix(["everything"])


def test_case_predicates() -> None:
    case = parse_case("alltcp")
    assert case.blocks_tcp(80) and case.blocks_tcp(14000) and not case.blocks_dns()
    case = parse_case("dns+tcp8080")
    assert case.blocks_dns() and case.blocks_tcp(8080) and not case.blocks_tcp(80)
    assert case.has("dns") and not case.has("dns", "tcp80")
