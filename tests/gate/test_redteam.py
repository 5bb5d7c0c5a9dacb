"""Red team: every attack class of the gateway's threat model, tried from real devices
(network namespaces, nftables, the real gateway process), in both address families.

One gateway serves the module: ``phone`` (10.77.0.2, fd77::2) is in the allow-only
group ``staff`` (WeChat only), ``phone2`` (10.77.0.3, fd77::3) in the block group
``kids`` (no WeChat). Each attack asserts that it fails; the controls assert that
WeChat-like flows to attested destinations still pass (allow-only) and are still
stopped (block). Lifecycle attacks, which need the gateway namespace to themselves,
are in test_lifecycle_netns.py.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest

from tests.gate.conftest import Gate, echo_ok
from tests.gate.netns import (
    CDN_IP,
    CHECK_IP,
    CLOUD_VM,
    GW_LAN6,
    GW_LAN_IP,
    HUGE_TTL_IP,
    NEEDS_ROOT_NFT,
    NGD6,
    NGD_IP,
    PHONE2_6,
    PHONE2_IP,
    VIDEO6,
    VIDEO_IP,
    WECHAT6,
    WECHAT6_DNS,
    WECHAT_DNS_IP,
    WECHAT_HARDCODED,
    World,
    big_client_hello,
    mmtls_hello,
    sh,
    tls_client_hello,
)
from wxnet.proto.framing import encode_packet

pytestmark = NEEDS_ROOT_NFT

TOKEN = "s3cret-admin-token"
MIXED = """\
[gate]
lan = ["{lan}"]
upstreams = ["{upstream}"]
table = "{table}"
spoof = "strict"
peek-timeout = 1.0
log = "{tmp}/gate.jsonl"
http = "18097"
http-token = "TOKEN_"

[apps.wechat]
operator-ranges = [{ranges}]

[groups.staff]
mode = "allow-only"
apps = ["wechat"]

[groups.kids]
mode = "block"
apps = ["wechat"]

[[devices]]
name = "phone"
ip = "10.77.0.2"
group = "staff"

[[devices]]
name = "phone-v6"
ip = "fd77::2"
group = "staff"

[[devices]]
name = "phone2"
ip = "10.77.0.3"
group = "kids"

