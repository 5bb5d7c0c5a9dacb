"""Red team, lifecycle and identity: restarts that fail, tunnels across restarts,
devices known by MAC over IPv6, and `gate check` on the router itself. Each test runs
gateways of its own in the shared world (they need its gateway namespace alone)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from tests.gate.conftest import GateFactory, echo_ok
from tests.gate.netns import (
    GW_LAN6,
    GW_LAN_IP,
    HELPER,
    NEEDS_ROOT_NFT,
    VIDEO6,
    VIDEO_IP,
    WECHAT6,
    WECHAT_DNS_IP,
    World,
    mmtls_hello,
    read_line,
    sh,
    tls_client_hello,
)

pytestmark = NEEDS_ROOT_NFT

POLICY = """\
[gate]
lan = ["{lan}"]
upstreams = ["{upstream}"]
table = "{table}"
peek-timeout = 1.0
log = "{tmp}/gate-{table}.jsonl"

[apps.wechat]
operator-ranges = [{ranges}]

[groups.staff]
mode = "allow-only"
apps = ["wechat"]

[[devices]]
name = "phone"
SELECTOR
group = "staff"
"""
BY_SUBNETS = POLICY.replace(
    "SELECTOR",
    'subnet = "10.77.0.0/24"\ngroup = "staff"\n\n'
    '[[devices]]\nname = "phone6"\nsubnet = "fd77::/64"',
)


def mac_of(world: World, ns: str) -> str:
    links = json.loads(sh("ip", "-n", ns, "-j", "link", "show").stdout)
    return next(str(x["address"]) for x in links if x["ifname"].startswith("wxp"))


def test_a_restart_that_fails_keeps_the_crashed_runs_table(
    world: World, gate_factory: GateFactory
) -> None:
    first = gate_factory(BY_SUBNETS)
    first.proc.send_signal(signal.SIGKILL)  # a crash: the table stays
    first.proc.communicate(timeout=10)
    assert first.table_exists()
    # port 53 is taken when the gateway restarts
    holder = world.spawn(world.gw, [sys.executable, "-c",
        "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM);"
        "s.bind(('0.0.0.0', 53)); print('bound', flush=True); sys.stdin.read()"])  # fmt: skip
    assert read_line(holder, 10).strip() == "bound"
    second = gate_factory(BY_SUBNETS, expect_ready=False, table=first.table)
    _, err = second.proc.communicate(timeout=30)
    assert second.proc.returncode == 1 and "cannot bind UDP 0.0.0.0:53" in err
    assert "not touched" in err
    assert first.table_exists()  # the crashed run's table still closes the network
    get = b"GET / HTTP/1.1\r\nHost: video.example\r\n\r\n"
    assert "reply" not in world.probe("tcp", VIDEO_IP, port=80, send=get.hex(), timeout=1)
    holder.kill()
    holder.communicate(timeout=10)


def test_flows_admitted_by_an_earlier_run_do_not_survive_a_restart(
    world: World, gate_factory: GateFactory
) -> None:
    if shutil.which("conntrack") is None:
        pytest.skip("needs the conntrack tool (make sysdeps installs it)")
    first = gate_factory(BY_SUBNETS)
    assert world.probe("dns", GW_LAN_IP, name="long.weixin.qq.com")["addresses"]
    hello = mmtls_hello()
    argv = [sys.executable, HELPER, "probe", "tcp", "--host", WECHAT_DNS_IP, "--port", "8080",
            "--send", hello.hex(), "--hold", "--timeout", "3"]  # fmt: skip
    tunnel = world.spawn(world.phone, argv)
    first_reply = json.loads(read_line(tunnel, 10))
    assert bytes.fromhex(first_reply["first"]) == b"echo:" + hello  # a long-lived flow

    def marks() -> set[int]:
        ct = sh("ip", "netns", "exec", world.gw, "conntrack", "-L", "-p", "tcp",
                "--dst", WECHAT_DNS_IP, "--dport", "8080").stdout  # fmt: skip
        return {int(t[5:]) for t in ct.split() if t.startswith("mark=")}

    old = {m for m in marks() if m >> 16 == 0x5758}
    assert old  # the kernel cached the first run's verdict in the flow's mark
    first.proc.send_signal(signal.SIGKILL)
    first.proc.communicate(timeout=10)
    second = gate_factory(BY_SUBNETS, table=first.table)  # same table, new run
    assert not marks() & old  # flushed at start
    assert tunnel.stdin is not None
    tunnel.stdin.write("\n")
    tunnel.stdin.flush()
    last = json.loads(read_line(tunnel, 15))
    assert "reply" not in last, last  # the old flow is cut: it must ask again
    assert second.table_exists()


def test_a_device_known_by_mac_is_policed_over_ipv6_too(
    world: World, gate_factory: GateFactory
) -> None:
    policy = POLICY.replace("SELECTOR", f'mac = "{mac_of(world, world.phone)}"')
    gate_factory(policy)
    r = world.probe("dns", GW_LAN6, name="video.example", qtype="AAAA")
    assert r["rcode"] == "NXDOMAIN"  # the filter found its MAC in the IPv6 neighbours
    assert "reply" not in world.probe("tcp", VIDEO6, port=443,
                                      send=tls_client_hello("video.example").hex())  # fmt: skip
    hello = mmtls_hello()
    assert echo_ok(world.probe("tcp", WECHAT6, port=8080, send=hello.hex()), hello)
    # phone2 (no entry, no default group) is free, in both families
    assert echo_ok(world.probe("tcp", VIDEO6, ns=world.phone2, port=5201, send="00"), b"\x00")


def test_check_warns_when_a_group_covers_one_family_and_the_lan_carries_both(
    world: World, tmp_path: os.PathLike[str]
) -> None:
    from pathlib import Path

    policy = POLICY.replace("SELECTOR", 'subnet = "10.77.0.0/24"').format(
        lan=world.lan_if, upstream="198.18.1.53", table="wxcheck", tmp=tmp_path, ranges=""
    )
    cfg = Path(tmp_path) / "v4only.toml"
    cfg.write_text(policy)
    run = ["ip", "netns", "exec", world.gw, sys.executable, "-m", "wxnet", "gate", "check"]
    out = subprocess.run([*run, str(cfg)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "warning: line 15: group staff selects devices by IPv4 only" in out.stderr
    assert "IPv6 (" in out.stderr and "fd77::1/64" in out.stderr
    cfg.write_text(policy.replace("[gate]\n", "[gate]\nstrict = true\n"))
    out = subprocess.run([*run, str(cfg)], capture_output=True, text=True, check=False)
    assert out.returncode == 2 and "group staff selects devices by IPv4 only" in out.stderr


def test_long_inspected_flows_are_recorded_while_open_and_at_a_clean_stop(
    world: World, gate_factory: GateFactory
) -> None:
    from tests.gate.netns import WECHAT_HARDCODED

    gate = gate_factory(BY_SUBNETS.replace("[gate]\n", "[gate]\nrecord-every = 1\n"), verbose=True)
    hello = mmtls_hello()  # port 80 to a built-in address: spliced by the inspector
    argv = [sys.executable, HELPER, "probe", "tcp", "--host", WECHAT_HARDCODED[0],
            "--port", "80", "--send", hello.hex(), "--hold", "--timeout", "3"]  # fmt: skip
    flow = world.spawn(world.phone, argv)
    assert bytes.fromhex(json.loads(read_line(flow, 10))["first"]) == b"echo:" + hello

    def next_record() -> dict[str, object]:
        while True:  # every read is bounded; the gate logs each record as it is made
            line = read_line(gate.proc, 10, stderr=True)
            assert line, "gate exited"
            if " flow " in line and f'"server": "{WECHAT_HARDCODED[0]}"' in line:
                rec: dict[str, object] = json.loads(line.split(" flow ", 1)[1])
                return rec

    ongoing = next_record()
    assert ongoing["ongoing"] is True and ongoing["admitted_by"] == "range"
    assert ongoing["bytes_up"] == len(hello) and ongoing["bytes_down"] == len(hello) + 5
    gate.proc.send_signal(signal.SIGTERM)
    last = next_record()
    while last["ongoing"]:  # another tick may come first
        last = next_record()
    assert last["bytes_up"] == 0 and last["bytes_down"] == 0  # counted in the first record
    assert gate.proc.wait(timeout=15) == 0
    flow.kill()
    flow.communicate(timeout=10)
