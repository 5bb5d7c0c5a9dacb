from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.gate.gatedata import CATALOG, POLICY
from wxnet.gate.policy import PolicyError, parse_policy, parse_window

SH = ZoneInfo("Asia/Shanghai")


def ts(y: int, mo: int, d: int, h: int, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=SH).timestamp()


# 2026-11-23 is a Monday.
MON_10 = ts(2026, 11, 23, 10)
MON_20 = ts(2026, 11, 23, 20)
SAT_10 = ts(2026, 11, 28, 10)


def test_parse_expands_dependencies_and_also() -> None:
    p = parse_policy(POLICY, CATALOG)
    staff = p.groups["staff"]
    assert staff.effective_apps == ("android-connectivity", "apple-push", "wechat")
    assert p.groups["kids"].effective_apps == ("qq", "wechat")
    assert p.settings.upstreams == (("192.0.2.53", 53), ("2001:db8::53", 5353))


def test_device_matching_prefers_mac_then_longest_prefix() -> None:
    p = parse_policy(POLICY, CATALOG)
    assert p.device_for("10.1.0.5").name == "office"  # type: ignore[union-attr]
    assert p.device_for("10.1.0.9").name == "boss"  # type: ignore[union-attr]
    assert p.device_for("10.1.0.5", "02:00:00:00:00:01").name == "alice"  # type: ignore[union-attr]
    assert p.device_for("::ffff:10.1.0.5").name == "office"  # type: ignore[union-attr]
    assert p.device_for("10.2.0.5") is None


def test_schedule_with_fake_clock() -> None:
    p = parse_policy(POLICY, CATALOG)
    assert p.active_groups(MON_10) == {"staff", "kids"}
    assert p.active_groups(MON_20) == {"kids"}
    assert p.active_groups(SAT_10) == {"kids"}
    assert p.group_for("10.1.0.5", None, MON_10)[1] is p.groups["staff"]
    assert p.group_for("10.1.0.5", None, MON_20) == ("office", None)
    assert p.next_change(MON_10) == ts(2026, 11, 23, 18)
    assert p.next_change(MON_20) == ts(2026, 11, 24, 9)
    # Friday evening -> Monday morning
    assert p.next_change(ts(2026, 11, 27, 18, 30)) == ts(2026, 11, 30, 9)


def test_window_across_midnight_belongs_to_its_start_day() -> None:
    w = parse_window("fri 22:00-02:00")
    assert w.contains(datetime(2026, 11, 27, 23, 0))  # Friday 23:00
    assert w.contains(datetime(2026, 11, 28, 1, 59))  # Saturday 01:59
    assert not w.contains(datetime(2026, 11, 28, 2, 0))
    assert not w.contains(datetime(2026, 11, 26, 23, 0))  # Thursday
    assert parse_window("sat-mon 10:00-11:00").days == {5, 6, 0}
    assert parse_window("daily 00:00-24:00").days == set(range(7))


@pytest.mark.parametrize(
    ("needle", "replacement", "line", "fragment"),
    [
        ('apps = ["wechat"]\nalso', 'apps = ["wechot"]\nalso', 10, "unknown app 'wechot'"),
        ('mode = "block"', 'mode = "deny"', 15, "mode must be"),
        ('schedule = ["mon-fri 09:00-18:00"]', 'schedule = ["mon-fry 9:00-18:00"]', 12, "mon-fry"),
        ('mac = "02:00:00:00:00:01"', 'mac = "02:00:00:00:00"', 20, "bad MAC"),
        ('subnet = "10.1.0.0/24"', 'subnet = "10.1.0.1/24"', 25, "host bits"),
        (
            'group = "kids"\n\n[[devices]]\nname = "office"',
            'group = "kid"\n\n[[devices]]\nname = "office"',
            21,
            "'kid' is not defined",
        ),
        ('spoof = "strict"', 'spoof = "loose"', 6, "spoof must be"),
        ('table = "wxtest"', 'table = "wx test"', 4, "table must be"),
        ('timezone = "Asia/Shanghai"', 'timezone = "Mars/Base"', 5, "unknown timezone"),
        ('upstreams = ["192.0.2.53"', 'upstreams = ["dns.example"', 3, "bad upstream"),
        ('ip = "10.1.0.9"', 'ip = "10.1.0.5"\nsubnet = "10.1.0.0/24"', 28, "exactly one"),
        ("[groups.kids]", "[groups.kids]\ncolour = 1", 15, "unknown key 'colour'"),
        ('table = "wxtest"', 'table = "wxtest', 4, "TOML syntax"),
        ('table = "wxtest"', 'table = "wxtest"\ndns-workers = 0', 5, "dns-workers must be"),
        ('table = "wxtest"', 'table = "wxtest"\ndns-workers = "4"', 5, "dns-workers must be"),
    ],
)
def test_errors_name_the_line(needle: str, replacement: str, line: int, fragment: str) -> None:
    assert needle in POLICY
    with pytest.raises(PolicyError) as info:
        parse_policy(POLICY.replace(needle, replacement, 1), CATALOG)
    assert fragment in info.value.message
    assert info.value.line == line, info.value


def test_explain_mentions_ports_and_dependencies() -> None:
    p = parse_policy(POLICY, CATALOG)
    text = "\n".join(p.explain(MON_20))
    assert "allow only wechat (+ dependencies android-connectivity, apple-push)" in text
    assert "TCP ports open: 80, 443, 5223, 8080" in text
    assert "inactive (unrestricted)" in text
    assert "device alice (02:00:00:00:00:01) -> group kids" in text


def test_dns_workers_default_to_one_process_and_are_explained() -> None:
    assert parse_policy(POLICY, CATALOG).settings.dns_workers == 1
    p = parse_policy(
        POLICY.replace('table = "wxtest"', 'table = "wxtest"\ndns-workers = 4'), CATALOG
    )
    assert p.settings.dns_workers == 4
    assert "DNS filter on port 53 (4 processes)" in "\n".join(p.explain(MON_10))


def test_a_source_whose_mac_is_unknown_gets_the_most_restrictive_group() -> None:
    from tests.gate.gatedata import CATALOG, POLICY
    from wxnet.gate.policy import parse_policy

    p = parse_policy(POLICY.replace('schedule = ["mon-fri 09:00-18:00"]\n', ""), CATALOG)
    # 10.1.0.5 is in the staff subnet, but alice (kids) is matched by MAC in the kernel:
    # with no neighbour entry the gateway cannot tell, so it assumes the stricter group.
    assert p.group_for("10.1.0.5", None, 0.0, mac_known=False)[1] == p.groups["staff"]
    assert p.group_for("10.9.9.9", None, 0.0, mac_known=False)[1] == p.groups["kids"]
    assert p.group_for("10.9.9.9", None, 0.0)[1] is None  # known: no entry, free
    assert p.restrictiveness(p.groups["staff"]) < p.restrictiveness(p.groups["kids"])