[[devices]]
name = "phone2-v6"
ip = "fd77::3"
group = "kids"
""".replace("TOKEN_", TOKEN)


@pytest.fixture(scope="module")
def gate(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    g = Gate(world, MIXED, tmp_path_factory.mktemp("redteam"))
    try:
        yield g
    finally:
        g.remove()


def tcp(
    world: World, host: str, port: int, data: bytes, ns: str | None = None, **kw: object
) -> bool:
    """True when ``data`` got through and was echoed."""
    return echo_ok(world.probe("tcp", host, ns=ns, port=port, send=data.hex(), **kw), data)


def knocks() -> list[tuple[str, int, bytes]]:
    ua = b"GET / HTTP/1.1\r\nHost: video.example\r\nUser-Agent: MicroMessenger Client\r\n\r\n"
    return [
        ("mmtls-10-bytes", 8080, bytes.fromhex("16f1040005") + b"\x01" * 5),
        ("mmtls-on-443", 443, mmtls_hello()),
        ("longlink-2014", 8080, encode_packet(6, 1)),
        ("longlink-2014-80", 80, encode_packet(6, 1)),
        ("post-mmtls", 80, b"POST /mmtls/00 HTTP/1.1\r\nHost: video.example\r\n\r\n"),
        ("cgi-path", 80, b"POST /cgi-bin/micromsg-bin/newsync HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("user-agent", 80, ua),
        ("generate-204", 80, b"GET /generate_204 HTTP/1.1\r\nHost: video.example\r\n\r\n"),
        ("connect-proxy", 8080, b"CONNECT video.example:443 HTTP/1.1\r\nHost: video.example:443"
         b"\r\nUser-Agent: MicroMessenger Client\r\n\r\n"),
    ]  # fmt: skip


@pytest.mark.parametrize("family", [4, 6])
def test_payload_knocks_never_admit_and_never_touch_another_group(
    world: World, gate: Gate, family: int
) -> None:
    target = VIDEO_IP if family == 4 else VIDEO6
    for name, port, data in knocks():
        assert not tcp(world, target, port, data), f"knock {name} on {port} got through"
    plain = tls_client_hello("video.example")
    assert not tcp(world, target, 443, plain)  # plain HTTPS after the knocks: still closed
    for base in ("d_staff_wechat", "n_staff_wechat"):
        assert not gate.set_has(f"{base}_{family}", target)
    # phone's knocks changed nothing for the block group: phone2 still reaches the site
    assert tcp(world, target, 443, plain, ns=world.phone2)
    assert tcp(world, target, 5201, b"ssh?", ns=world.phone2)


def test_a_rented_cloud_vm_with_a_wechat_name_is_not_wechat(world: World, gate: Gate) -> None:
    assert not tcp(world, CLOUD_VM, 443, tls_client_hello("short.weixin.qq.com"))
    post = b"POST /mmtls/00 HTTP/1.1\r\nHost: short.weixin.qq.com\r\n\r\n" + mmtls_hello()
    assert not tcp(world, CLOUD_VM, 80, post)
    assert not tcp(world, CLOUD_VM, 8080, mmtls_hello())


@pytest.mark.parametrize("family", [4, 6])
def test_a_block_groups_verdict_is_its_own_devices_only(
    world: World, gate: Gate, family: int
) -> None:
    me, target = (PHONE2_IP, CHECK_IP) if family == 4 else (PHONE2_6, NGD6)
    assert not tcp(world, target, 8080, mmtls_hello(), ns=world.phone2)  # flagged: reset
    assert gate.set_has(f"x_kids_{family}", f"{me} . {target}")  # for phone2 alone
    assert not tcp(world, target, 5201, b"x", ns=world.phone2)  # every port, for phone2
    # ... which opens nothing for the allow-only group
    assert not tcp(world, target, 8080, mmtls_hello())
    assert not gate.set_has(f"d_staff_wechat_{family}", target)


@pytest.mark.parametrize("family", [4, 6])
def test_controls_wechat_like_flows(world: World, gate: Gate, family: int) -> None:
    """Allow-only: WeChat to attested destinations passes; block: the same is stopped."""
    gw, qtype = (GW_LAN_IP, "A") if family == 4 else (GW_LAN6, "AAAA")
    dns_ip, builtin = (
        (WECHAT_DNS_IP, WECHAT_HARDCODED[2]) if family == 4 else (WECHAT6_DNS, WECHAT6)
    )
    r = world.probe("dns", gw, name="short.weixin.qq.com", qtype=qtype)
    assert r == {"rcode": "NOERROR", "addresses": [dns_ip]}
    hello = mmtls_hello()
    post = b"POST /mmtls/0a HTTP/1.1\r\nHost: short.weixin.qq.com\r\n\r\n" + hello
    assert tcp(world, dns_ip, 8080, hello) and tcp(world, dns_ip, 80, post)
    assert tcp(world, builtin, 8080, hello) and tcp(world, builtin, 443, hello)
    assert tcp(world, builtin, 80, encode_packet(6, 1))
    # the same from the block group: DNS refused, the operator's servers closed
    r = world.probe("dns", gw, name="short.weixin.qq.com", qtype=qtype, ns=world.phone2)
    assert r["rcode"] == "NXDOMAIN"
    assert not tcp(world, builtin, 8080, hello, ns=world.phone2)
    assert not tcp(world, builtin, 22, b"x", ns=world.phone2)


def test_ipv6_dns_is_filtered_like_ipv4(world: World, gate: Gate) -> None:
    r = world.probe("dns", GW_LAN6, name="video.example", qtype="AAAA")
    assert r["rcode"] == "NXDOMAIN"
    r = world.probe("dns", "fd18:1::53", name="video.example", qtype="AAAA", timeout=2)
    assert "addresses" not in r or r["rcode"] == "NXDOMAIN"  # foreign DNS over IPv6, too


def test_dns_answers_teach_only_their_own_chain(world: World, gate: Gate) -> None:
    r = world.probe("dns", GW_LAN_IP, name="extra.weixin.qq.com")
    assert r["addresses"] == [WECHAT_DNS_IP, VIDEO_IP]  # the smuggled record reaches the phone
    assert not gate.set_has("d_staff_wechat_4", VIDEO_IP)  # but is not learned
    assert not tcp(world, VIDEO_IP, 8080, mmtls_hello())
    # a TTL of 2^31 s: answered (not SERVFAIL) and admitted, clamped to max-set-timeout
    r = world.probe("dns", GW_LAN_IP, name="huge.weixin.qq.com")
    assert r == {"rcode": "NOERROR", "addresses": [HUGE_TTL_IP]}
    assert tcp(world, HUGE_TTL_IP, 8080, mmtls_hello())


def test_a_cname_to_a_shared_cdn_passes_only_flows_that_name_wechat(
    world: World, gate: Gate
) -> None:
    r = world.probe("dns", GW_LAN_IP, name="mmbiz.qpic.cn")
    assert r["addresses"] == [CDN_IP]
    assert not gate.set_has("d_staff_wechat_4", CDN_IP)  # never on the kernel fast path
    assert tcp(world, CDN_IP, 443, tls_client_hello("mmbiz.qpic.cn"))
    assert not tcp(world, CDN_IP, 443, tls_client_hello("video.example"))
    assert not tcp(world, CDN_IP, 443, b"\x16\x03\x01\x00\x05hello")  # no name at all
    assert not tcp(world, CDN_IP, 8080, mmtls_hello())  # payload alone does not admit


def test_newgetdns_is_learned_only_from_an_admitted_address(world: World, gate: Gate) -> None:
    get = b"GET /cgi-bin/micromsg-bin/newgetdns?uin=0 HTTP/1.1\r\nHost: dns.weixin.qq.com\r\n\r\n"
    # from an unattested address: the flow is reset, nothing is learned
    out = world.probe("tcp", CHECK_IP, port=80, send=get.hex())
    assert "reply" not in out
    assert not gate.set_has("n_staff_wechat_4", NGD_IP)
    assert not tcp(world, NGD_IP, 8080, mmtls_hello())
    # from a built-in address (operator range): the answer's addresses are admitted
    out = world.probe("tcp", WECHAT_HARDCODED[0], port=80, send=get.hex())
    assert b"<dns>" in bytes.fromhex(out["reply"])
    assert gate.set_has("n_staff_wechat_4", NGD_IP) and gate.set_has("n_staff_wechat_6", NGD6)
    assert tcp(world, NGD_IP, 8080, mmtls_hello())
    assert not gate.set_has("d_staff_wechat_4", NGD_IP)


@pytest.mark.parametrize("family", [4, 6])
def test_block_mode_cannot_be_evaded(world: World, gate: Gate, family: int) -> None:
    p2 = world.phone2
    video = VIDEO_IP if family == 4 else VIDEO6
    other = CLOUD_VM if family == 4 else "fd18:4::99"
    hello = mmtls_hello()
    # an undeclared port (to a destination phone2 never used)
    fresh = CDN_IP if family == 4 else WECHAT6_DNS
    assert not tcp(world, fresh, 5201, hello, ns=p2)
    # a first byte sent only after the peek timed out (strict: reset by destination)
    assert "reply" not in world.probe("tcp", video, ns=p2, port=22, send=hello.hex(),
                                      silent=True, timeout=5)  # fmt: skip
    # one clean flow first: cached for (phone2, destination, 443) only
    plain = tls_client_hello("video.example")
    assert tcp(world, video, 443, plain, ns=p2)
    me = PHONE2_IP if family == 4 else PHONE2_6
    assert gate.set_has(f"c_kids_{family}", f"{me} . {video} . 443")
    assert not tcp(world, video, 8080, hello, ns=p2)  # another port is inspected again
    # a ClientHello bigger than 4 KiB, spanning segments
    if family == 4:
        assert not tcp(world, other, 443, big_client_hello("short.weixin.qq.com"), ns=p2)
    # UDP to blocked destinations: the operator ranges and this device's denied ones
    builtin = WECHAT_HARDCODED[0] if family == 4 else WECHAT6
    assert "reply" not in world.probe("udp", builtin, ns=p2, port=8000, send="00", timeout=1)
    assert "reply" not in world.probe("udp", video, ns=p2, port=8000, send="00", timeout=1)
    # (video was denied for phone2 by the MMTLS flow on 8080 above)


def test_udp_controls(world: World, gate: Gate) -> None:
    # control for the UDP check above: a destination nobody flagged answers UDP
    out = world.probe("udp", CHECK_IP, ns=world.phone, port=8000, send="00", timeout=1)
    assert "reply" not in out  # allow-only phone: UDP closed
    out = world.probe("udp", WECHAT_DNS_IP, ns=world.phone2, port=8000, send="00", timeout=1)
    assert out.get("reply") == b"echo:\x00".hex()


def test_dashboard_and_metrics_are_admin_only(world: World, gate: Gate) -> None:
    # from a policed device: nothing listens on the LAN side, and the port is filtered
    assert "reply" not in world.probe("tcp", GW_LAN_IP, port=18097, send="00", timeout=1)
    fetch = (
        "import sys, urllib.request as u, urllib.error as e\n"
        "req = u.Request('http://127.0.0.1:18097' + sys.argv[1])\n"
        "if len(sys.argv) > 2: req.add_header('Authorization', 'Bearer ' + sys.argv[2])\n"
        "try:\n"
        "    r = u.urlopen(req, timeout=5); print(r.status, r.read().decode()[:2000])\n"
        "except e.HTTPError as x: print(x.code)\n"
    )
    run = ["ip", "netns", "exec", world.gw, sys.executable, "-c", fetch]
    assert sh(*run, "/api/summary").stdout.split()[0] == "401"
    assert sh(*run, "/metrics").stdout.split()[0] == "401"
    out = sh(*run, "/api/summary", TOKEN).stdout
    assert out.startswith("200 ") and "traffic_per_device" in json.loads(out[4:])
    assert sh(*run, "/metrics", TOKEN).stdout.startswith("200 # HELP")


def test_every_record_says_which_attestation_admitted_it(world: World, gate: Gate) -> None:
    """Last in the module: stops the gateway cleanly and reads its records."""
    assert tcp(world, WECHAT_HARDCODED[1], 80, encode_packet(6, 1))
    assert gate.stop() == 0
    recs = [json.loads(x) for x in (gate.dir / "gate.jsonl").read_text().splitlines()]
    flows = [r for r in recs if r["path"] != "dns"]
    allowed = [r for r in flows if r["verdict"] == "allow" and r["group"] == "staff"]
    assert {r["admitted_by"] for r in allowed} == {"dns", "range"}  # CDN flows say dns
    assert any(r["admitted_by"] == "range" and r["server"] == WECHAT_HARDCODED[1] for r in allowed)
    assert all(r["admitted_by"] is None for r in flows if r["verdict"] == "block")
    dns = [r for r in recs if r["path"] == "dns" and r["name"] == "short.weixin.qq.com"]
    assert dns and all(r["admitted_by"] == "dns" for r in dns if r["group"] == "staff")
