from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.gate.gatedata import CATALOG, POLICY
from wxnet.gate.decide import decide
from wxnet.gate.policy import parse_policy


@dataclass(frozen=True)
class V:
    app: str | None
    confirmed: bool = True
    spoofed: bool = False
    final: bool = True


P = parse_policy(POLICY, CATALOG)
STAFF, KIDS = P.groups["staff"], P.groups["kids"]


@pytest.mark.parametrize(
    ("verdict", "spoof", "allow", "cache"),
    [
        (V("wechat"), "strict", True, "wechat"),
        (V("android-connectivity"), "strict", True, "android-connectivity"),
        (V("qq"), "strict", False, None),
        (V(None, confirmed=False), "strict", False, None),
        (V("wechat", confirmed=False), "strict", False, None),
        (V("wechat", confirmed=False, spoofed=True), "strict", False, None),
        (V("wechat", confirmed=False, spoofed=True), "lenient", True, None),
    ],
)
def test_allow_only(verdict: V, spoof: str, allow: bool, cache: str | None) -> None:
    d = decide(STAFF, verdict, spoof)
    assert (d.allow, d.cache) == (allow, cache), d.reason


@pytest.mark.parametrize(
    ("verdict", "allow", "cache"),
    [
        (V("wechat"), False, "wechat"),
        (V("wechat", confirmed=False, spoofed=True), False, None),
        (V("qq", confirmed=False), False, None),
        (V(None), True, "pass"),
        (V(None, final=False), True, None),
        (V("apple-push"), True, "pass"),
    ],
)
def test_block(verdict: V, allow: bool, cache: str | None) -> None:
    d = decide(KIDS, verdict)
    assert (d.allow, d.cache) == (allow, cache), d.reason


def test_unrestricted() -> None:
    assert decide(None, V("qq")).allow
