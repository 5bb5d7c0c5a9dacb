from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wxnet.classify import (
    Classifier,
    FlowView,
    PayloadPattern,
    SignatureError,
    bundled_paths,
    load_signatures,
)

GOOD = """
id = "demo"
label = "Demo"
reason = "a test signature"
domains = ["demo.example"]
tcp_ports = [7000]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_bundled_set_has_the_required_apps() -> None:
    names = {p.stem for p in bundled_paths()}
    assert {"wechat", "qq", "android-connectivity", "ios-connectivity"} <= names
    assert {"apple-push", "google-push", "tencent", "tencent-cloud"} <= names
    assert set(load_signatures().apps) == names


def test_no_cloud_customer_block_is_an_operator_range_or_trusted() -> None:
    # Operator ranges admit in wxnet gate and clear spoof checks; a cloud provider's
    # customer blocks (tencent-cloud.toml) must never overlap one, nor be trusted.
    apps = load_signatures().apps
    cloud = apps["tencent-cloud"].ranges
    assert cloud and not apps["tencent-cloud"].operator_ranges
    for sig in apps.values():
        assert "tencent-cloud" not in sig.trusted_ranges_from, sig.id
        for op in sig.operator_ranges:
            for net in cloud:
                assert net.version != op.version or not net.overlaps(op), (sig.id, op, net)


def test_custom_signature_set(tmp_path: Path) -> None:
    sigs = load_signatures([write(tmp_path, "demo.toml", GOOD)])
    clf = Classifier(sigs)
    assert clf.app_for_name("a.demo.example") == "demo"
    req = b"GET / HTTP/1.1\r\nHost: a.demo.example\r\n\r\n"
    assert clf.classify(FlowView("tcp", "10.0.0.1", 1, "192.0.2.1", 80, req)).app == "demo"
    assert clf.classify(FlowView("tcp", "10.0.0.1", 1, "192.0.2.1", 7000)).label == (
        "Demo (unconfirmed)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD + "colour = 1\n", "unknown field(s) colour"),
        (GOOD.replace('"demo.example"', '"bad domain"'), "not a domain name"),
        (GOOD + "host_regex = ['(']\n", "host_regex"),
        (GOOD + 'dependencies = ["nothing"]\n', "unknown signature 'nothing'"),
        (GOOD + "ranges = ['10.0.0.1/8']\n", "ranges"),
        (GOOD + "mmtls = 1\n", "mmtls must be true or false"),
        (GOOD.replace("[7000]", "[70000]"), "tcp_ports"),
        (GOOD.replace('reason = "a test signature"', ""), "reason"),
        ("id = [", "not valid TOML"),
        (GOOD + "[[udp_payload]]\nprefix = ['zz']\nwhat = 'x'\n", "not hex"),
        (GOOD + "[[udp_payload]]\nwhat = 'x'\n", "needs at least one prefix"),
    ],
)
def test_bad_files_name_the_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "demo.toml", text)
    with pytest.raises(SignatureError) as info:
        load_signatures([path])
    assert str(path) in str(info.value) and message in str(info.value)


def test_duplicate_domain_and_id(tmp_path: Path) -> None:
    a = write(tmp_path, "a.toml", GOOD)
    b = write(tmp_path, "b.toml", GOOD.replace('id = "demo"', 'id = "other"'))
    with pytest.raises(SignatureError, match="also claimed"):
        load_signatures([a, b])
    with pytest.raises(SignatureError, match="already defined"):
        load_signatures([a, a])
    with pytest.raises(SignatureError, match="cannot read"):
        load_signatures([tmp_path / "missing.toml"])


def test_nested_ranges_pick_the_most_specific(tmp_path: Path) -> None:
    def sig(name: str, ranges: list[str]) -> Path:
        text = f'id = "{name}"\nlabel = "{name.upper()}"\nreason = "ranges test"\n'
        return write(tmp_path, f"{name}.toml", text + f"ranges = {ranges!r}\n")

    clf = Classifier(
        load_signatures(
            [
                sig("outer", ["10.0.0.0/8", "2001:db8::/32"]),
                sig("inner", ["10.1.0.0/16", "2001:db8:1::/48"]),
                sig("late", ["10.200.0.0/16"]),
            ]
        )
    )
    assert clf.ranges_app("10.1.2.3") == "inner"
    assert clf.ranges_app("10.2.0.1") == "outer"
    assert clf.ranges_app("10.200.1.1") == "late"
    assert clf.ranges_app("10.255.0.1") == "outer"
    assert clf.ranges_app("11.0.0.1") is None and clf.ranges_app("9.255.255.255") is None
    assert clf.ranges_app("2001:db8:1::5") == "inner" and clf.ranges_app("2001:db8:2::") == "outer"
    assert clf.ranges_app("not an address") is None


def _prefix_bytes(pattern: PayloadPattern, k: int, filler: int) -> bytes:
    return bytes(filler if b is None else b for b in pattern.prefixes[k % len(pattern.prefixes)])


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=80), k=st.integers(0, 50), filler=st.integers(0, 255))
def test_compiled_udp_rules_match_as_payload_patterns_do(data: bytes, k: int, filler: int) -> None:
    """The classifier's own form of the first-datagram patterns (one regular expression
    per pattern) gives PayloadPattern.matches' answer on every bundled pattern."""
    from wxnet.classify.classifier import _UdpRule

    patterns = [p for s in load_signatures().apps.values() for p in s.udp_payload]
    assert patterns
    for pattern in patterns:
        rule = _UdpRule("x", pattern)
        shaped = (_prefix_bytes(pattern, k, filler) + data,) if pattern.prefixes else ()
        for payload in (data, *shaped):
            for port in (*pattern.ports, 8000, 53):
                assert rule.matches(payload, port) == pattern.matches(payload, port)
