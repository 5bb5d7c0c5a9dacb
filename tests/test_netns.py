"""wxnet.netns, the one namespace helper: a two-namespace world carries traffic, a failed
step names its command, and teardown leaves no namespace behind (twice is fine)."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys

import pytest

from wxnet.netns import Netns, NetnsError, new_suffix

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None,
        reason="needs root and ip (CI is root: make sysdeps installs iproute2)",
    ),
]


ECHO = """import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.91.0.2", 9))
print("ready", flush=True)
data, peer = s.recvfrom(100)
s.sendto(data, peer)
"""
ASK = """import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
s.sendto(b"hello", ("10.91.0.2", 9))
print(s.recv(100).decode())
"""


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def test_a_world_carries_traffic_and_leaves_nothing_behind() -> None:
    sfx = new_suffix()
    a, b = f"wxta-{sfx}", f"wxtb-{sfx}"
    with Netns() as net:
        net.add(a, b)
        net.veth(a, f"wxta{sfx}", b, f"wxtb{sfx}")
        net.addr(a, f"wxta{sfx}", "10.91.0.1/24", "fd91::1/64")
        net.addr(b, f"wxtb{sfx}", "10.91.0.2/24", "fd91::2/64")
        net.up(a, f"wxta{sfx}")
        net.up(b, f"wxtb{sfx}")
        net.neigh(a, f"wxta{sfx}", "10.91.0.2", net.mac(b, f"wxtb{sfx}"))
        assert {a, b} <= namespaces()
        echo = subprocess.Popen(
            Netns.exec_argv(b, [sys.executable, "-c", ECHO]), stdout=subprocess.PIPE, text=True
        )
        try:
            assert echo.stdout is not None
            ready, _, _ = select.select([echo.stdout], [], [], 20)
            assert ready and echo.stdout.readline().strip() == "ready"
            out = net.run(a, [sys.executable, "-c", ASK], timeout=20)
            assert out.stdout.strip() == "hello"
        finally:
            echo.kill()
            echo.communicate(timeout=10)
        with pytest.raises(NetnsError, match="route add"):
            net.route(a, "default", "10.99.0.1")  # not on any link of a
    assert not {a, b} & namespaces()
    net.close()  # a second close is harmless


def test_a_failed_step_raises_the_callers_error_and_cleans_up() -> None:
    class Mine(Exception):
        pass

    sfx = new_suffix()
    net = Netns(error=Mine)
    try:
        net.add(f"wxtc-{sfx}")
        with pytest.raises(Mine, match="netns add"):
            net.add(f"wxtc-{sfx}")  # exists already
    finally:
        net.close()
    assert f"wxtc-{sfx}" not in namespaces()
