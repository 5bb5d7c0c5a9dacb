from __future__ import annotations

from pathlib import Path

from tests.gate.gatedata import CATALOG, POLICY
from wxnet.gate.policy import parse_policy
from wxnet.gate.ruleset import (
    add_elements,
    app_mark,
    app_of_mark,
    delete_table,
    pass_mark,
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


def test_allow_only_opens_only_app_ports_to_attested_destinations() -> None:
    p = parse_policy(POLICY, CATALOG)
    text = render(p, frozenset({"staff"}))
    staff = text.split("chain fwd_staff {", 1)[1].split("\n\t}", 1)[0]
    assert "tcp dport 14000" not in staff  # qq's port: not allowed for staff
    # per group: the DNS- and newgetdns-attested sets of staff, never a shared one
    assert "ip daddr @d_staff_wechat_4 tcp dport { 80, 443, 8080 }" in staff
    assert "ip6 daddr @n_staff_wechat_6 tcp dport { 80, 443, 8080 }" in staff
    assert "kids" not in staff
    assert staff.rstrip().endswith("reject with icmpx admin-prohibited")


def test_block_group_inspects_every_tcp_port_and_keeps_per_device_sets() -> None:
    p = parse_policy(POLICY, CATALOG)
    text = render(p, frozenset({"kids"}))
    nat = text.split("chain nat_kids {", 1)[1].split("\n\t}", 1)[0]
    assert "ip saddr . ip daddr . tcp dport @c_kids_4 return" in nat
    assert "ip6 saddr . ip6 daddr @x_kids_6 return" in nat
    assert nat.rstrip().endswith("meta l4proto tcp redirect to :15001")
    assert "tcp dport 853 return" in nat  # DNS-over-TLS is rejected, never inspected
    fwd = text.split("chain fwd_kids {", 1)[1].split("\n\t}", 1)[0]
    assert "ip saddr . ip daddr @x_kids_4 reject with icmpx admin-prohibited" in fwd  # UDP too
    assert "set c_kids_6 { type ipv6_addr . ipv6_addr . inet_service;" in text


def test_marks_round_trip_and_carry_the_run() -> None:
    p = parse_policy(POLICY, CATALOG)
    for app in ("wechat", "qq", "apple-push"):
        for kind in ("dns", "newgetdns", "range"):
            assert app_of_mark(p, app_mark(p, app, kind, epoch=7), 7) == (app, kind)
            assert app_of_mark(p, app_mark(p, app, kind, epoch=7), 8) is None  # other run
    assert app_of_mark(p, pass_mark(3)) == ("pass", "pass")
    assert app_of_mark(p, 0x1234) is None
    text = render(p, frozenset({"staff"}), epoch=0x2A)
    assert "ct mark & 0xffffff00 == 0x57582a00 accept" in text


def test_element_scripts() -> None:
    script = add_elements(
        "wxt",
        [
            ("d_staff_wechat", "192.0.2.1", 300),
            ("d_staff_wechat", "2001:db8::1", 60),
            ("c_kids", "::ffff:10.0.0.1 . 192.0.2.9 . 443", 5),
        ],
    )
    assert script == (
        "add element inet wxt c_kids_4 { 10.0.0.1 . 192.0.2.9 . 443 timeout 5s }\n"
        "add element inet wxt d_staff_wechat_4 { 192.0.2.1 timeout 300s }\n"
        "add element inet wxt d_staff_wechat_6 { 2001:db8::1 timeout 60s }\n"
    )
    assert delete_table("wxt") == "table inet wxt\ndelete table inet wxt\n"
