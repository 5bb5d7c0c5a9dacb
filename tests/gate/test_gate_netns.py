"""The gateway end to end: real namespaces, veth pairs, nftables, DNS and TCP.

phone (10.77.0.2) -- lan -- gateway (runs `wxnet gate run`) -- wan -- internet
(DNS 198.18.1.53, a lying "foreign" DNS 198.18.4.53, WeChat at 198.18.2.x, a video
site at 198.18.3.10; every port echoes).
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.gate.conftest import Gate, GateFactory, echo_ok
from tests.gate.netns import (
    CHECK_IP,
    FOREIGN_DNS,
    GW_LAN6,
    GW_LAN_IP,
    NEEDS_ROOT_NFT,
    PHONE_IP,
    SERVER_BUILTIN,
    SERVER_IP,
    SERVER_NGD,
    UPSTREAM_DNS,
    VIDEO6,
    VIDEO_IP,
    WECHAT6,
    WECHAT6_DNS,
    WECHAT_DNS_IP,
    WECHAT_HARDCODED,
    World,
    mmtls_hello,
    read_line,
    sh,
    tls_client_hello,
)
from wxnet.gate.dnsworker import MAX_DEATHS
from wxnet.proto.framing import encode_packet

pytestmark = NEEDS_ROOT_NFT


ALLOW_ONLY = """\
[gate]
lan = ["{lan}"]
upstreams = ["{upstream}"]
table = "{table}"
spoof = "strict"
peek-timeout = 1.0
log = "{tmp}/gate.jsonl"
db = "{tmp}/gate.sqlite"
http = "127.0.0.1:0"

[apps.wechat]
operator-ranges = [{ranges}]

[groups.staff]
mode = "allow-only"
apps = ["wechat"]

[[devices]]
name = "phone"
subnet = "10.77.0.0/24"
group = "staff"

