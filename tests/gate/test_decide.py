"""The attestation rule, unit level: payload evidence labels or denies, never admits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from tests.gate.gatedata import CATALOG, POLICY
from wxnet.gate.attest import Attestations
from wxnet.gate.decide import Decision, decide
from wxnet.gate.policy import Group, parse_policy


@dataclass(frozen=True)
class V:
    app: str | None
    confirmed: bool = True
    spoofed: bool = False
    final: bool = True
    names: tuple[str, ...] = ()


P = parse_policy(POLICY, CATALOG)
STAFF, KIDS = P.groups["staff"], P.groups["kids"]
PHONE, OTHER = "10.1.0.5", "10.1.0.6"


def app_for_name(name: str) -> str | None:
    if name.endswith("weixin.qq.com") or name == "mmbiz.qpic.cn":
        return "wechat"
    return None


def run(
    group: Group | None,
    verdict: V,
    server: str = "192.0.2.9",
    port: int = 443,
    attests: Sequence[tuple[str, str]] = (),
    ended: str = "final",
) -> Decision:
    return decide(P, group, verdict, PHONE, server, port, list(attests), ended, app_for_name)


@pytest.mark.parametrize(
    "verdict",
    [
        V("wechat"),  # MMTLS head, 2014 head, Host, SNI, User-Agent, /mmtls/: all payload
        V("wechat", names=("short.weixin.qq.com",)),
        V("android-connectivity"),  # /generate_204
        V(None, confirmed=False),
    ],
)
def test_payload_never_admits_an_unattested_destination(verdict: V) -> None:
    d = run(STAFF, verdict, port=8080)
    assert not d.allow and d.teach == () and d.admitted_by is None
    assert "not admitted" in d.reason


@pytest.mark.parametrize("kind", ["dns", "newgetdns", "range"])
def test_attested_destination_passes_and_says_which_attestation(kind: str) -> None:
    d = run(STAFF, V(None, confirmed=False, final=False), attests=[("wechat", kind)], port=80)
    assert d.allow and d.admitted_by == kind and d.app == "wechat"
    assert d.watch_newgetdns  # port 80: newgetdns answers are read there
    assert d.teach == ()  # the inspector never teaches an allow-only set from payload
    assert not run(STAFF, V("wechat"), attests=[("wechat", kind)], port=8080).watch_newgetdns


def test_attestation_counts_only_on_the_apps_ports_and_payload_may_deny() -> None:
    assert not run(STAFF, V(None), attests=[("wechat", "dns")], port=5201).allow
    d = run(STAFF, V("qq"), attests=[("wechat", "dns")], port=443)
    assert not d.allow and "qq is not allowed" in d.reason


def test_cdn_addresses_pass_only_flows_naming_an_allowed_app() -> None:
    cdn = [("wechat", "cdn")]
    ok = run(STAFF, V("wechat", names=("mmbiz.qpic.cn",)), attests=cdn)
    assert ok.allow and ok.admitted_by == "dns" and ok.teach == ()
    assert not run(STAFF, V(None, names=()), attests=cdn).allow  # plain HTTPS, DoH, VPN
    assert not run(STAFF, V("wechat", names=()), attests=cdn).allow  # MMTLS head alone
    spoof = V("wechat", confirmed=False, spoofed=True, names=("short.weixin.qq.com",))
    assert not run(STAFF, spoof, attests=cdn).allow


def test_block_verdicts_are_per_device_and_clean_per_device_destination_port() -> None:
    d = run(KIDS, V("wechat"), server="192.0.2.9", port=8080)
    assert not d.allow and d.teach == (("x_kids", f"{PHONE} . 192.0.2.9", 300),)
    clean = run(KIDS, V(None), server="192.0.2.9", port=443)
    assert clean.allow and clean.teach == (("c_kids", f"{PHONE} . 192.0.2.9 . 443", 60),)
    # an unconfirmed label (port or range only) is reset but teaches nothing
    weak = run(KIDS, V("qq", confirmed=False), port=14000)
    assert not weak.allow and weak.teach == ()
    # the operator ranges of a blocked app are closed on every port
    assert not run(KIDS, V(None), attests=[("wechat", "range")], port=22).allow


@pytest.mark.parametrize("ended", ["timeout", "eof", "budget"])
def test_block_without_a_verdict_is_judged_by_the_destination(ended: str) -> None:
    strict = run(KIDS, V(None, confirmed=False, final=False), ended=ended)
    assert not strict.allow and strict.teach == ()
    lenient = parse_policy(POLICY.replace('spoof = "strict"', 'spoof = "lenient"'), CATALOG)
    d = decide(lenient, lenient.groups["kids"], V(None, False, False, False), PHONE,
               "192.0.2.9", 443, [], ended, app_for_name)  # fmt: skip
    assert d.allow and d.teach == ()  # passed, never cached


def test_unrestricted() -> None:
    assert run(None, V("wechat")).allow


def test_attestations_are_per_group_and_expire() -> None:
    a = Attestations(P)
    a.add("staff", "wechat", "192.0.2.9", "dns", 100.0)
    assert a.lookup("staff", "192.0.2.9", 50.0) == [("wechat", "dns")]
    assert a.lookup("kids", "192.0.2.9", 50.0) == []
    assert a.lookup("staff", "192.0.2.9", 150.0) == []
    assert a.lookup("staff", "198.51.100.7", 0.0) == [("wechat", "range")]
    assert a.lookup("staff", "::ffff:198.51.100.7", 0.0) == [("wechat", "range")]
    assert a.lookup("staff", "2001:db8:77::1", 0.0) == [("wechat", "range")]
    assert a.lookup("kids", "198.51.100.7", 0.0) == []  # block groups admit nothing
