from __future__ import annotations

from pathlib import Path

from tests.gate.gatedata import CATALOG, POLICY
from wxnet.gate.policy import parse_policy
from wxnet.gate.ruleset import (
    MARK_PASS,
    add_elements,
    app_mark,
    app_of_mark,
    delete_table,
    render,
)

GOLDEN = Path(__file__).parent / "golden"


def test_fresh_ruleset_matches_golden() -> None:
    p = parse_policy(POLICY, CATALOG)
    text = render(p, frozenset({"staff", "kids"}))
    assert text == (GOLDEN / "ruleset_fresh.nft").read_text()


def test_schedule_reapply_keeps_sets_and_unpolices_inactive_groups() -> None:
    p = parse_policy(POLICY, CATALOG)
    text = render(p, frozenset({"kids"}), fresh=False)
    assert text == (GOLDEN / "ruleset_kids_only.nft").read_text()
    assert "delete table" not in text
    assert "ip saddr 10.1.0.0/24 return" in text
    assert "goto nat_staff" not in text


def test_allow_only_opens_only_app_ports() -> None:
    p = parse_policy(POLICY, CATALOG)
    text = render(p, frozenset({"staff"}))
    staff = text.split("chain fwd_staff {", 1)[1].split("\n\t}", 1)[0]
    assert "tcp dport 14000" not in staff  # qq's port: not allowed for staff
    assert "ip daddr @app_wechat_4 tcp dport { 80, 443, 8080 }" in staff
    assert staff.rstrip().endswith("reject with icmpx admin-prohibited")


def test_marks_round_trip() -> None:
    p = parse_policy(POLICY, CATALOG)
    for app in ("wechat", "qq", "apple-push"):
        assert app_of_mark(p, app_mark(p, app)) == app
    assert app_of_mark(p, MARK_PASS) == "pass"
    assert app_of_mark(p, 0x1234) is None


def test_element_scripts() -> None:
    script = add_elements(
        "wxt",
        [
            ("wechat", "192.0.2.1", 300),
            ("wechat", "2001:db8::1", 60),
            ("pass", "::ffff:10.0.0.1", 5),
        ],
    )
    assert script == (
        "add element inet wxt app_wechat_4 { 192.0.2.1 timeout 300s }\n"
        "add element inet wxt app_wechat_6 { 2001:db8::1 timeout 60s }\n"
        "add element inet wxt pass_4 { 10.0.0.1 timeout 5s }\n"
    )
    assert delete_table("wxt") == "table inet wxt\ndelete table inet wxt\n"