[[devices]]
name = "phone6"
subnet = "fd77::/64"
group = "staff"
"""

BLOCK = ALLOW_ONLY.replace('mode = "allow-only"', 'mode = "block"')


def test_allow_only_passes_wechat_and_nothing_else(world: World, gate_factory: GateFactory) -> None:
    gate = gate_factory(ALLOW_ONLY)
    # DNS: WeChat names resolve (through the gateway), others get NXDOMAIN.
    r = world.probe("dns", GW_LAN_IP, name="sgshort.wechat.com")
    assert r == {"rcode": "NOERROR", "addresses": [WECHAT_DNS_IP]}
    assert gate.set_has("d_staff_wechat_4", WECHAT_DNS_IP)  # in the set before the answer
    assert world.probe("dns", GW_LAN_IP, name="video.example")["rcode"] == "NXDOMAIN"
    assert world.probe("dns", GW_LAN_IP, name="video.example", tcp=True)["rcode"] == "NXDOMAIN"
    r = world.probe("dns", GW_LAN_IP, name="short.weixin.qq.com", tcp=True)  # TCP, forwarded
    assert r == {"rcode": "NOERROR", "addresses": [WECHAT_DNS_IP]}
    # Today's client: POST /mmtls/ on 80 to the resolved address (through the inspector,
    # which reads newgetdns answers on port 80) and the long link on 8080 (kernel).
    post = b"POST /mmtls/0a1b2c3d HTTP/1.1\r\nHost: sgshort.wechat.com\r\n\r\n" + mmtls_hello()
    assert echo_ok(world.probe("tcp", WECHAT_DNS_IP, port=80, send=post.hex()), post)
    hello = mmtls_hello()
    assert echo_ok(world.probe("tcp", WECHAT_DNS_IP, port=8080, send=hello.hex()), hello)
    # ... its verdict is cached in the conntrack mark ("WX" in the high 16 bits).
    if shutil.which("conntrack"):
        ct = sh("ip", "netns", "exec", world.gw, "conntrack", "-L", "-p", "tcp",
                "--dst", WECHAT_DNS_IP, "--dport", "8080").stdout  # fmt: skip
        marks = {int(m) >> 16 for m in re.findall(r"mark=(\d+)", ct)}
        assert marks == {0x5758}, ct
    # Built-in addresses inside the declared operator ranges: MMTLS and the 2014 head.
    assert echo_ok(world.probe("tcp", WECHAT_HARDCODED[0], port=8080, send=hello.hex()), hello)
    noop = encode_packet(6, 1)
    assert echo_ok(world.probe("tcp", WECHAT_HARDCODED[1], port=8080, send=noop.hex()), noop)
    # Video site over HTTP and TLS: reset.
    get = b"GET /watch HTTP/1.1\r\nHost: video.example\r\n\r\n"
    assert "reply" not in world.probe("tcp", VIDEO_IP, port=80, send=get.hex())
    hello_video = tls_client_hello("video.example")
    assert "reply" not in world.probe("tcp", VIDEO_IP, port=443, send=hello_video.hex())
    # Spoofed Host and SNI to a non-WeChat address: reset in strict mode.
    spoof = b"POST /mmtls/00 HTTP/1.1\r\nHost: short.weixin.qq.com\r\n\r\n"
    assert "reply" not in world.probe("tcp", VIDEO_IP, port=80, send=spoof.hex())
    spoof_tls = tls_client_hello("res.wx.qq.com")
    assert "reply" not in world.probe("tcp", VIDEO_IP, port=443, send=spoof_tls.hex())
    # Ports outside the app's: closed even to a WeChat address.
    assert "reply" not in world.probe("tcp", WECHAT_DNS_IP, port=5201, send="00", timeout=1)
    # Foreign DNS is answered by the gateway's filter, never reaches the liar.
    before = [e for e in world.internet_events() if e.get("server") == FOREIGN_DNS]
    assert world.probe("dns", FOREIGN_DNS, name="video.example")["rcode"] == "NXDOMAIN"
    r = world.probe("dns", FOREIGN_DNS, name="short.weixin.qq.com")
    assert r["addresses"] == [WECHAT_DNS_IP]  # the real answer, not the liar's
    after = [e for e in world.internet_events() if e.get("server") == FOREIGN_DNS]
    assert after == before
    # QUIC (UDP 443) and DNS-over-TLS: unreachable, even to WeChat's address.
    assert "error" in world.probe("udp", WECHAT_DNS_IP, port=443, send="c0ffee", timeout=1)
    assert "reply" not in world.probe("tcp", UPSTREAM_DNS, port=853, send="00", timeout=1)
    # Records: the blocked and allowed flows are in the JSON log and the SQLite store.
    gate.stop()
    lines = (gate.dir / "gate.jsonl").read_text().splitlines()
    assert any('"verdict": "block"' in x and "video.example" in x for x in lines)
    db = sqlite3.connect(gate.dir / "gate.sqlite")
    rows = db.execute("SELECT app, verdict, path FROM flows WHERE path = 'inspector'").fetchall()
    db.close()
    assert ("wechat", "allow", "inspector") in rows
    assert (None, "block", "inspector") in rows
    assert not gate.table_exists()  # clean stop removed the table


def test_kernel_path_flows_are_recorded_from_conntrack(
    world: World, gate_factory: GateFactory
) -> None:
    if shutil.which("conntrack") is None:
        pytest.skip("needs the conntrack tool (make sysdeps installs it)")
    gate = gate_factory(ALLOW_ONLY, verbose=True)
    assert world.probe("dns", GW_LAN_IP, name="sgshort.wechat.com")["addresses"]
    post = mmtls_hello()
    assert echo_ok(world.probe("tcp", WECHAT_DNS_IP, port=8080, send=post.hex()), post)
    # Ending the conntrack entry (as its timeout would) makes the kernel report it.
    sh("ip", "netns", "exec", world.gw, "conntrack", "-D", "-p", "tcp", "-d", WECHAT_DNS_IP)
    while True:  # every read is bounded; the gate logs each record as it is made
        line = read_line(gate.proc, 10, stderr=True)
        assert line, "gate exited"
        if '"path": "kernel"' in line:
            rec = json.loads(line.split(" flow ", 1)[1])
            break
    assert (rec["app"], rec["device"], rec["transport"], rec["server"], rec["server_port"]) == (
        "wechat", "phone", "tcp", WECHAT_DNS_IP, 8080,
    )  # fmt: skip
    assert rec["admitted_by"] == "dns"
    assert rec["bytes_up"] > len(post) and rec["bytes_down"] > len(post)  # headers counted


def test_ipv6_inspector_and_sets(world: World, gate_factory: GateFactory) -> None:
    gate = gate_factory(ALLOW_ONLY)
    hello = mmtls_hello()
    assert echo_ok(world.probe("tcp", WECHAT6, port=8080, send=hello.hex()), hello)  # range
    # port 80 to an admitted address goes through the inspector (IP6T_SO_ORIGINAL_DST)
    assert echo_ok(world.probe("tcp", WECHAT6, port=80, send=hello.hex()), hello)
    r = world.probe("dns", GW_LAN6, name="short.weixin.qq.com", qtype="AAAA")
    assert r == {"rcode": "NOERROR", "addresses": [WECHAT6_DNS]}
    assert gate.set_has("d_staff_wechat_6", WECHAT6_DNS)
    assert echo_ok(world.probe("tcp", WECHAT6_DNS, port=443, send=hello.hex()), hello)
    get = b"GET / HTTP/1.1\r\nHost: video.example\r\n\r\n"
    assert "reply" not in world.probe("tcp", VIDEO6, port=80, send=get.hex())
    assert "reply" not in world.probe("tcp", VIDEO6, port=5201, send="00", timeout=1)
    assert "error" in world.probe("udp", WECHAT6, port=443, send="c0ffee", timeout=1)


def test_lenient_spoofing_and_silent_or_garbage_clients(
    world: World, gate_factory: GateFactory
) -> None:
    policy = ALLOW_ONLY.replace('spoof = "strict"', 'spoof = "lenient"\nforeign-dns = "drop"')
    gate = gate_factory(policy)
    # foreign-dns = "drop": DNS to another server is rejected, the gateway still answers.
    assert "error" in world.probe("dns", FOREIGN_DNS, name="video.example", timeout=1)
    assert world.probe("dns", GW_LAN_IP, name="video.example")["rcode"] == "NXDOMAIN"
    # Lenient or not, a WeChat Host to an unattested address never passes: payload
    # evidence does not admit.
    spoof = b"POST /mmtls/00 HTTP/1.1\r\nHost: short.weixin.qq.com\r\n\r\n"
    assert "reply" not in world.probe("tcp", CHECK_IP, port=80, send=spoof.hex())
    # A client that sends nothing is reset when the peek time (1 s here) runs out; one
    # that sends bytes no signature knows is reset at once.
    assert "reply" not in world.probe("tcp", CHECK_IP, port=8080, send="", timeout=5)
    junk = bytes(range(256)) * 20
    assert "reply" not in world.probe("tcp", CHECK_IP, port=443, send=junk.hex())
    assert gate.proc.poll() is None  # still serving
    hello = mmtls_hello()
    assert echo_ok(world.probe("tcp", WECHAT_HARDCODED[2], port=8080, send=hello.hex()), hello)


def test_killed_gate_leaves_allow_only_closed(world: World, gate_factory: GateFactory) -> None:
    gate = gate_factory(ALLOW_ONLY)
    assert world.probe("dns", GW_LAN_IP, name="long.weixin.qq.com")["addresses"] == [WECHAT_DNS_IP]
    gate.proc.send_signal(signal.SIGKILL)
    gate.proc.communicate(timeout=10)
    assert gate.table_exists()
    get = b"GET / HTTP/1.1\r\nHost: video.example\r\n\r\n"
    assert "reply" not in world.probe("tcp", VIDEO_IP, port=80, send=get.hex(), timeout=1)
    assert "error" in world.probe("dns", GW_LAN_IP, name="video.example", timeout=1)
    assert "error" in world.probe("dns", FOREIGN_DNS, name="video.example", timeout=1)
    # Addresses already allowed keep working on the kernel path while their timeout runs
    # (port 80 needs the inspector, which is gone).
    post = mmtls_hello()
    assert echo_ok(world.probe("tcp", WECHAT_DNS_IP, port=8080, send=post.hex()), post)
    # `wxnet gate stop` opens the network again.
    out = sh(
        "ip", "netns", "exec", world.gw, sys.executable, "-m", "wxnet", "gate", "stop",
        "--table", gate.table,
    )  # fmt: skip
    assert "removed" in out.stdout
    assert echo_ok(world.probe("tcp", VIDEO_IP, port=80, send=get.hex()), get)


def test_block_mode_is_the_inverse(world: World, gate_factory: GateFactory) -> None:
    gate = gate_factory(BLOCK, short=True)
    assert world.probe("dns", GW_LAN_IP, name="sgshort.wechat.com")["rcode"] == "NXDOMAIN"
    assert world.probe("dns", GW_LAN_IP, name="video.example")["addresses"] == [VIDEO_IP]
    get = b"GET /watch HTTP/1.1\r\nHost: video.example\r\n\r\n"
    assert echo_ok(world.probe("tcp", VIDEO_IP, port=80, send=get.hex()), get)
    hello_video = tls_client_hello("video.example")
    assert echo_ok(world.probe("tcp", VIDEO_IP, port=443, send=hello_video.hex()), hello_video)
    hello = mmtls_hello()
    # WeChat's operator ranges are closed on every port, in the kernel
    assert "reply" not in world.probe("tcp", WECHAT_HARDCODED[2], port=8080, send=hello.hex())
    assert "reply" not in world.probe("tcp", WECHAT_HARDCODED[2], port=5201, send="00", timeout=1)
    # Payload: reset, and this device (only) is denied that destination on every port.
    noop = encode_packet(6, 1)
    assert "reply" not in world.probe("tcp", CHECK_IP, port=80, send=noop.hex())
    assert gate.set_has("x_staff_4", f"{PHONE_IP} . {CHECK_IP}")
    assert "reply" not in world.probe("tcp", CHECK_IP, port=5201, send="00", timeout=1)
    assert gate.set_has("c_staff_4", f"{PHONE_IP} . {VIDEO_IP} . 80")  # clean, cached
    assert gate.stop() == 0
    assert not gate.table_exists()


def test_report_and_dashboard_from_a_run(world: World, gate_factory: GateFactory) -> None:
    gate = gate_factory(ALLOW_ONLY.replace('http = "127.0.0.1:0"', 'http = "127.0.0.1:18099"'))
    world.probe("dns", GW_LAN_IP, name="video.example")
    hello = mmtls_hello()  # port 80 to a built-in address: through the inspector
    assert echo_ok(world.probe("tcp", WECHAT_HARDCODED[0], port=80, send=hello.hex()), hello)
    fetch = (
        "import sys, urllib.request as u;"
        "print(u.urlopen('http://127.0.0.1:18099' + sys.argv[1], timeout=5).read().decode())"
    )
    page = sh("ip", "netns", "exec", world.gw, sys.executable, "-c", fetch, "/").stdout
    assert '<svg class="chart" id="chart-apps"' in page
    assert 'data-label="WeChat"' in page and "video.example" in page
    metrics = sh("ip", "netns", "exec", world.gw, sys.executable, "-c", fetch, "/metrics").stdout
    assert 'wxnet_gate_dns_queries_total{verdict="block"} 1' in metrics
    assert 'app="wechat"' in metrics
    gate.stop()
    out = subprocess.run(
        [sys.executable, "-m", "wxnet", "gate", "report", "--db", str(gate.dir / "gate.sqlite")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split() for line in out.splitlines()]
    assert ["phone", "WeChat", "1", "103"] in rows  # 49 bytes up, 54 echoed back
    assert any(r[:2] == ["phone", "unknown"] and "video.example" in r for r in rows)


def test_real_wxnet_server_plays_wechat_through_the_gateway(
    world: World, gate_factory: GateFactory, tmp_path: Path
) -> None:
    """The real client keeps working in allow-only by each attestation: built-in
    addresses in the operator ranges, newgetdns from there, and DNS."""
    data = tmp_path / "server-data"
    sh(sys.executable, "-m", "wxnet", "store", "init", "--data", str(data))
    for user in ("alice", "bob", "carol"):
        sh(sys.executable, "-m", "wxnet", "user", "add", user, "--password", "secret1",
           "--data", str(data))  # fmt: skip
    conf = tmp_path / "server.toml"
    conf.write_text(
        "[dns]\n"
        'long_name = "szlong.weixin.qq.com"\n'
        'short_name = "szshort.weixin.qq.com"\n'
        f'long_addresses = ["{SERVER_NGD}"]\n'
        f'short_addresses = ["{SERVER_NGD}"]\n'
        "long_ports = [8080]\n"
        "short_ports = [80]\n"
    )
    server = world.spawn(
        world.inet,
        [sys.executable, "-m", "wxnet", "serve", "--config", str(conf), "--data", str(data),
         "--host", SERVER_IP, "--long-port", "8080", "--http-port", "80", "--contacts", "open"],
    )  # fmt: skip
    line = read_line(server, 30)
    assert line.startswith("wxnet serving"), line
    gate = gate_factory(ALLOW_ONLY)
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        ["ip", "netns", "exec", world.phone, sys.executable, "-m", "tests.gate.wxphone",
         GW_LAN_IP, SERVER_BUILTIN],
        capture_output=True, text=True, timeout=60, cwd=root, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["resolved"] == SERVER_IP and result["newgetdns"] == SERVER_NGD
    assert result["received"] == [["alice", "hello through the gate"]]
    assert result["notify"] & 0x2 and result["short_ret"] == 0
    assert gate.set_has("n_staff_wechat_4", SERVER_NGD)  # learned from the newgetdns answer
    server.send_signal(signal.SIGTERM)
    server.communicate(timeout=15)
    gate.stop()
    recs = [json.loads(x) for x in (gate.dir / "gate.jsonl").read_text().splitlines()]
    how = {
        (r["server"], r["server_port"], r["admitted_by"]) for r in recs if r["verdict"] == "allow"
    }
    assert (SERVER_BUILTIN, 80, "range") in how  # the newgetdns GET, read by the inspector
    assert (SERVER_IP, 80, "dns") in how  # the short link
    assert ("gateway", 53, "dns") in how


WORKERS = ALLOW_ONLY.replace('http = "127.0.0.1:0"', 'http = "127.0.0.1:18098"\ndns-workers = 3')


def dns_workers(gate: Gate) -> list[int]:
    """Pids of the gateway's DNS worker processes (its children running the worker)."""
    pid = gate.proc.pid
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    out = []
    for kid in kids:
        try:
            cmdline = Path(f"/proc/{kid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"wxnet.gate.dnsworker" in cmdline:
            out.append(int(kid))
    return sorted(out)


def process_answers(world: World, want: int) -> dict[str, int]:
    """``wxnet_gate_dns_process_answers_total`` per process, once they add up to ``want``
    (a worker's record reaches the gateway before its answer leaves, but the gateway
    may read it just after /metrics is asked: ask again, a bounded number of times)."""
    fetch = (
        "import urllib.request as u;"
        "print(u.urlopen('http://127.0.0.1:18098/metrics', timeout=5).read().decode())"
    )
    counts: dict[str, int] = {}
    for _ in range(20):
        text = sh("ip", "netns", "exec", world.gw, sys.executable, "-c", fetch).stdout
        counts = {
            m.group(1): int(m.group(2))
            for m in re.finditer(
                # the library writes counts as floats ("3.0")
                r'^wxnet_gate_dns_process_answers_total\{process="(\d+)"\} (\d+)(?:\.0)?$',
                text,
                re.M,
            )
        }
        if sum(counts.values()) >= want:
            break
    return counts


def test_dns_workers_share_the_port_and_a_killed_one_is_replaced(
    world: World, gate_factory: GateFactory
) -> None:
    gate = gate_factory(WORKERS)
    first = dns_workers(gate)
    assert len(first) == 2  # plus the gateway process itself: 3 answer DNS
    ok = world.probe("dns", GW_LAN_IP, name="long.weixin.qq.com", count=64)
    assert len(ok["ports"]) == 64 and ok["rcodes"] == ["NOERROR"]
    assert gate.set_has("d_staff_wechat_4", WECHAT_DNS_IP)
    blocked = world.probe("dns", GW_LAN_IP, name="video.example", count=64)
    assert len(blocked["ports"]) == 64 and blocked["rcodes"] == ["NXDOMAIN"]
    counts = process_answers(world, 128)
    assert sum(counts.values()) == 128
    # 128 source ports over 3 sockets: every process gets some (else P < 1e-20).
    assert sorted(counts) == ["0", "1", "2"] and min(counts.values()) > 0
    assert world.probe("dns", GW_LAN_IP, name="sgshort.wechat.com", tcp=True)["addresses"]

    os.kill(first[0], signal.SIGKILL)
    seen: list[str] = []
    while not any("restarted" in line for line in seen):
        line = read_line(gate.proc, 30, stderr=True)
        assert line, f"no restart logged: {seen}"
        seen.append(line)
    now = dns_workers(gate)
    assert len(now) == 2 and first[0] not in now and first[1] in now
    again = world.probe("dns", GW_LAN_IP, name="long.weixin.qq.com", count=64)
    assert len(again["ports"]) == 64
    assert gate.stop() == 0
    assert all(not Path(f"/proc/{pid}").exists() for pid in now)  # stopped with the gateway
    assert not gate.table_exists()

    # Every answered query has exactly one record: none lost, none twice. The record
    # holds the source port the gateway saw; conntrack may rewrite a phone's port when
    # the redirected 5-tuple clashes with an older entry, so the records are checked by
    # count per name and for duplicates, and most ports still match the phone's. The two
    # long.weixin.qq.com probes run one after the other, so the kernel may give the
    # second a port the first had closed (about one run in seven): such a (name, port)
    # was sent twice and has two records.
    recs = [json.loads(x) for x in (gate.dir / "gate.jsonl").read_text().splitlines()]
    got = Counter((r["name"], r["client_port"]) for r in recs if r["transport"] == "udp")
    want = Counter(("long.weixin.qq.com", p) for p in ok["ports"] + again["ports"])
    want.update(("video.example", p) for p in blocked["ports"])
    assert all(n <= max(1, want[k]) for k, n in got.items()), got - want
    assert Counter(n for n, _ in got.elements()) == Counter(n for n, _ in want.elements())
    assert sum((got & want).values()) >= sum(want.values()) - 4


def test_killed_gateway_takes_its_dns_workers_along(
    world: World, gate_factory: GateFactory
) -> None:
    gate = gate_factory(WORKERS)
    workers = dns_workers(gate)
    assert len(workers) == 2
    gate.proc.send_signal(signal.SIGKILL)
    gate.proc.communicate(timeout=10)
    assert gate.table_exists()  # fail closed, as without workers
    for pid in workers:  # they see the gateway's end of their socket close, and exit
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue  # gone already
        try:
            assert select.select([fd], [], [], 10)[0], f"DNS worker {pid} outlived the gateway"
        finally:
            os.close(fd)
    assert "error" in world.probe("dns", GW_LAN_IP, name="long.weixin.qq.com", timeout=2)


def test_dns_workers_dying_again_and_again_make_the_gate_fail_closed(
    world: World, gate_factory: GateFactory
) -> None:
    gate = gate_factory(WORKERS)
    for _ in range(MAX_DEATHS):  # each death is logged and the worker replaced
        os.kill(dns_workers(gate)[0], signal.SIGKILL)
        lines: list[str] = []
        while not lines or "restarted" not in lines[-1]:
            lines.append(read_line(gate.proc, 30, stderr=True))
            assert lines[-1], f"no restart logged: {lines}"
    os.kill(dns_workers(gate)[0], signal.SIGKILL)  # one death too many
    _, err = gate.proc.communicate(timeout=30)
    assert gate.proc.returncode == 1
    assert f"DNS workers died {MAX_DEATHS + 1} times" in err and "left in place" in err
    assert gate.table_exists()  # allow-only stays closed
    get = b"GET / HTTP/1.1\r\nHost: video.example\r\n\r\n"
    assert "reply" not in world.probe("tcp", VIDEO_IP, port=80, send=get.hex(), timeout=1)
